"""Kill the whole workflow anywhere with SIGKILL, rerun it, and compare every output with an uninterrupted run.

Issue 8's "kill anywhere" on the tiny profile (tests/conftest.py's TINY, every stage in seconds): a reference
`snakemake --cores 2 all` in one copy of the project; then, per trial, a fresh copy whose `snakemake` process group
is killed with SIGKILL at a random moment of the run (seeded per trial), the jobs that were running read from
Snakemake's incomplete-output markers, and, as a user recovers, `snakemake --unlock` (the killed run's lock stays)
and `snakemake --cores 2 all --rerun-incomplete` run to the end. Every
output is then compared with the reference: tensors (safetensors, torch checkpoints) and tables exactly, with the
wall-clock fields (seconds, images per second) left out; plots and report.md are built from those and not compared.

    python benchmarks/kill_anywhere.py --trials 6          # ≈ 8 minutes on 2 cores

Prints one row per trial and the totals per interrupted stage; results go to docs/reliability.md.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import pandas as pd
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from conftest import copy_project  # the tiny profile the suite uses

from sgilo.io import load_safetensors

TIMING = ("seconds", "per_s")  # wall-clock fields: the only ones allowed to differ


def snakemake(root: Path, *extra: str, log: Path | None = None) -> subprocess.Popen:
    command = [sys.executable, "-m", "snakemake", "--cores", "2", "all", "--quiet", *extra]
    err = open(log, "w") if log else subprocess.DEVNULL  # noqa: SIM115 (the child owns it)
    return subprocess.Popen(command, cwd=root, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)


def incomplete_outputs(root: Path) -> list[str]:
    """Outputs Snakemake had marked as being written when the run died (url-safe base64 names, long ones split
    into folders)."""
    folder = root / ".snakemake" / "incomplete"
    names = []
    for marker in folder.rglob("*") if folder.exists() else []:
        if marker.is_file():
            encoded = "".join(marker.relative_to(folder).parts)
            try:
                names.append(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode())
            except ValueError:
                names.append(encoded)
    return sorted(names)


def stage_of(path: str) -> str:
    parts = Path(path).parts
    if parts[0] != "results":
        return "download"
    if len(parts) == 2 or parts[1] == "figures":
        return "report"
    return f"theory_{Path(path).stem}" if parts[1] == "theory" else parts[1]


def outputs(root: Path) -> list[Path]:
    """Every data file and every result but the plots and report.md (drawn from the compared numbers)."""
    found = [p for folder in ("data", "results") for p in (root / folder).rglob("*") if p.is_file()]
    return sorted(p for p in found if "resume" not in p.parts and not (p.parts[len(root.parts)] == "results" and p.suffix in (".png", ".md")))


def _strip(value):
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if not any(t in k for t in TIMING)}
    return [_strip(v) for v in value] if isinstance(value, list) else value


def _tensors_equal(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_tensors_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_tensors_equal(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def same(a: Path, b: Path) -> bool:
    if a.suffix == ".safetensors":
        (ta, ma), (tb, mb) = load_safetensors(a), load_safetensors(b)
        return _tensors_equal(ta, tb) and ma == mb
    if a.suffix == ".pt":
        return _tensors_equal(torch.load(a, weights_only=True), torch.load(b, weights_only=True))
    if a.suffix in (".csv", ".parquet"):
        read = pd.read_csv if a.suffix == ".csv" else pd.read_parquet
        da, db = read(a), read(b)
        keep = [c for c in da.columns if not any(t in c for t in TIMING)]
        return list(da.columns) == list(db.columns) and da[keep].equals(db[keep])
    if a.suffix == ".json":
        return _strip(json.loads(a.read_text())) == _strip(json.loads(b.read_text()))
    return a.read_bytes() == b.read_bytes()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sgilo-kill-") as tmp:
        reference = copy_project(Path(tmp) / "reference")
        start = time.monotonic()
        if snakemake(reference).wait() != 0:
            sys.exit("the uninterrupted reference run failed")
        duration = time.monotonic() - start
        expected = [p.relative_to(reference) for p in outputs(reference)]
        print(f"reference: {duration:.0f} s, {len(expected)} outputs compared (plots and report.md are derived)")
        print("| trial | killed at | interrupted outputs | rerun | outputs identical | partial files left |")
        print("|---|---|---|---|---|---|")
        per_stage, failures = Counter(), 0
        for trial in range(args.trials):
            root = copy_project(Path(tmp) / f"trial-{trial}")
            delay = random.Random(f"{args.seed}/{trial}").uniform(0.5, duration)
            run = snakemake(root)
            try:
                run.wait(timeout=delay)
                killed = "finished first"
            except subprocess.TimeoutExpired:
                os.killpg(run.pid, signal.SIGKILL)
                run.wait()
                killed = f"{delay:.0f} s"
            interrupted = incomplete_outputs(root)
            per_stage.update({stage_of(p) for p in interrupted})
            # what a user does after a killed run: release Snakemake's lock, then rerun the interrupted jobs
            snakemake(root, "--unlock").wait()
            rerun = snakemake(root, "--rerun-incomplete", log=root.parent / f"rerun-{trial}.log").wait()
            if rerun != 0:
                print((root.parent / f"rerun-{trial}.log").read_text()[-3000:], file=sys.stderr)
            produced = [p.relative_to(root) for p in outputs(root)]
            leftovers = [p for p in produced if ".tmp" in p.name or p.name.startswith(".")]
            differing = sorted(set(produced) ^ set(expected)) + [p for p in expected if (root / p).exists() and not same(reference / p, root / p)]
            identical = rerun == 0 and not differing
            if differing:
                print(f"trial {trial}: differs or missing: {[str(p) for p in differing]}", file=sys.stderr)
            failures += not identical or bool(leftovers)
            stages = ", ".join(sorted({stage_of(p) for p in interrupted})) or "none"
            print(f"| {trial} | {killed} | {stages} ({len(interrupted)}) | exit {rerun} | {identical} | {len(leftovers)} |", flush=True)
            shutil.rmtree(root)
        print(f"\nkills per interrupted stage: {dict(sorted(per_stage.items()))}; trials not identical: {failures}")
        sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
