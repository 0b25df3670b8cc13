"""How many threads a workflow job should get on a small machine: each job of the given rules rerun at each thread
count, as Snakemake runs it, in a copy of a finished workspace. Wall and CPU seconds come from the rule's own
`benchmark:` file. On 2 cores a job's two threads do not halve its wall time; two one-thread jobs side by side do
more per second whenever other jobs are ready to run beside it (docs/benchmarks.md).

    python benchmarks/stage_threads.py --workspace .            # after `make table` in this clone
    python benchmarks/stage_threads.py --smoke                  # the tiny profile's download job: checks that it runs

The copy leaves the workspace untouched: rerunning a job there would make every job after it out of date.
"""

from __future__ import annotations

import argparse
import csv
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from _common import add_smoke, ints, machine, smoke_run

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from conftest import copy_project  # the tiny profile the suite uses

LEFT_OUT = (".git", ".venv", "locks", "smoke-ffhq", "__pycache__")  # not needed to rerun a job


def rerun(workspace: Path, rule: str, threads: int) -> list[dict[str, float]]:
    """Rerun every job of `rule` at `threads` threads; the rows of the benchmark files those jobs wrote."""
    started = time.time()
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
    ]
    run = subprocess.run(command, cwd=workspace, capture_output=True, text=True, check=False)
    if run.returncode != 0:
        sys.exit(f"{' '.join(command)} in {workspace} failed:\n{run.stderr[-3000:]}")
    written = [p for p in (workspace / "logs" / "benchmarks").rglob("*.tsv") if p.stat().st_mtime >= started]
    rows = [row for path in written for row in csv.DictReader(path.open(), delimiter="\t")]
    if not rows:
        sys.exit(f"rule {rule} wrote no benchmark file under {workspace}/logs/benchmarks: does it declare one?")
    return [{"s": float(row["s"]), "cpu": float(row["cpu_time"])} for row in rows]


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
    with tempfile.TemporaryDirectory(prefix="sgilo-threads-") as tmp:
        copy = Path(tmp) / "workspace"
        if args.smoke:
            copy_project(copy)
            subprocess.run(
                [sys.executable, "-m", "snakemake", "--cores", "1", "download"],
                cwd=copy,
                check=True,
                capture_output=True,
            )
        else:
            if not (args.workspace / "results" / "table1.csv").is_file():
                sys.exit(f"{args.workspace} has no results/table1.csv: run `make table` there first")
            shutil.copytree(args.workspace, copy, symlinks=True, ignore=shutil.ignore_patterns(*LEFT_OUT))
        # cores held: what the job keeps from the jobs that could run beside it (Snakemake reserves its threads)
        print("| rule | threads | jobs | wall s | CPU s | cores held × wall s | wall speed-up |")
        print("|---|---|---|---|---|---|---|")
        for rule in args.rules.split(","):
            first = None
            for threads in args.threads:
                jobs = [rerun(copy, rule, threads) for _ in range(args.repeats)]
                wall = min(sum(job["s"] for job in run) for run in jobs)
                cpu = min(sum(job["cpu"] for job in run) for run in jobs)
                first = first or wall
                print(
                    f"| {rule} | {threads} | {len(jobs[0])} | {wall:.1f} | {cpu:.1f} | {threads * wall:.1f} "
                    f"| {first / wall:.2f} |"
                )


if __name__ == "__main__":
    main()
