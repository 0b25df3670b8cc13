"""Same params, same outputs: the whole workflow run twice, with `--cores 1` against `--cores 2`, and what another
thread count changes.

Issue 8's determinism check on the tiny profile (tests/conftest.py's TINY). Fresh copies of the project run
`snakemake all`: a reference with `--cores 2`, a second run with `--cores 2`, and one with `--cores 1`; every
output of these two is compared with the reference as `kill_anywhere.py` compares them (tensors, tables and JSON
exactly; wall-clock fields left out). `--threads N` sets every stage's `threads` key (default 1, as the tiny profile;
0 is every core Snakemake gives a job, so `--cores` then changes the thread count). A last copy runs with every
`threads` key at `--other-threads`: another split of the same arithmetic, which rounds differently; it is not a
failure, and its row says how many outputs differ bitwise and how far Table 1's means moved, as a fraction of their
confidence interval's half-width (thread counts are not tracked params: Snakefile, `tracked`).

    python benchmarks/determinism.py                  # the runs and their times: docs/reliability.md
    python benchmarks/determinism.py --smoke          # every run builds the download stage only: checks that it runs

Prints one row per compared run; results go to docs/reliability.md. The smoke run makes the same four runs and
comparisons with `snakemake download` in place of `all`, so it has no Table 1 to compare ("–").
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
import yaml
from kill_anywhere import (  # sibling script: the one output comparison
    REPO,
    SMOKE_TARGETS,
    outputs,
    project_env,
    same,
)

from _common import add_smoke, smoke_run

sys.path.insert(0, str(REPO / "tests"))
from conftest import copy_project  # the tiny profile the suite uses

THREADED = ("generator", "invert", "trajectories", "score", "evaluate", "report")


def set_threads(params: Path, threads: int) -> None:
    values = yaml.safe_load(params.read_text())
    for key in THREADED:
        section = values
        for part in key.split("."):
            section = section[part]
        section["threads"] = threads
    params.write_text(yaml.safe_dump(values, sort_keys=False))


def run(root: Path, cores: int, threads: int, targets: list[str]) -> float:
    set_threads(root / "params.yaml", threads)
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", str(cores), *targets, "--quiet"],
        cwd=root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=project_env(root),
        check=False,
    )
    if done.returncode != 0:
        sys.exit(f"snakemake --cores {cores} in {root} failed:\n{done.stderr[-3000:]}")
    return time.monotonic() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--threads", type=int, default=1, help="every stage's threads key (0: the cores Snakemake gives a job)"
    )
    parser.add_argument(
        "--other-threads", type=int, default=2, help="the threads of the last run, compared without failing"
    )
    parser.set_defaults(targets=["all"])
    add_smoke(parser)
    args = parser.parse_args()
    smoke_run(args, targets=SMOKE_TARGETS)
    table = Path("results/table1.csv")
    with tempfile.TemporaryDirectory(prefix="sgilo-determinism-") as tmp:
        pristine = copy_project(Path(tmp) / "pristine")  # one snapshot of the code for every run
        reference = shutil.copytree(pristine, Path(tmp) / "reference")
        seconds = run(reference, 2, args.threads, args.targets)
        expected = [p.relative_to(reference) for p in outputs(reference)]
        print(
            f"reference (--cores 2, threads {args.threads}): {seconds:.0f} s, {len(expected)} outputs compared; "
            f"CPU capability {torch.backends.cpu.get_cpu_capability()}, torch {torch.__version__}"
        )
        print("| run | seconds | outputs compared | differing or missing | table1.csv identical (but its seconds) |")
        print("|---|---|---|---|---|")
        failures = 0
        for name, cores in (("again, --cores 2", 2), ("--cores 1", 1)):
            root = shutil.copytree(pristine, Path(tmp) / name.replace(" ", "").replace(",", "-"))
            seconds = run(root, cores, args.threads, args.targets)
            produced = [p.relative_to(root) for p in outputs(root)]
            differing = sorted(set(produced) ^ set(expected)) + [
                p for p in expected if (root / p).exists() and not same(reference / p, root / p)
            ]
            table_same = (
                same(reference / table, root / table) if table in expected else None
            )  # None: not built (--smoke)
            failures += bool(differing) or table_same is False
            if differing:
                print(f"{name}: differs or missing: {[str(p) for p in differing]}", file=sys.stderr)
            print(
                f"| {name} | {seconds:.0f} | {len(expected)} | {len(differing)} | {'–' if table_same is None else table_same} |",
                flush=True,
            )
        root = shutil.copytree(pristine, Path(tmp) / "other-threads")
        seconds = run(root, 2, args.other_threads, args.targets)
        differing = [p for p in expected if not same(reference / p, root / p)]
        drift = (
            f"means moved ≤ {table_drift(reference / table, root / table):.1e} of their interval's half-width"
            if table in expected
            else "–"
        )
        print(
            f"| threads {args.other_threads}, --cores 2 (not a failure) | {seconds:.0f} | {len(expected)} | {len(differing)} | {drift} |",
            flush=True,
        )
        sys.exit(1 if failures else 0)


def table_drift(reference: Path, other: Path) -> float:
    """The largest |Δ mean| over Table 1's rows and metrics, in units of the reference interval's half-width."""
    a, b = pd.read_csv(reference), pd.read_csv(other)
    worst = 0.0
    for metric in [c.removesuffix("_mean") for c in a.columns if c.endswith("_mean")]:
        half = (a[f"{metric}_ci_high"] - a[f"{metric}_ci_low"]) / 2
        moved = ((b[f"{metric}_mean"] - a[f"{metric}_mean"]).abs() / half).dropna()
        worst = max(worst, float(moved.max()) if len(moved) else 0.0)
    return worst


if __name__ == "__main__":
    main()
