"""score stage: DSM training on cached trajectories, held-out loss, outputs, resume after a crash, IGO."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from sgilo.config import load_params
from sgilo.io import load_torch
from sgilo.loader import ConfigError
from sgilo.score_model import ScoreViT
from sgilo.stages import score as score_stage

from conftest import TINY, kill_stage_when, run_stage, score_argv, tiny_workspace, write_params


@pytest.fixture(scope="module")
def cached(tmp_path_factory) -> Path:
    """Download + random tiny generator + invert + trajectories (8 draws per latent), once for the module."""
    return tiny_workspace(tmp_path_factory.mktemp("score"), {"trajectories": {"draws": 8}}, upto="trajectories")


def _argv(root: Path, params: Path, out: Path) -> list[str]:
    """The score stage on the module's trajectories, writing model.pt and the rest into `out`."""
    return score_argv(params, root / "trajectories", root / "invert", root / "generator.pt", out)


def _params(root: Path, name: str, score: dict) -> Path:
    return write_params(root / f"{name}.yaml", {"trajectories": {"draws": 8}, "score": {**TINY["score"], **score}})


def test_training_lowers_the_held_out_loss_and_writes_everything(cached):
    params = _params(
        cached, "long", {"epochs": 8, "model": {"width": 32, "depth": 2, "heads": 2, "mlp": 64}, "lr": 0.002}
    )
    out = cached / "long"
    run_stage("score", *_argv(cached, params, out), cwd=cached)
    assert sorted(p.name for p in out.iterdir()) == [
        "history.csv",
        "loss.png",
        "metrics.json",
        "model.pt",
        "samples.png",
    ]
    rows = list(csv.DictReader((out / "history.csv").open()))
    assert [int(r["epoch"]) for r in rows] == list(range(9))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["held_out_samples"] > 0 and metrics["train_samples"] > 0 and metrics["precision"] == "fp32"
    assert metrics["held_out_loss_final"] < 0.8 * metrics["held_out_loss_initial"]
    checkpoint = load_torch(out / "model.pt")
    model = ScoreViT(**checkpoint["config"])
    model.load_state_dict(checkpoint["model"])
    assert checkpoint["layer"] == TINY["invert"]["layer"] and checkpoint["sde"]["name"] == "vp"
    assert set(checkpoint["scaler"]) == {"minimum", "maximum"}


def test_a_crashed_run_resumes_to_the_same_weights(cached, monkeypatch):
    params = _params(cached, "resume", {"epochs": 4})
    straight = cached / "straight"
    score_stage.main(_argv(cached, params, straight))

    crashed = cached / "crashed"
    calls = {"n": 0}
    real = score_stage.held_out_loss

    def crash_in_epoch_three(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:  # initial evaluation, then epochs 1 and 2 finished and checkpointed
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(score_stage, "held_out_loss", crash_in_epoch_three)
    with pytest.raises(KeyboardInterrupt):
        score_stage.main(_argv(cached, params, crashed))
    assert load_torch(crashed / "resume" / "state.pt")["epoch"] == 2
    monkeypatch.setattr(score_stage, "held_out_loss", real)
    score_stage.main(_argv(cached, params, crashed))
    expected, got = load_torch(straight / "model.pt")["model"], load_torch(crashed / "model.pt")["model"]
    assert all(torch.equal(expected[k], got[k]) for k in expected)
    assert (straight / "history.csv").read_text() == (crashed / "history.csv").read_text()
    assert not (crashed / "resume").exists()


def test_kill_9_during_training_then_rerun_gives_identical_weights(cached):
    """A real SIGKILL between checkpoints (no Python cleanup runs), then a rerun in a fresh process."""
    params = _params(cached, "kill", {"epochs": 30})
    straight = cached / "kill-straight"
    run_stage("score", *_argv(cached, params, straight), cwd=cached)
    killed = cached / "kill-killed"
    kill_stage_when("score", _argv(cached, params, killed), cached, killed / "resume" / "state.pt")
    assert not (killed / "model.pt").exists(), "the run finished before it could be killed; raise epochs"
    rerun = run_stage("score", *_argv(cached, params, killed), cwd=cached)
    assert "resuming after epoch" in rerun.stderr
    expected, got = load_torch(straight / "model.pt")["model"], load_torch(killed / "model.pt")["model"]
    assert all(torch.equal(expected[k], got[k]) for k in expected)
    assert (straight / "history.csv").read_text() == (killed / "history.csv").read_text()


def test_generated_latents_join_the_training_set_only(cached):
    without = write_params(
        cached / "no-generated.yaml",
        {"invert": {"generated": 0}, "trajectories": {"draws": 8}, "score": {**TINY["score"], "epochs": 1}},
    )
    runs = {}
    for name, params in (("without", without), ("with", _params(cached, "generated", {"epochs": 1}))):
        run_stage("score", *_argv(cached, params, cached / name), cwd=cached)
        runs[name] = json.loads((cached / name / "metrics.json").read_text())
    assert runs["with"]["train_samples"] == runs["without"]["train_samples"] + TINY["invert"]["generated"] * 8
    assert runs["with"]["held_out_samples"] == runs["without"]["held_out_samples"]


@pytest.mark.parametrize(
    "section, key, fix",
    [
        ("score", "igo", "theory_igo stage"),
        ("score", "igo_alpha", "theory_igo.alphas"),
        ("evaluate", "noise", "T = 0.25"),
    ],
)
def test_retired_keys_name_what_replaced_them(tmp_path, section, key, fix):
    overrides = {section: {key: 0.5}} if section == "score" else {"evaluate": {"sgilo": {key: 0.01}}}
    params = write_params(tmp_path / "params.yaml", overrides)
    with pytest.raises(ConfigError, match=f"no longer a key: .*{fix}"):
        load_params(params)


def test_changed_params_do_not_resume_a_stale_state(cached):
    params = _params(cached, "stale", {"epochs": 2})
    out = cached / "stale"
    state = out / "resume" / "state.pt"
    state.parent.mkdir(parents=True)
    torch.save({"fingerprint": "other", "epoch": 1}, state)
    result = run_stage("score", *_argv(cached, params, out), cwd=cached)
    assert "resuming" not in result.stderr
    assert [int(r["epoch"]) for r in csv.DictReader((out / "history.csv").open())] == [0, 1, 2]
