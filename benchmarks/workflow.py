"""How long the workflow's bookkeeping takes: a no-op `snakemake -n` on a finished workspace, the FFHQ profile's plan
(70,000 images in shards) and `sgilo dvc-sync --check`. Each is a whole process, as a user runs it; the table shows
the median and the maximum of the repeats.

    python benchmarks/workflow.py --workspace .      # after `make table` in this clone
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

REPO = Path(__file__).resolve().parents[1]


def timed(command: list[str], cwd: Path, repeats: int, expect: str) -> list[float]:
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        run = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)
        seconds.append(time.perf_counter() - start)
        if run.returncode != 0 or expect not in run.stdout + run.stderr:
            sys.exit(f"{' '.join(command)} in {cwd} did not print {expect!r}:\n{(run.stdout + run.stderr)[-2000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workspace", type=Path, default=REPO, help="a clone where the main job has finished")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    snakemake = [sys.executable, "-m", "snakemake", "--cores", "1"]
    ffhq = REPO / "profiles" / "ffhq" / "params.yaml"
    with tempfile.TemporaryDirectory() as empty:
        cases = [
            ("no-op `snakemake -n results/table1.csv` (demo, finished)", [*snakemake, "-n", "results/table1.csv"],
             args.workspace, "Nothing to be done"),
            ("FFHQ profile plan, SLURM profile (238 jobs)",
             [*snakemake, "-s", str(REPO / "Snakefile"), "--directory", empty, "-n", "--workflow-profile",
              str(REPO / "workflow" / "profiles" / "slurm"), "results/table1.csv", "--configfile", str(ffhq)],
             REPO, "238"),
            ("`sgilo dvc-sync --check` (demo)", [sys.executable, "-m", "sgilo.cli", "dvc-sync", "--check"],
             args.workspace, "current"),
        ]
        print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; workspace {args.workspace}")
        print("| what | median s | max s |")
        print("|---|---|---|")
        for name, command, cwd, expect in cases:
            seconds = timed(command, cwd, args.repeats, expect)
            print(f"| {name} | {statistics.median(seconds):.2f} | {max(seconds):.2f} |")


if __name__ == "__main__":
    main()
