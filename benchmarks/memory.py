"""Peak RSS of the trajectories and score stages at N and at 4N invert shards: memory must not grow with the data.

Writes N (then 4N) invert shards of synthetic layer-k latents of the FFHQ profile's shape (515×16×16, float32) and a
random 32² generator whose layer 3 has that shape, then runs, as Snakemake does, `sgilo.stages.trajectories` (the
scaling, then one trajectory shard per invert shard) and `sgilo.stages.score` (a small ViT, one epoch, two samples),
each as its own process; each one's peak RSS comes from `wait4`. Prints one row per stage: RSS at N, at 4N, and their ratio.

    python benchmarks/memory.py                 # N = 4 shards of 128 latents; results: docs/benchmarks.md
    python benchmarks/memory.py --smoke         # N = 1 shard of 8 latents: checks that the script runs
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

from sgilo.io import save_safetensors
from sgilo.loader import merge, read_yaml
from sgilo.stylegan2 import Generator, save_generator

from _common import REPO, add_smoke, machine, smoke_run

ARCHITECTURE = {
    "size": 32,
    "style_dim": 64,
    "n_mlp": 2,
    "channel_multiplier": 2,
    "channel_max": 512,
}  # layer 3: 515×16×16
LAYER = 3


def params(shards: int, per_shard: int) -> dict:
    """The demo profile with this benchmark's shapes and counts laid over it."""
    return merge(
        read_yaml(REPO / "params.yaml"),
        {
            "seed": 0,
            "generator": {"architecture": ARCHITECTURE},
            "invert": {
                "layer": LAYER,
                "phases": [{"layer": k, "steps": 1, "lr": 0.1} for k in range(LAYER + 1)],
                "images": shards * per_shard,
                "generated": 0,
                "shard_size": per_shard,
                "device": "cpu",
                "precision": "fp32",
                "threads": 1,
            },
            "trajectories": {"draws": 1, "held_out": 0.1, "dtype": "bfloat16", "threads": 1},
            "score": {
                "model": {"width": 32, "depth": 1, "heads": 1, "mlp": 64},
                "epochs": 1,
                "batch_size": 16,
                "warmup_steps": 1,
                "samples": 2,
                "sample_steps": 2,
                "precision": "fp32",
                "device": "cpu",
                "threads": 1,
            },
        },
    )


def write_inputs(root: Path, shards: int, per_shard: int, generator: Generator) -> tuple[Path, list[Path]]:
    """The params file and the invert shards, under `root`."""
    config = params(shards, per_shard)
    (root / "params.yaml").write_text(yaml.safe_dump(config))
    gen = torch.Generator().manual_seed(0)
    for shard in range(shards):
        ids = torch.arange(shard * per_shard, (shard + 1) * per_shard)
        save_safetensors(
            {
                "ids": ids,
                "latents": torch.randn(per_shard, 515, 16, 16, generator=gen),
                "w_plus": torch.randn(per_shard, generator.num_ws, ARCHITECTURE["style_dim"], generator=gen),
            },
            root / "invert" / f"{shard}.safetensors",
        )
    save_generator(generator, root / "generator.pt")
    return root / "params.yaml", [root / "invert" / f"{shard}.safetensors" for shard in range(shards)]


def peak_rss_mib(command: list[str], cwd: Path) -> tuple[float, float]:
    """(peak RSS in MiB, seconds) of one process, from the kernel's accounting of that child alone."""
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{process.stderr.read().decode()[-3000:]}")
    return usage.ru_maxrss / 1024, seconds


def measure(shards: int, per_shard: int, generator: Generator) -> dict[str, tuple[float, float]]:
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        params_file, latents = write_inputs(root, shards, per_shard, generator)
        stage = [sys.executable, "-m", "sgilo.stages.trajectories", "--params", str(params_file)]
        stats = root / "trajectories" / "stats.safetensors"
        result = {
            "trajectories (scaling)": peak_rss_mib([*stage, "--latents", *map(str, latents), "--out", str(stats)], root)
        }
        trajectories = [root / "trajectories" / path.name for path in latents]
        shard_runs = [
            peak_rss_mib(
                [*stage, "--latents", str(path), "--stats", str(stats), "--shard-index", str(i), "--out", str(out)],
                root,
            )
            for i, (path, out) in enumerate(zip(latents, trajectories))
        ]
        result["trajectories shard (largest)"] = max(shard_runs)
        score = root / "score"
        result["score"] = peak_rss_mib(
            [
                *(sys.executable, "-m", "sgilo.stages.score", "--params", str(params_file)),
                *("--trajectories", *map(str, trajectories), "--stats", str(stats)),
                *("--invert", *map(str, latents), "--generator", str(root / "generator.pt")),
                *("--model", str(score / "model.pt"), "--samples", str(score / "samples.png")),
                *("--loss", str(score / "loss.png"), "--history", str(score / "history.csv")),
                *("--metrics", str(score / "metrics.json")),
            ],
            root,
        )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shards", type=int, default=4, help="N: the smaller run's invert shards (the larger has 4N)")
    parser.add_argument("--per-shard", type=int, default=128, help="latents per shard")
    add_smoke(parser)
    args = parser.parse_args()
    smoke_run(args, shards=1, per_shard=8)
    shards, per_shard = args.shards, args.per_shard
    torch.manual_seed(0)
    generator = Generator(**ARCHITECTURE)
    generator.fit_gaussian(1000, torch.Generator().manual_seed(0))
    print(f"machine: {machine(torch.device('cpu'))}")
    shard_mib = per_shard * 515 * 16 * 16 * 4 / 2**20
    print(
        f"invert shards of {per_shard} latents of 515×16×16 float32 ({shard_mib:.0f} MiB each): N = {shards}, 4N = {4 * shards}\n"
    )
    small, large = measure(shards, per_shard, generator), measure(4 * shards, per_shard, generator)
    print(
        f"| stage (one process) | peak RSS at N = {shards} (MiB) | peak RSS at 4N = {4 * shards} (MiB) | ratio | seconds at N / 4N |"
    )
    print("|---|---:|---:|---:|---:|")
    for name in small:
        (rss_n, s_n), (rss_4n, s_4n) = small[name], large[name]
        print(f"| {name} | {rss_n:.0f} | {rss_4n:.0f} | {rss_4n / rss_n:.2f} | {s_n:.1f} / {s_4n:.1f} |")


if __name__ == "__main__":
    main()
