"""Same params, same outputs: the whole workflow run twice, and with `--cores 1` against `--cores 2`.

Issue 8's determinism check on the tiny profile (tests/conftest.py's TINY). Three fresh copies of the project run
`snakemake all`: a reference with `--cores 2`, a second run with `--cores 2`, and one with `--cores 1`; every
output of the last two is compared with the reference as `kill_anywhere.py` compares them (tensors, tables and
JSON exactly; wall-clock fields left out). `--threads N` sets every stage's `threads` key (the tiny profile uses 1;
0 means all cores, as the demo profile does): a stage's CPU threads come from params, never from `--cores`, which
only decides how many jobs run side by side.

    python benchmarks/determinism.py --threads 0      # ≈ 6 minutes on 2 cores

Prints one row per compared run; results go to docs/reliability.md.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from kill_anywhere import (  # sibling script: the one output comparison
    REPO,
    outputs,
    project_env,
    same,
)

sys.path.insert(0, str(REPO / "tests"))
from conftest import copy_project  # the tiny profile the suite uses

THREADED = ("generator.train", "invert", "trajectories", "score", "evaluate", "report")


def set_threads(params: Path, threads: int) -> None:
    values = yaml.safe_load(params.read_text())
    for key in THREADED:
        section = values
        for part in key.split("."):
            section = section[part]
        section["threads"] = threads
    params.write_text(yaml.safe_dump(values, sort_keys=False))


def run(root: Path, cores: int, threads: int) -> float:
    set_threads(root / "params.yaml", threads)
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "snakemake", "--cores", str(cores), "all", "--quiet"], cwd=root,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=project_env(root), check=False)
    if done.returncode != 0:
        sys.exit(f"snakemake --cores {cores} in {root} failed:\n{done.stderr[-3000:]}")
    return time.monotonic() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=0, help="every stage's threads key (0: all cores)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sgilo-determinism-") as tmp:
        pristine = copy_project(Path(tmp) / "pristine")  # one snapshot of the code for every run
        reference = shutil.copytree(pristine, Path(tmp) / "reference")
        seconds = run(reference, 2, args.threads)
        expected = [p.relative_to(reference) for p in outputs(reference)]
        print(f"reference (--cores 2, threads {args.threads}): {seconds:.0f} s, {len(expected)} outputs compared")
        print("| run | seconds | outputs compared | differing or missing | table1.csv identical (but its seconds) |")
        print("|---|---|---|---|---|")
        failures = 0
        for name, cores in (("again, --cores 2", 2), ("--cores 1", 1)):
            root = shutil.copytree(pristine, Path(tmp) / name.replace(" ", "").replace(",", "-"))
            seconds = run(root, cores, args.threads)
            produced = [p.relative_to(root) for p in outputs(root)]
            differing = sorted(set(produced) ^ set(expected)) + [p for p in expected if (root / p).exists() and not same(reference / p, root / p)]
            table = Path("results/table1.csv")
            table_same = same(reference / table, root / table)
            failures += bool(differing) or not table_same
            if differing:
                print(f"{name}: differs or missing: {[str(p) for p in differing]}", file=sys.stderr)
            print(f"| {name} | {seconds:.0f} | {len(expected)} | {len(differing)} | {table_same} |", flush=True)
        sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
