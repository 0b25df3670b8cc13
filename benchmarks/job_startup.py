"""What every job pays before its work: a stage's imports, each in a fresh process, as Snakemake starts them.

Each Snakemake job is one `python -m sgilo.stages.<stage>` process, and the demo runs about fifty of them, most a few
seconds of work. This starts `python -X importtime -c "import sgilo.stages.<stage>"` for each stage `--repeats` times
and prints the median wall time of the whole process, of the stage module's import, and of the heavy packages beneath
it (cumulative: a package imported by another is counted in both; "-": not imported). Two more rows import the
evaluate stage and then compute the image metrics of one pair of images: all three (SSIM imports torchmetrics on
first use) or the MSE alone, as a tune job does.

    python benchmarks/job_startup.py                       # every stage, 5 repeats each
    python benchmarks/job_startup.py --stages evaluate,score --repeats 9
    python benchmarks/job_startup.py --smoke               # 1 repeat of the download stage: checks that it runs

Prints a Markdown table: copy it into docs/benchmarks.md with the machine and the command. Time it on an idle machine.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import time

import torch

from _common import REPO, add_smoke, machine, names_from, smoke_run

STAGES = sorted(p.stem for p in (REPO / "src" / "sgilo" / "stages").glob("*.py") if not p.stem.startswith("_"))
# the packages whose cumulative import time is shown, in the order a stage imports them
PACKAGES = ("torch", "torchvision", "torch._dynamo", "deepinv", "torchmetrics", "pandas")
METRICS = "import torch; from sgilo.metrics import image_metrics; image_metrics(torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32){names})"
# tuning's image_metrics(..., ["mse"]) leaves SSIM, and so torchmetrics, unimported
EXTRA_ROWS = {  # label: (the stage module, the code run)
    "evaluate + the three image metrics": ("evaluate", "import sgilo.stages.evaluate; " + METRICS.format(names="")),
    "evaluate + the MSE alone (tuning)": (
        "evaluate",
        "import sgilo.stages.evaluate; " + METRICS.format(names=", ['mse']"),
    ),
}
LINE = re.compile(r"import time:\s+\d+ \|\s+(\d+) \| *(\S+)")


def one_run(code: str) -> tuple[float, dict[str, float]]:
    """Wall seconds of `python -X importtime -c code`, and the cumulative import seconds of each module it names."""
    start = time.perf_counter()
    run = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True, check=False, cwd=REPO
    )
    wall = time.perf_counter() - start
    if run.returncode != 0:
        sys.exit(f"python -c {code!r} failed:\n{run.stderr[-3000:]}")
    seconds: dict[str, float] = {}
    for match in LINE.finditer(run.stderr):
        microseconds, name = match.groups()
        seconds[name] = int(microseconds) / 1e6  # a module's one line: -X importtime reports only its first import
    return wall, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stages", type=names_from(STAGES), default=STAGES, help="comma-separated stage modules")
    parser.add_argument("--repeats", type=int, default=5, help="fresh processes per row (the median is shown)")
    add_smoke(parser)
    args = parser.parse_args()
    smoke_run(args, stages=["download"], repeats=1)
    rows = {f"sgilo.stages.{stage}": (stage, f"import sgilo.stages.{stage}") for stage in args.stages}
    if not args.smoke and "evaluate" in args.stages:
        rows |= EXTRA_ROWS
    print(f"Job start-up on {machine(torch.device('cpu'))}: {args.repeats} fresh process(es) per row, median\n")
    print("| imports | process wall s | stage module s | " + " | ".join(f"{name} s" for name in PACKAGES) + " |")
    print("|---|---|---|" + "---|" * len(PACKAGES))
    for label, (stage, code) in rows.items():
        runs = [one_run(code) for _ in range(args.repeats)]
        wall = statistics.median(w for w, _ in runs)
        cells = []
        for name in (f"sgilo.stages.{stage}", *PACKAGES):
            values = [s[name] for _, s in runs if name in s]
            cells.append(f"{statistics.median(values):.2f}" if len(values) == len(runs) else "-")
        print(f"| {label} | {wall:.2f} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
