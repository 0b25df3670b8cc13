"""How many threads a workflow job should get on a small machine: each job of the given rules rerun at each thread
count, as Snakemake runs it, in a copy of a finished workspace. Wall seconds come from the rule's own `benchmark:`
file (its cpu_time is sampled and misses a short job's last interval, so it is not shown). On 2 cores, a job's second
thread does not halve its wall time; two one-thread jobs side by side do more per second whenever other jobs are
ready to run beside it (docs/benchmarks.md).

    python benchmarks/stage_threads.py --workspace .            # after `make table` in this clone
    python benchmarks/stage_threads.py --smoke                  # the tiny profile's download job: checks that it runs

Each run is in a fresh copy, and the workspace is left untouched: rerunning a job there would make every job after
it out of date.
"""

from __future__ import annotations

import argparse
import csv
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from _common import REPO, add_smoke, ints, machine, smoke_run

sys.path.insert(0, str(REPO / "tests"))
from conftest import copy_project  # the tiny profile the suite uses

LEFT_OUT = (".git", ".venv", "locks", "smoke-ffhq", "__pycache__")  # not needed to rerun a job


def rerun(workspace: Path, rule: str, threads: int) -> list[float]:
    """Rerun every job of `rule` at `threads` threads in a fresh copy of `workspace`; the wall seconds of each job, from
    the benchmark files those jobs wrote. A fresh copy each time, so that no earlier rerun has made other jobs out of date, and mtimes
    alone decide what is current: the copy's code inputs have other absolute paths than those Snakemake recorded."""
    with tempfile.TemporaryDirectory(prefix="sgilo-threads-") as tmp:
        copy = Path(tmp) / "workspace"
        shutil.copytree(workspace, copy, symlinks=True, ignore=shutil.ignore_patterns(*LEFT_OUT))
        command = [
            sys.executable,
            "-m",
            "snakemake",
            "--cores",
            str(threads),
            "--forcerun",
            rule,
            "--until",
            rule,
            "--set-threads",
            f"{rule}={threads}",
            "--rerun-triggers",
            "mtime",
        ]
        started = time.time()
        run = subprocess.run(command, cwd=copy, capture_output=True, text=True, check=False)
        if run.returncode != 0:
            sys.exit(f"{' '.join(command)} in a copy of {workspace} failed:\n{run.stderr[-3000:]}")
        stats = run.stdout + run.stderr
        ran = set(re.findall(r"^(\w+)\s+\d+$", stats[stats.index("Job stats:") :], flags=re.MULTILINE)) - {"total"}
        if ran != {rule}:
            sys.exit(f"rerunning rule {rule} in a copy of {workspace} also ran {sorted(ran - {rule})}: is it finished?")
        written = [p for p in (copy / "logs" / "benchmarks").rglob("*.tsv") if p.stat().st_mtime >= started]
        rows = [row for path in written for row in csv.DictReader(path.open(), delimiter="\t")]
    if not rows:
        sys.exit(f"rule {rule} wrote no benchmark file under logs/benchmarks: does it declare one?")
    return [float(row["s"]) for row in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workspace", type=Path, default=REPO, help="a clone where the main job has finished")
    parser.add_argument("--rules", default="invert,score", help="comma-separated rules to rerun")
    parser.add_argument("--threads", type=ints, default=[1, 2], help="comma-separated thread counts")
    parser.add_argument("--repeats", type=int, default=1)
    add_smoke(parser)
    args = parser.parse_args()
    smoke_run(args, rules="download", threads=[1, 2], repeats=1)
    print(f"machine: {machine(torch.device('cpu'))}")
    with tempfile.TemporaryDirectory(prefix="sgilo-threads-tiny-") as tmp:
        if args.smoke:
            args.workspace = Path(tmp) / "workspace"
            copy_project(args.workspace)
            subprocess.run(
                [sys.executable, "-m", "snakemake", "--cores", "1", "download"],
                cwd=args.workspace,
                check=True,
                capture_output=True,
            )
        elif not (args.workspace / "results" / "table1.csv").is_file():
            sys.exit(f"{args.workspace} has no results/table1.csv: run `make table` there first")
        # cores held: what the job keeps from the jobs that could run beside it (Snakemake reserves its threads)
        print("| rule | threads | jobs | wall s | cores held × wall s | wall speed-up |")
        print("|---|---|---|---|---|---|")
        for rule in args.rules.split(","):
            first = None
            for threads in args.threads:
                jobs = [rerun(args.workspace, rule, threads) for _ in range(args.repeats)]
                wall = min(sum(run) for run in jobs)
                first = first or wall
                print(
                    f"| {rule} | {threads} | {len(jobs[0])} | {wall:.1f} | {threads * wall:.1f} | {first / wall:.2f} |"
                )


if __name__ == "__main__":
    main()
