"""invert stage: shards of layer-k latents, resume after kill -9, summary, bad input."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch

from sgilo.inversion import decode
from sgilo.io import load_safetensors
from sgilo.stylegan2 import load_generator

from conftest import TINY, invert_all, kill_stage_when, run_stage, shard_path, tiny_workspace, write_params


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """A downloaded tiny data set and a random tiny generator (training is the generator stage's business)."""
    return tiny_workspace(tmp_path_factory.mktemp("invert"))


def _invert(root: Path, params: Path, out: Path, *extra: str, check: bool = True) -> subprocess.CompletedProcess:
    """The invert stage writing the file `out` (extra: --shard-index I or --generated-index I)."""
    return run_stage(
        "invert",
        "--params",
        str(params),
        "--data",
        str(root / "synthfaces"),
        "--generator",
        str(root / "generator.pt"),
        "--out",
        str(out),
        *extra,
        cwd=root,
        check=check,
    )


def test_shards_hold_latents_ids_and_quality(workspace):
    out = workspace / "all"
    invert_all(workspace, workspace / "params.yaml", out)
    first, meta = load_safetensors(shard_path(out, 0))
    second, _ = load_safetensors(shard_path(out, 1))
    assert first["ids"].tolist() == list(range(8)) and second["ids"].tolist() == list(range(8, 12))
    channels = TINY["generator"]["architecture"]["channel_max"]
    assert first["latents"].shape == (8, channels + 3, 8, 8)  # the input of block 2 of a 32² generator
    assert first["w_plus"].shape == (8, 8, TINY["generator"]["architecture"]["style_dim"])
    assert first["loss"].shape == first["psnr"].shape == (8,)
    assert meta["layer"] == "2" and json.loads(meta["invert"])["images"] == 12
    # The stored latent decodes to an image whose PSNR is the one recorded.
    generator = load_generator(workspace / "generator.pt")
    with torch.no_grad():
        image = (decode(generator, first["latents"], 2, first["w_plus"]).clamp(-1, 1) + 1) / 2
    from sgilo.data import load_images

    truth = (load_images(workspace / "synthfaces", "train", 32, list(range(8))) + 1) / 2
    psnr = -10 * torch.log10((image - truth).square().flatten(1).mean(1))
    torch.testing.assert_close(psnr, first["psnr"], atol=0.05, rtol=0)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["images"] == 12 and summary["precision"] == "fp32"
    assert summary["psnr_mean"] == pytest.approx(float(torch.cat([first["psnr"], second["psnr"]]).mean()), rel=1e-5)
    assert not (out / "shards" / "partial").exists()
    generated, _ = load_safetensors(shard_path(out, 0, "generated"))
    assert generated["ids"].tolist() == list(range(TINY["invert"]["generated"]))
    # What the stage wrote is exactly what it was told to write.
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        "generated/shard-00000.safetensors",
        "shards/shard-00000.safetensors",
        "shards/shard-00001.safetensors",
        "summary.json",
    ]


def test_one_shard_per_job_then_summary(workspace):
    out = workspace / "jobs"
    _invert(workspace, workspace / "params.yaml", out / "one.safetensors", "--shard-index", "1")
    assert [p.name for p in out.iterdir()] == ["one.safetensors"]
    shards = [str(out / "zero.safetensors"), str(out / "one.safetensors")]
    missing = run_stage(
        "invert",
        "--params",
        str(workspace / "params.yaml"),
        "--shards",
        *shards,
        "--out",
        str(out / "s.json"),
        cwd=workspace,
        check=False,
    )
    assert missing.returncode != 0 and "zero.safetensors" in missing.stderr
    bad = _invert(workspace, workspace / "params.yaml", out / "two.safetensors", "--shard-index", "2", check=False)
    assert bad.returncode == 2 and "shards 0…1" in bad.stderr


def test_killed_shard_resumes_to_identical_output(workspace):
    slow = write_params(
        workspace / "slow.yaml",
        {
            "invert": {
                "images": 12,
                "shard_size": 12,
                "batch_size": 2,
                "phases": [{"layer": 0, "steps": 30, "lr": 0.1}, {"layer": 2, "steps": 30, "lr": 0.1, "radius": 100.0}],
            }
        },
    )
    straight = workspace / "straight" / "shard-00000.safetensors"
    _invert(workspace, slow, straight, "--shard-index", "0")
    killed = workspace / "killed" / "shard-00000.safetensors"
    partial = killed.parent / "partial" / "shard-00000.pt"
    kill_stage_when(
        "invert",
        [
            "--params",
            str(slow),
            "--data",
            str(workspace / "synthfaces"),
            "--generator",
            str(workspace / "generator.pt"),
            "--out",
            str(killed),
            "--shard-index",
            "0",
        ],
        workspace,
        partial,
    )
    assert not killed.exists(), "the shard finished before it could be killed; raise steps"
    rerun = _invert(workspace, slow, killed, "--shard-index", "0")
    assert "resuming after" in rerun.stderr
    expected, _ = load_safetensors(straight)
    got, _ = load_safetensors(killed)
    assert expected.keys() == got.keys()
    for key in expected:
        assert torch.equal(expected[key], got[key]), key
    assert not partial.exists()


def test_stale_partial_from_other_params_is_not_resumed(workspace):
    out = workspace / "stale" / "shard-00000.safetensors"
    params = workspace / "params.yaml"
    partial = out.parent / "partial" / "shard-00000.pt"
    partial.parent.mkdir(parents=True)
    torch.save({"fingerprint": "something else", "batches": []}, partial)
    result = _invert(workspace, params, out, "--shard-index", "0")
    assert "starting the shard again" in result.stderr


def test_more_images_than_the_data_set_has_is_a_clear_error(workspace):
    params = write_params(workspace / "too_many.yaml", {"invert": {"images": 100}})
    result = _invert(workspace, params, workspace / "x.safetensors", "--shard-index", "0", check=False)
    assert result.returncode == 2
    assert "invert.images" in result.stderr and "n_train" in result.stderr


def _poison_image(monkeypatch, image_id: int) -> None:
    """The invert stage reads image `image_id` with a NaN pixel: its optimisation goes non-finite from the start."""
    from sgilo.stages import invert as invert_stage

    real = invert_stage.load_images

    def load(data, split, size, ids):
        images = real(data, split, size, ids)
        for row, i in enumerate(ids):
            if i == image_id:
                images[row, 0, 0, 0] = float("nan")
        return images

    monkeypatch.setattr(invert_stage, "load_images", load)


def test_an_image_going_non_finite_is_left_out_with_its_reason_and_the_shard_kept(workspace, monkeypatch):
    from sgilo.stages import invert as invert_stage

    argv = [
        "--params",
        str(workspace / "params.yaml"),
        "--data",
        str(workspace / "synthfaces"),
        "--generator",
        str(workspace / "generator.pt"),
    ]
    clean = workspace / "clean.safetensors"
    invert_stage.main([*argv, "--out", str(clean), "--shard-index", "0"])
    _poison_image(monkeypatch, 4)
    poisoned = workspace / "poisoned"
    for i in range(2):
        invert_stage.main([*argv, "--out", str(shard_path(poisoned, i)), "--shard-index", str(i)])
    shards = [str(shard_path(poisoned, i)) for i in range(2)]
    invert_stage.main(["--params", argv[1], "--shards", *shards, "--out", str(poisoned / "summary.json")])
    expected, _ = load_safetensors(clean)
    got, meta = load_safetensors(shard_path(poisoned, 0))
    assert got["ids"].tolist() == [0, 1, 2, 3, 5, 6, 7]
    keep = [0, 1, 2, 3, 5, 6, 7]
    for key in expected:
        assert torch.equal(got[key], expected[key][keep]), key
    assert json.loads(meta["failures"]) == {"4": "non-finite loss at step 1 of the layer-0 phase"}
    summary = json.loads((poisoned / "summary.json").read_text())
    assert summary["images"] == 11 and summary["failed"] == 1 and list(summary["failures"]) == ["4"]
    # The next stage trains on the kept latents only.
    run_stage(
        "trajectories", "--params", argv[1], "--latents", *shards, "--out", str(workspace / "stats"), cwd=workspace
    )


def test_a_shard_whose_images_all_fail_writes_nothing_and_says_what_to_change(workspace, monkeypatch):
    from sgilo.stages import invert as invert_stage

    params = write_params(workspace / "one.yaml", {"invert": {"images": 1, "shard_size": 1, "batch_size": 1}})
    _poison_image(monkeypatch, 0)
    with pytest.raises(SystemExit, match="every image of invert shard 0 failed.*invert.phases"):
        invert_stage.main(
            [
                "--params",
                str(params),
                "--data",
                str(workspace / "synthfaces"),
                "--generator",
                str(workspace / "generator.pt"),
                "--out",
                str(workspace / "none" / "shard.safetensors"),
                "--shard-index",
                "0",
            ]
        )
    assert not (workspace / "none" / "shard.safetensors").exists()


def test_generated_shards_hold_the_generators_own_layer_k_latents(workspace):
    params = write_params(workspace / "generated.yaml", {"invert": {"generated": 11, "generated_shard_size": 8}})
    out = workspace / "generated"
    _invert(workspace, params, shard_path(out, 1, "generated"), "--generated-index", "1")
    _invert(workspace, params, shard_path(out, 0, "generated"), "--generated-index", "0")
    assert [p.name for p in out.iterdir()] == ["generated"]  # no inversion ran
    first, meta = load_safetensors(shard_path(out, 0, "generated"))
    second, _ = load_safetensors(shard_path(out, 1, "generated"))
    assert first["ids"].tolist() == list(range(8)) and second["ids"].tolist() == [8, 9, 10]
    assert meta["source"] == "generator" and meta["layer"] == "2"
    # Each latent is on the generator's range: decoded from layer 2 on with its w+, it is the generator's own image,
    # and its w+ is one w broadcast over the layers (no mixing).
    generator = load_generator(workspace / "generator.pt")
    with torch.no_grad():
        torch.testing.assert_close(
            decode(generator, first["latents"], 2, first["w_plus"]),
            generator.synthesis(first["w_plus"]),
            atol=1e-5,
            rtol=1e-5,
        )
    assert torch.equal(first["w_plus"], first["w_plus"][:, :1].expand_as(first["w_plus"]))
    assert len({tuple(w.tolist()) for w in first["w_plus"][:, 0]}) == 8
    # A latent depends on its own seed only, not on the shard size.
    regrouped = workspace / "regrouped"
    _invert(
        workspace,
        write_params(workspace / "regrouped.yaml", {"invert": {"generated": 11, "generated_shard_size": 4}}),
        regrouped / "third.safetensors",
        "--generated-index",
        "2",
    )
    third, _ = load_safetensors(regrouped / "third.safetensors")
    assert third["ids"].tolist() == [8, 9, 10]
    torch.testing.assert_close(third["latents"], second["latents"], atol=1e-6, rtol=0)
    bad = _invert(workspace, params, out / "bad.safetensors", "--generated-index", "2", check=False)
    assert bad.returncode == 2 and "shards 0…1" in bad.stderr
    none = _invert(
        workspace,
        write_params(workspace / "none.yaml", {"invert": {"generated": 0}}),
        out / "none.safetensors",
        "--generated-index",
        "0",
        check=False,
    )
    assert none.returncode == 2 and "set invert.generated > 0" in none.stderr
