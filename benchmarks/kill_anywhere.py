"""Kill the whole workflow anywhere with SIGKILL, rerun it, and compare every output with an uninterrupted run.

Issue 8's "kill anywhere" on the tiny profile (tests/conftest.py's TINY, every stage in seconds): a reference
`snakemake --cores 2 all` in one copy of the project; then, per trial, a fresh copy whose `snakemake` process group
is killed with SIGKILL at a random moment of the run (seeded per trial), the jobs that were running read from
Snakemake's incomplete-output markers, and, as a user recovers, `snakemake --unlock` (the killed run's lock stays)
and `snakemake --cores 2 all --rerun-incomplete` run to the end. Every output is then compared with the reference:
tensors (safetensors, torch checkpoints) and tables exactly, with the wall-clock fields (seconds, images per second)
and the generator's resumed_from_step left out; plots, report.md and table1.html are built from those
and not compared.

--per-stage kills each stage on its own: in a copy of the finished reference, the stage's outputs are deleted and its
jobs rerun once uninterrupted (timed from their start), then per trial killed twice, at random points of its jobs' run
(the second kill hits the run that resumed after the first), and finished; again every output is compared.

    python benchmarks/kill_anywhere.py --trials 6          # the runs and their times: docs/reliability.md
    python benchmarks/kill_anywhere.py --per-stage --trials 2    # each stage killed twice per trial (docs/reliability.md)
    python benchmarks/kill_anywhere.py --smoke                   # 1 trial, the download stage only: checks that it runs
    python benchmarks/kill_anywhere.py --smoke --per-stage       # the download stage, killed twice in 1 trial

The smoke run builds `snakemake download` in place of `all` (with --per-stage: kills the download stage only); its
kills may come before the stage's job or after it.
Each run copies the project once and runs every copy on that snapshot's code (PYTHONPATH), so editing the checkout
meanwhile changes nothing. Prints one row per trial (per stage); results go to docs/reliability.md.
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
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import torch

from _common import add_smoke, smoke_run

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from sgilo.io import load_safetensors

from conftest import copy_project  # the tiny profile the suite uses

# Wall-clock fields and the generator's resume provenance (resumed_from_step): the only ones allowed to differ.
TIMING = ("seconds", "per_s", "resumed")
SMOKE_TARGETS = ["download"]  # --smoke's (here and in determinism.py): the first rule, seconds on the tiny profile


def project_env(root: Path) -> dict[str, str]:
    """The environment for running a copy's workflow on the copy's own code: the editable install would import this
    checkout's src/, which may change while a benchmark runs."""
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(root / "src"), os.environ.get("PYTHONPATH")])),
    }


def snakemake(root: Path, *extra: str, log: Path | None = None, targets: Sequence[str] = ("all",)) -> subprocess.Popen:
    command = [sys.executable, "-m", "snakemake", "--cores", "2", *targets, "--quiet", *extra]
    err = open(log, "w") if log else subprocess.DEVNULL  # noqa: SIM115 (the child owns it)
    return subprocess.Popen(
        command, cwd=root, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True, env=project_env(root)
    )


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
    """Every data file and every result but the plots, report.md and table1.html (drawn from the compared numbers;
    the HTML table also shows seconds per image, a wall-clock field)."""
    found = [p for folder in ("data", "results") for p in (root / folder).rglob("*") if p.is_file()]
    return sorted(
        p
        for p in found
        if "resume" not in p.parts
        and not (p.parts[len(root.parts)] == "results" and p.suffix in (".png", ".md", ".html"))
    )


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


def differences(reference: Path, root: Path, expected: list[Path]) -> list[Path]:
    """Outputs missing, extra or not the same as the reference's."""
    produced = [p.relative_to(root) for p in outputs(root)]
    return sorted(set(produced) ^ set(expected)) + [
        p for p in expected if (root / p).exists() and not same(reference / p, root / p)
    ]


def leftovers(root: Path) -> list[Path]:
    """Temporary files of killed writers (sgilo.io.atomic_path names them .<name>.*.tmp)."""
    return [
        p
        for folder in ("data", "results")
        for p in (root / folder).rglob("*")
        if p.is_file() and (".tmp" in p.name or p.name.startswith("."))
    ]


def first_job(run: subprocess.Popen, root: Path) -> float:
    """Wait until the run starts its first job (Snakemake marks its outputs incomplete); the time that took."""
    started = time.monotonic()
    while run.poll() is None and not incomplete_outputs(root):
        time.sleep(0.02)
    return time.monotonic() - started


def kill_at(
    root: Path, delay: float, targets: Sequence[str], *extra: str, after_first_job: bool = False
) -> tuple[list[str], bool]:
    """Run the workflow for `targets`; SIGKILL its process group `delay` seconds in (counted from its first job's start
    with `after_first_job`), unless it ends first, and release its lock as a user would. Returns the outputs it had
    marked incomplete (the jobs the kill interrupted) and whether it was killed; the user then reruns with
    --rerun-incomplete."""
    run = snakemake(root, *extra, targets=targets)
    if after_first_job:
        first_job(run, root)
    try:
        run.wait(timeout=delay)
        killed = False
    except subprocess.TimeoutExpired:
        os.killpg(run.pid, signal.SIGKILL)
        run.wait()
        killed = True
    interrupted = incomplete_outputs(root)
    snakemake(root, "--unlock", targets=targets).wait()
    return interrupted, killed


def per_stage(args: argparse.Namespace, tmp: Path, pristine: Path, reference: Path, expected: list[Path]) -> int:
    """Each stage on its own: delete its outputs from a copy of the finished reference, time its rerun, then per trial
    kill it twice at random points (the second kill hits the resumed run) and finish it; compare every output."""
    by_stage: dict[str, list[str]] = defaultdict(list)
    for path in expected:
        by_stage[stage_of(str(path))].append(str(path))
    print(
        "| stage | outputs deleted | uninterrupted rerun (its jobs) | kills | kills that hit a running job | trials identical | temporary files left |"
    )
    print("|---|---|---|---|---|---|---|")
    failures = 0
    for stage in [s for s in args.stages or by_stage if s in by_stage]:
        deleted = by_stage[stage]
        # The download rule's one declared output is the index; its images are rendered beside it.
        targets = [p for p in deleted if stage != "download" or p.endswith("index.csv")]
        clean = shutil.copytree(reference, tmp / f"{stage}-clean")
        for path in deleted:
            (clean / path).unlink()
        run = snakemake(clean, targets=targets)
        first_job(run, clean)
        started = time.monotonic()
        rc = run.wait()
        duration = time.monotonic() - started  # from its first job's start to the end
        clean_same = rc == 0 and not differences(reference, clean, expected)
        identical, hits, kills, left = 0, 0, 0, 0
        shutil.rmtree(clean)
        for trial in range(args.trials):
            root = shutil.copytree(reference, tmp / f"{stage}-{trial}")
            for path in deleted:
                (root / path).unlink()
            rng = random.Random(f"{args.seed}/{stage}/{trial}")
            left_to_run = duration
            for extra in ((), ("--rerun-incomplete",)):
                # Somewhere in the jobs' run; the second kill within what is left of it if the first's work is kept.
                delay = rng.uniform(0.05, 0.95) * left_to_run
                interrupted, killed = kill_at(root, delay, targets, *extra, after_first_job=True)
                left_to_run -= delay
                hits += bool(interrupted)
                kills += killed
            log = tmp / f"{stage}-{trial}.log"
            rerun = snakemake(root, "--rerun-incomplete", targets=targets, log=log).wait()
            differing = differences(reference, root, expected)
            if rerun != 0 or differing:
                print(
                    f"{stage} trial {trial}: exit {rerun}, differs or missing: {[str(p) for p in differing]}\n{log.read_text()[-2000:]}",
                    file=sys.stderr,
                )
            identical += rerun == 0 and not differing
            left += len(leftovers(root))
            shutil.rmtree(root)
        failures += not clean_same or identical != args.trials or left > 0
        print(
            f"| {stage} | {len(deleted)} | {duration:.0f} s, {'identical' if clean_same else f'exit {rc} or different'} | {kills} | "
            f"{hits} | {identical}/{args.trials} | {left} |",
            flush=True,
        )
    return failures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--per-stage", action="store_true", help="kill each stage on its own, twice per trial")
    parser.add_argument("--stages", nargs="*", help="with --per-stage: only these stages (default: all)")
    parser.set_defaults(targets=["all"])
    add_smoke(parser)
    args = parser.parse_args()
    smoke_run(args, trials=1, targets=SMOKE_TARGETS)
    with tempfile.TemporaryDirectory(prefix="sgilo-kill-") as tmp:
        pristine = copy_project(Path(tmp) / "pristine")  # one snapshot of the code for every run
        reference = shutil.copytree(pristine, Path(tmp) / "reference")
        start = time.monotonic()
        if snakemake(reference, targets=args.targets).wait() != 0:
            sys.exit("the uninterrupted reference run failed")
        duration = time.monotonic() - start
        expected = [p.relative_to(reference) for p in outputs(reference)]
        print(
            f"reference: {duration:.0f} s, {len(expected)} outputs compared (plots, report.md and table1.html are derived)"
        )
        if args.per_stage:
            sys.exit(1 if per_stage(args, Path(tmp), pristine, reference, expected) else 0)
        print("| trial | killed at | interrupted outputs | rerun | outputs identical | partial files left |")
        print("|---|---|---|---|---|---|")
        stage_kills, failures = Counter(), 0
        for trial in range(args.trials):
            root = shutil.copytree(pristine, Path(tmp) / f"trial-{trial}")
            delay = random.Random(f"{args.seed}/{trial}").uniform(0.5, duration)
            interrupted, killed = kill_at(root, delay, args.targets)
            stage_kills.update({stage_of(p) for p in interrupted})
            rerun = snakemake(
                root, "--rerun-incomplete", log=root.parent / f"rerun-{trial}.log", targets=args.targets
            ).wait()
            if rerun != 0:
                print((root.parent / f"rerun-{trial}.log").read_text()[-3000:], file=sys.stderr)
            differing, left = differences(reference, root, expected), leftovers(root)
            identical = rerun == 0 and not differing
            if differing:
                print(f"trial {trial}: differs or missing: {[str(p) for p in differing]}", file=sys.stderr)
            failures += not identical or bool(left)
            stages = ", ".join(sorted({stage_of(p) for p in interrupted})) or "none"
            print(
                f"| {trial} | {f'{delay:.0f} s' if killed else 'finished first'} | {stages} ({len(interrupted)}) | exit {rerun} | {identical} | {len(left)} |",
                flush=True,
            )
            shutil.rmtree(root)
        print(f"\nkills per interrupted stage: {dict(sorted(stage_kills.items()))}; trials not identical: {failures}")
        sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
