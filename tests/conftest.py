"""Shared fixtures: a tiny profile that runs every stage in seconds on the CPU.

It is the demo profile (params.yaml) with counts and sizes shrunk (TINY), so it gives every key the demo gives; it
pins fp32, as the demo does, so that every machine computes the same numbers (sgilo.precision)."""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from sgilo.config import Params, load_params
from sgilo.loader import merge, read_yaml

REPO = Path(__file__).resolve().parents[1]

TINY = {
    "seed": 3,
    "download": {"dataset": "synthfaces", "resolution": 32, "synthfaces": {"n_train": 48, "n_test": 8}},
    "generator": {
        "source": "train",
        "architecture": {"size": 32, "style_dim": 16, "n_mlp": 2, "channel_multiplier": 1, "channel_max": 16},
        "train": {
            "steps": 12,
            "batch_size": 4,
            "lr": 0.002,
            "r1_every": 4,
            "checkpoint_every": 3,
            "ema_half_life_images": 50,
            "disc_channel_max": 16,
            "swd_every": 5,
            "precision": "fp32",
        },
        "latent_avg_samples": 256,
        "grid_rows": 2,
        "threads": 1,
    },
    "invert": {
        "layer": 2,
        "phases": [
            {"layer": 0, "steps": 3, "lr": 0.1},
            {"layer": 1, "steps": 2, "lr": 0.1, "radius": 50.0},
            {"layer": 2, "steps": 2, "lr": 0.1, "radius": 100.0},
        ],
        "images": 12,
        "generated": 4,
        "generated_shard_size": 4,
        "shard_size": 8,
        "batch_size": 3,
        "precision": "fp32",
        "device": "cpu",
        "threads": 1,
    },
    "trajectories": {"draws": 2, "held_out": 0.25, "threads": 1},
    "score": {
        "model": {"width": 16, "depth": 1, "heads": 2, "mlp": 32},
        "epochs": 2,
        "batch_size": 8,
        "warmup_steps": 2,
        "samples": 4,
        "sample_steps": 5,
        "precision": "fp32",
        "device": "cpu",
        "threads": 1,
    },
    "evaluate": {
        "tasks": [{"task": "inpaint", "levels": [0.25]}],
        "images": 3,
        "batch_size": 2,
        "sgilo": {"steps": 3, "chains": 2},
        "gnc": {"steps": 3},
        "tune": {"validation": 1, "ilo_radius_scale": [0.5, 2.0], "sgilo_weight": [0.1, 0.3], "gnc_weight": [0.5, 1.0]},
        "figure_images": 2,
        "precision": "fp32",
        "device": "cpu",
        "threads": 1,
    },
    "report": {"fid_samples": 8, "device": "cpu", "threads": 1},
    "theory_gnc": {"starts": 41, "initial_sigmas": 6, "steps": [1, 4, 16]},
    "theory_langevin": {
        "architectures": [{"depth": 2, "latents": [2, 3]}],
        "chains": 4,
        "steps": 60,
        "spread_architecture": {"depth": 2, "latents": [2]},
        "spread_betas_per_latent": [100.0, 400.0],
    },
    "theory_igo": {
        "times": [0.5],
        "latents": 8,
        "points": 64,
        "draws": 2,
        "steps": 5,
        "batch_size": 16,
        "samples": 32,
        "sample_steps": 5,
        "model": {"width": 16, "depth": 1, "heads": 1, "mlp": 16},
    },
}


def kill_stage_when(stage: str, args: list[str], cwd: Path, checkpoint: Path, timeout: float = 300) -> None:
    """Start `python -m sgilo.stages.<stage>` and SIGKILL its process group as soon as `checkpoint` exists:
    a real kill -9, so no Python cleanup runs."""
    command = [sys.executable, "-m", f"sgilo.stages.{stage}", *args]
    process = subprocess.Popen(command, cwd=cwd, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + timeout
    while not checkpoint.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


@functools.cache
def demo_params() -> Params:
    """The demo profile: where a test builds one section in code, it starts from the demo's (`dataclasses.replace`)."""
    return load_params(REPO / "params.yaml")


def write_params(path: Path, overrides: dict | None = None) -> Path:
    """The tiny profile (the demo's params.yaml, then TINY, then `overrides` laid over it) written to `path`."""
    params = merge(merge(read_yaml(REPO / "params.yaml"), TINY), overrides or {})
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


@pytest.fixture
def tiny_params(tmp_path: Path) -> Path:
    return write_params(tmp_path / "params.yaml")


def run_stage(stage: str, *args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    """Run `python -m sgilo.stages.<stage>` as Snakemake does, capturing its log."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    result = subprocess.run(
        [sys.executable, "-m", f"sgilo.stages.{stage}", *args],
        check=False,
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"stage {stage} failed ({result.returncode}):\n{result.stderr[-4000:]}")
    return result


def shard_path(folder: Path, shard: int, kind: str = "shards") -> Path:
    """Where these tests keep a shard: the workflow's layout (workflow/rules/invert.smk and trajectories.smk), kind
    "shards" for the inverted images, "generated" for the latents drawn from the generator."""
    return folder / kind / f"shard-{shard:05d}.safetensors"


def shard_paths(params: Path, folder: Path, kind: str = "shards") -> list[Path]:
    """Every shard of `kind` that `params` makes, in order, under `folder`."""
    config = load_params(params).invert
    return [shard_path(folder, i, kind) for i in range(config.shards if kind == "shards" else config.generated_shards)]


def invert_all(root: Path, params: Path, out: Path, data: Path | None = None, generator: Path | None = None) -> None:
    """The invert stage as the workflow runs it (a job per shard, a job per generated shard, then the summary), its
    files laid out under `out` as the rules lay them out under results/invert."""
    data, generator = data or root / "synthfaces", generator or root / "generator.pt"
    common = ["--params", str(params), "--generator", str(generator)]
    for i, path in enumerate(shard_paths(params, out)):
        run_stage("invert", *common, "--data", str(data), "--shard-index", str(i), "--out", str(path), cwd=root)
    for i, path in enumerate(shard_paths(params, out, "generated")):
        run_stage("invert", *common, "--generated-index", str(i), "--out", str(path), cwd=root)
    shards = [str(path) for path in shard_paths(params, out)]
    run_stage("invert", "--params", str(params), "--shards", *shards, "--out", str(out / "summary.json"), cwd=root)


def latents_argv(params: Path, invert: Path) -> list[str]:
    """--latents and --generated-latents: every invert shard and generated shard under `invert`."""
    shards, generated = shard_paths(params, invert), shard_paths(params, invert, "generated")
    return ["--latents", *map(str, shards), "--generated-latents", *map(str, generated)]


def trajectories_all(root: Path, params: Path, invert: Path, out: Path) -> None:
    """The trajectories stage as the workflow runs it (the scaling, then a job per shard), laid out under `out` as
    the rules lay it out under results/trajectories."""
    stats = out / "stats.safetensors"
    run_stage("trajectories", "--params", str(params), *latents_argv(params, invert), "--out", str(stats), cwd=root)
    for kind, flag in (("shards", "--latents"), ("generated", "--generated-latents")):
        for i, (latents, path) in enumerate(zip(shard_paths(params, invert, kind), shard_paths(params, out, kind))):
            run_stage(
                "trajectories",
                *("--params", str(params), flag, str(latents), "--stats", str(stats)),
                *("--shard-index", str(i), "--out", str(path)),
                cwd=root,
            )


def score_argv(params: Path, trajectories: Path, invert: Path, generator: Path, out: Path) -> list[str]:
    """The score stage's arguments for the trajectories and invert shards under those folders, writing into `out`
    what the workflow writes into results/score."""
    files = [*shard_paths(params, trajectories), *shard_paths(params, trajectories, "generated")]
    return [
        *("--params", str(params), "--trajectories", *map(str, files)),
        *("--stats", str(trajectories / "stats.safetensors"), "--invert", *map(str, shard_paths(params, invert))),
        *("--generator", str(generator)),
        *("--model", str(out / "model.pt"), "--samples", str(out / "samples.png"), "--loss", str(out / "loss.png")),
        *("--history", str(out / "history.csv"), "--metrics", str(out / "metrics.json")),
    ]


def cell_file(folder: Path, task: str, level: float, method: str, suffix: str) -> Path:
    """Where these tests keep an evaluate cell's file: the workflow's layout (workflow/rules/evaluate.smk)."""
    return folder / task / f"{level:g}" / f"{method}{suffix}"


def cell_argv(folder: Path, task: str, level: float, method: str) -> list[str]:
    """The evaluate stage's --records and --figures for a cell, laid out under `folder` as the rules do."""
    return [
        *("--records", str(cell_file(folder, task, level, method, ".parquet"))),
        *("--figures", str(cell_file(folder, task, level, method, ".safetensors"))),
    ]


def report_argv(params: Path, evaluate: Path, out: Path) -> list[str]:
    """The report stage's arguments for every cell of `params` under `evaluate`, writing into `out` what the workflow
    writes into results/ (workflow/rules/report.smk)."""
    config = load_params(params).evaluate
    cells = [(t.task, level, method) for t in config.tasks for level in t.levels for method in config.methods]
    tasks = [t.task for t in config.tasks]
    posterior = ["--posterior", str(out / "figures" / "posterior.png")] if "sgilo" in config.methods else []
    return [
        *("--params", str(params), "--records", *(str(cell_file(evaluate, *c, ".parquet")) for c in cells)),
        *("--images", *(str(cell_file(evaluate, *c, ".safetensors")) for c in cells)),
        *("--table", str(out / "table1.csv"), "--table-html", str(out / "table1.html")),
        *("--metrics", str(out / "metrics.json"), "--paired", str(out / "paired.csv")),
        *("--curves", *(str(out / "figures" / f"curves_{task}.png") for task in tasks)),
        *("--curve-data", *(str(out / "plots" / f"curves_{task}.csv") for task in tasks)),
        *("--reconstructions", str(out / "figures" / "reconstructions.png"), *posterior),
        *("--speed", str(out / "figures" / "speed.png"), "--speed-data", str(out / "plots" / "speed.csv")),
        *("--markdown", str(out / "report.md")),
    ]


def prior_argv(out: Path) -> list[str]:
    """The report stage's --prior-samples and --prior (with --score), where the workflow writes them under results/."""
    return ["--prior-samples", str(out / "figures" / "prior_samples.png"), "--prior", str(out / "prior.json")]


def tiny_workspace(root: Path, overrides: dict | None = None, upto: str = "generator") -> Path:
    """`root` with params.yaml, the downloaded tiny data set and a random tiny generator (training is the generator
    stage's business), then the later stages up to `upto` ("generator", "invert", "trajectories" or "score"), laid
    out under invert/, trajectories/ and score/ as the workflow lays them out under results/."""
    params = write_params(root / "params.yaml", overrides)
    run_stage("download", "--params", str(params), "--out", str(root / "synthfaces"), cwd=root)
    from sgilo.stylegan2 import Generator, save_generator

    torch.manual_seed(0)
    generator = Generator(**TINY["generator"]["architecture"])
    generator.fit_gaussian(1000, torch.Generator().manual_seed(0))
    save_generator(generator, root / "generator.pt")
    if upto in ("invert", "trajectories", "score"):
        invert_all(root, params, root / "invert")
    if upto in ("trajectories", "score"):
        trajectories_all(root, params, root / "invert", root / "trajectories")
    if upto == "score":
        argv = score_argv(params, root / "trajectories", root / "invert", root / "generator.pt", root / "score")
        run_stage("score", *argv, cwd=root)
    return root


def git(root: Path, *args: str) -> str:
    command = [
        "git",
        "-c",
        "user.name=sgilo-test",
        "-c",
        "user.email=test@sgilo",
        "-c",
        "init.defaultBranch=main",
        *args,
    ]
    return subprocess.run(command, cwd=root, check=True, capture_output=True, text=True).stdout


def snakemake_in(root: Path, *args: str, target: str = "results/table1.csv") -> subprocess.CompletedProcess:
    """`snakemake` run in a project root, as a user runs it."""
    command = [sys.executable, "-m", "snakemake", "--cores", "2", target, *args]
    return subprocess.run(command, cwd=root, check=False, capture_output=True, text=True, timeout=900)


def copy_project(root: Path) -> Path:
    """This project's files (as git would commit them, no outputs) in `root`, with the tiny profile as params.yaml."""
    files = git(REPO, "ls-files", "--cached", "--others", "--exclude-standard", "-z").split("\0")
    for name in filter(None, files):
        if (REPO / name).is_file():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes((REPO / name).read_bytes())
    write_params(root / "params.yaml")
    return root


@pytest.fixture(scope="session")
def tiny_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A git repository holding this project's files with the tiny profile as params.yaml and its dvc.yaml, after
    `snakemake` (all): what a user has after running the whole workflow. Tests that change it put it back."""
    root = copy_project(tmp_path_factory.mktemp("project"))
    subprocess.run([sys.executable, "-m", "sgilo.cli", "dvc-sync"], cwd=root, check=True, capture_output=True)
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "tiny project")
    run = snakemake_in(root, target="all")
    assert run.returncode == 0, run.stderr[-3000:]
    return root
