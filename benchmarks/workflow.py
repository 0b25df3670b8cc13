"""How long the workflow's bookkeeping takes: a no-op `snakemake -n` on a finished workspace, the FFHQ profile's plan
(70,000 images in shards) and `sgilo dvc-sync --check`. Each is a whole process, as a user runs it; the table shows
the median and the maximum of the repeats.

    python benchmarks/workflow.py --workspace .      # after `make table` in this clone
    python benchmarks/workflow.py --smoke            # 1 repeat, in a fresh tiny-profile copy: checks that it runs

The smoke run needs no finished clone: it copies the project with the test suite's tiny profile, builds the download
stage there and runs `sgilo dvc-sync`, so the no-op dry run is of `download`, not of Table 1.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import add_smoke, smoke_run

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from conftest import copy_project  # the tiny profile the suite uses


def timed(command: list[str], cwd: Path, repeats: int, expect: str) -> list[float]:
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        run = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)
        seconds.append(time.perf_counter() - start)
        if run.returncode != 0 or expect not in run.stdout + run.stderr:
            sys.exit(f"{' '.join(command)} in {cwd} did not print {expect!r}:\n{(run.stdout + run.stderr)[-2000:]}")
    return seconds


def smoke_workspace(root: Path, target: str) -> Path:
    """A copy of the project on the tiny profile with `target` built and dvc.yaml written for it."""
    copy_project(root)
    for command in (
        [sys.executable, "-m", "snakemake", "--cores", "1", target],
        [sys.executable, "-m", "sgilo.cli", "dvc-sync"],
    ):
        run = subprocess.run(command, cwd=root, capture_output=True, text=True, check=False)
        if run.returncode != 0:
            sys.exit(f"{' '.join(command)} in {root} failed:\n{run.stderr[-2000:]}")
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workspace", type=Path, default=REPO, help="a clone where the main job has finished")
    parser.add_argument("--repeats", type=int, default=5)
    parser.set_defaults(finished="results/table1.csv")
    add_smoke(parser)
    args = parser.parse_args()
    smoke_run(args, repeats=1, finished="download")
    snakemake = [sys.executable, "-m", "snakemake", "--cores", "1"]
    ffhq = REPO / "profiles" / "ffhq" / "params.yaml"
    target, profile = args.finished, "tiny profile" if args.smoke else "demo"
    with tempfile.TemporaryDirectory() as empty, tempfile.TemporaryDirectory(prefix="sgilo-workflow-") as copy:
        if args.smoke:
            args.workspace = smoke_workspace(Path(copy), target)
        cases = [
            (
                f"no-op `snakemake -n {target}` ({profile}, finished)",
                [*snakemake, "-n", target],
                args.workspace,
                "Nothing to be done",
            ),
            (
                "FFHQ profile plan, SLURM profile (238 jobs)",
                [
                    *snakemake,
                    "-s",
                    str(REPO / "Snakefile"),
                    "--directory",
                    empty,
                    "-n",
                    "--workflow-profile",
                    str(REPO / "workflow" / "profiles" / "slurm"),
                    "results/table1.csv",
                    "--configfile",
                    str(ffhq),
                ],
                REPO,
                "238",
            ),
            (
                f"`sgilo dvc-sync --check` ({profile})",
                [sys.executable, "-m", "sgilo.cli", "dvc-sync", "--check"],
                args.workspace,
                "current",
            ),
        ]
        print(
            f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; workspace {args.workspace}"
        )
        print("| what | median s | max s |")
        print("|---|---|---|")
        for name, command, cwd, expect in cases:
            seconds = timed(command, cwd, args.repeats, expect)
            print(f"| {name} | {statistics.median(seconds):.2f} | {max(seconds):.2f} |")


if __name__ == "__main__":
    main()
