"""trajectories stage: latent scaling, cached forward-SDE draws with their targets, determinism."""

from __future__ import annotations

import json
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sgilo.io import load_safetensors
from sgilo.latents import LatentScaler, pooled_std, split_held_out
from sgilo.sde import VPSDE

from conftest import TINY, latents_argv, run_stage, shard_path, tiny_workspace, trajectories_all, write_params


@pytest.fixture(scope="module")
def inverted(tmp_path_factory) -> Path:
    """Download + a random tiny generator + invert, once for the module."""
    return tiny_workspace(tmp_path_factory.mktemp("trajectories"), upto="invert")


def _trajectories(root: Path, params: Path, out: Path) -> None:
    """The scaling and every shard of the invert shards under `root`/invert, laid out under `out` as the rules do."""
    trajectories_all(root, params, root / "invert", out)


def _shard(root: Path, params: Path, stats: Path, out: Path, *which: str, check: bool = True):
    """One trajectories shard job: `which` names its latents file and index, e.g. --latents FILE --shard-index 1."""
    return run_stage(
        "trajectories", "--params", str(params), *which, "--stats", str(stats), "--out", str(out), cwd=root, check=check
    )


def _invert_latents(root: Path) -> dict[str, torch.Tensor]:
    shards = [load_safetensors(shard_path(root / "invert", i))[0] for i in range(2)]
    return {key: torch.cat([s[key] for s in shards]) for key in ("ids", "latents")}


def test_vp_draws_carry_exact_denoising_targets(inverted):
    out = inverted / "vp"
    _trajectories(inverted, inverted / "params.yaml", out)
    scaler = LatentScaler.from_state_dict(load_safetensors(out / "stats.safetensors")[0])
    source = _invert_latents(inverted)
    held = split_held_out(source["ids"], TINY["trajectories"]["held_out"], TINY["seed"])
    train = scaler.normalize(source["latents"][~held])
    assert train.min() >= -1 - 1e-5 and train.max() <= 1 + 1e-5  # fitted on the training latents only
    draws = TINY["trajectories"]["draws"]
    shard, meta = load_safetensors(shard_path(out, 0))
    assert json.loads(meta["trajectories"])["sde"] == "vp"
    assert shard["ids"].tolist() == [i for i in range(8) for _ in range(draws)]
    assert ((shard["t"] >= 1e-3) & (shard["t"] <= 1)).all()
    torch.testing.assert_close(shard["tau"], (shard["t"] / 2).clamp_min(1e-3))
    x0 = scaler.normalize(source["latents"][:8]).repeat_interleave(draws, 0)
    sde = VPSDE()
    for t, x_t, eps, std, key in [
        (shard["t"], shard["x_t"], shard["eps"], shard["std"], "t"),
        (shard["tau"], shard["x_tau"], shard["eps_tau"], shard["std_tau"], "tau"),
    ]:
        mean, expected_std = sde.marginal(x0, t)
        torch.testing.assert_close(std, expected_std.reshape(-1), msg=key)
        torch.testing.assert_close(x_t, mean + std.reshape(-1, 1, 1, 1) * eps, atol=1e-5, rtol=1e-5, msg=key)
    assert abs(float(shard["eps"].std()) - 1) < 0.05  # x_t's target is a standard normal draw
    assert shard["held_out"].tolist() == held[:8].repeat_interleave(draws).tolist()


def test_rerun_gives_identical_shards_and_one_shard_alone(inverted):
    first, second = inverted / "first", inverted / "second"
    params = inverted / "params.yaml"
    _trajectories(inverted, params, first)
    stats = second / "scaling.safetensors"
    run_stage(
        "trajectories",
        "--params",
        str(params),
        *latents_argv(params, inverted / "invert"),
        "--out",
        str(stats),
        cwd=inverted,
    )
    _shard(
        inverted,
        params,
        stats,
        second / "one.safetensors",
        "--latents",
        str(shard_path(inverted / "invert", 1)),
        "--shard-index",
        "1",
    )
    assert (first / "stats.safetensors").read_bytes() == stats.read_bytes()
    a, _ = load_safetensors(shard_path(first, 1))
    b, _ = load_safetensors(second / "one.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert sorted(p.name for p in second.iterdir()) == ["one.safetensors", "scaling.safetensors"]


@pytest.mark.parametrize("sde", ["catmap", "lotka_volterra"])
def test_simulated_sdes_keep_the_intermediate_iterate(inverted, sde):
    # SGILO and GNC need a closed-form marginal, so a profile with a simulated drift evaluates other methods only.
    params = write_params(
        inverted / f"{sde}.yaml", {"trajectories": {"sde": sde, "dt": 0.05}, "evaluate": {"methods": ["csgm", "ilo"]}}
    )
    out = inverted / sde
    _trajectories(inverted, params, out)
    shard, _ = load_safetensors(shard_path(out, 1))
    torch.testing.assert_close(shard["tau"], shard["t"] / 2)
    for key in ("x_t", "eps", "x_tau", "eps_tau"):
        assert torch.isfinite(shard[key]).all(), key
    assert (shard["std"] > 0).all() and (shard["std_tau"] > 0).all()
    assert not torch.allclose(shard["x_t"], shard["x_tau"])


def test_missing_invert_shard_is_a_clear_error(inverted, tmp_path):
    result = run_stage(
        "trajectories",
        "--params",
        str(inverted / "params.yaml"),
        "--latents",
        str(tmp_path / "nothing" / "shard-00000.safetensors"),
        "--out",
        str(tmp_path / "out"),
        cwd=inverted,
        check=False,
    )
    assert result.returncode == 2
    assert "shard-00000.safetensors" in result.stderr and "Traceback" not in result.stderr


def test_a_truncated_invert_shard_is_named_and_nothing_is_written(inverted, tmp_path):
    invert = tmp_path / "invert"
    shutil.copytree(inverted / "invert", invert)
    shard = shard_path(invert, 1)
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])  # a copy cut short
    result = run_stage(
        "trajectories",
        "--params",
        str(inverted / "params.yaml"),
        *latents_argv(inverted / "params.yaml", invert),
        "--out",
        str(tmp_path / "out"),
        cwd=inverted,
        check=False,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert (
        f"{shard}: not a readable safetensors file" in result.stderr
        and "rerun the stage that writes it" in result.stderr
    )
    assert not (tmp_path / "out").exists()


def test_a_full_disk_during_a_shard_write_keeps_the_previous_shard_and_says_so(inverted):
    out = inverted / "full"
    params = inverted / "params.yaml"
    _trajectories(inverted, params, out)
    shard = shard_path(out, 0)
    before = shard.read_bytes()

    def little_space() -> None:  # files may not grow past 4 kB: the write fails (EFBIG) as on a full disk (ENOSPC)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))

    command = [
        sys.executable,
        "-m",
        "sgilo.stages.trajectories",
        "--params",
        str(params),
        "--latents",
        str(shard_path(inverted / "invert", 0)),
        "--stats",
        str(out / "stats.safetensors"),
        "--shard-index",
        "0",
        "--out",
        str(shard),
    ]
    failed = subprocess.run(
        command, cwd=inverted, capture_output=True, text=True, preexec_fn=little_space, timeout=300, check=False
    )
    assert failed.returncode == 2 and "Traceback" not in failed.stderr
    assert f"error: {shard}: out of disk space while writing it" in failed.stderr
    assert "the previous version is intact" in failed.stderr
    assert shard.read_bytes() == before and [p.name for p in shard.parent.iterdir()] == [
        "shard-00000.safetensors",
        "shard-00001.safetensors",
    ]


def test_generated_latents_are_training_data_never_held_out(inverted):
    out = inverted / "with-generated"
    _trajectories(inverted, inverted / "params.yaml", out)
    generated, _ = load_safetensors(shard_path(inverted / "invert", 0, "generated"))
    shard, _ = load_safetensors(shard_path(out, 0, "generated"))
    draws, count = TINY["trajectories"]["draws"], TINY["invert"]["generated"]
    assert shard["ids"].tolist() == [i for i in range(count) for _ in range(draws)]
    assert not shard["held_out"].any()
    # The scaling is fitted on every training latent, the generated ones included.
    source = _invert_latents(inverted)
    held = split_held_out(source["ids"], TINY["trajectories"]["held_out"], TINY["seed"])
    scaler = LatentScaler.from_state_dict(load_safetensors(out / "stats.safetensors")[0])
    training = scaler.normalize(torch.cat([source["latents"][~held], generated["latents"]]))
    torch.testing.assert_close(training.amin((0, 2, 3)), torch.full((training.shape[1],), -1.0), atol=1e-5, rtol=0)
    torch.testing.assert_close(training.amax((0, 2, 3)), torch.full((training.shape[1],), 1.0), atol=1e-5, rtol=0)
    # ... and so is the spread the score model's skip connection uses, accumulated a shard at a time.
    stats, _ = load_safetensors(out / "stats.safetensors")
    torch.testing.assert_close(stats["data_std"], training.double().std().float().reshape(1), rtol=1e-6, atol=0)
    mean, std = VPSDE().marginal(scaler.normalize(generated["latents"]).repeat_interleave(draws, 0), shard["t"])
    torch.testing.assert_close(shard["x_t"], mean + std.reshape(-1, 1, 1, 1) * shard["eps"], atol=1e-5, rtol=1e-5)
    # Generated draw j is seeded apart from inverted image j: the same id gets other times.
    inverted_shard, _ = load_safetensors(shard_path(out, 0))
    assert not torch.equal(shard["t"][:draws], inverted_shard["t"][:draws])
    latents = ("--generated-latents", str(shard_path(inverted / "invert", 0, "generated")), "--shard-index", "1")
    alone = _shard(inverted, inverted / "params.yaml", out / "stats.safetensors", out / "x", *latents, check=False)
    assert alone.returncode == 2 and "shards 0…0" in alone.stderr


def test_streamed_range_and_spread_equal_those_of_the_whole_batch():
    gen = torch.Generator().manual_seed(5)
    parts = [
        3.0 + 0.01 * torch.randn(n, 4, 3, 3, generator=gen) for n in (7, 1, 0, 12)
    ]  # a large mean: no cancellation
    whole = torch.cat(parts)
    streamed, at_once = LatentScaler.fit(iter(parts)), LatentScaler.fit(whole)
    assert torch.equal(streamed.minimum, at_once.minimum) and torch.equal(streamed.maximum, at_once.maximum)
    assert pooled_std(parts) == pytest.approx(float(whole.double().std()), rel=1e-12)
    with pytest.raises(ValueError, match="at least one latent"):
        LatentScaler.fit(iter([torch.zeros(0, 4, 3, 3)]))
