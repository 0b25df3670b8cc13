"""The benchmark scripts start as documented (`python benchmarks/<name>.py`). Their folder comes first on sys.path,
so a script named after a package would shadow it for every other script there, which is how a
benchmarks/sgilo.py once broke them all. Every script starts here at toy sizes (`--smoke`), so that none of
docs/benchmarks.md's commands can rot unseen."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "benchmarks"


def positive(cells: list[str]) -> bool:
    return all(float(cell) > 0 for cell in cells)


def within_the_fixture_tolerance(cells: list[str]) -> bool:
    return all(float(cell) <= 1e-3 for cell in cells)  # tests/test_stylegan2.py's TOLERANCE


def verdicts(targeted: list[bool]) -> Callable[[list[str]], bool]:
    """A verdict (yes, or a bold no) on the rows with a target, and none on the others."""
    return lambda cells: (
        [cell != "–" for cell in cells] == targeted and all(cell in ("yes", "**no**", "–") for cell in cells)
    )


# The smoke command of each script, as its docstring gives it → the tables it must print: columns it must have, and
# for some columns the cells of its rows in order, or a check of them (the device columns are left out: they say cuda
# on a GPU).
SMOKE_RUNS = {
    ("generator.py", "--smoke"): [{"size": ["16"], "batch": ["1"], "dtype": ["fp32"], "images/s": positive}],
    ("gan_step.py", "--smoke"): [
        {"part": None, "calls per step": ["1", "0.5", "1", "1"], "ms per step": None, "share of the step": None},
        {"op": None, "self ms per step": None},
    ],
    ("inversion.py", "--smoke"): [
        {"config": ["demo", "demo"], "batch": ["1", "2"], "image·steps/s": positive, "PSNR": None, "speed-up": None}
    ],
    ("inversion_quality.py", "--smoke"): [
        {
            "task": ["inpaint"] * 3 + ["cs"] * 3,
            "method": ["csgm", "ilo", "ilo-unconstrained"] * 2,
            "PSNR (dB)": None,
            "SSIM": None,
        }
    ],
    ("score.py", "--smoke"): [
        {"config": ["toy"], "batch": ["2"], "samples/s": positive, "loss": positive},
        {"sampler": ["reverse SDE", "PF ODE"], "score evals": positive, "latents/s": positive},
    ],
    ("posterior.py", "--smoke"): [
        {
            "chains": ["1", "2", "2"],
            "warm start": ["shared", "per_chain", "shared"],
            "s per image": positive,
            "measurement MSE": positive,
        }
    ],
    ("prior_samples.py", "--smoke"): [
        {
            "set": ["inverted latents (second half)", "generator latents (second set)", "untrained toy prior"],
            "SWD to inverted latents": positive,
            "SWD to generator latents": positive,
        }
    ],
    ("determinism.py", "--smoke"): [
        {
            "run": ["again, --cores 2", "--cores 1", "threads 2, --cores 2 (not a failure)"],
            "differing or missing": ["0", "0", "0"],
        }
    ],
    ("kill_anywhere.py", "--smoke"): [
        {"trial": ["0"], "rerun": ["exit 0"], "outputs identical": ["True"], "partial files left": ["0"]}
    ],
    ("kill_anywhere.py", "--smoke", "--per-stage"): [
        {"stage": ["download"], "trials identical": ["1/1"], "temporary files left": ["0"]}
    ],
    ("workflow.py", "--smoke"): [
        {
            "what": [
                "no-op `snakemake -n download` (tiny profile, finished)",
                "FFHQ profile plan, SLURM profile (238 jobs)",
                "`sgilo dvc-sync --check` (tiny profile)",
            ],
            "median s": positive,
        }
    ],
    ("job_startup.py", "--smoke"): [
        {
            "imports": ["sgilo.stages.download"],
            "process wall s": positive,
            "stage module s": positive,
            "torch s": positive,
        }
    ],
    ("stage_threads.py", "--smoke"): [
        {"rule": ["download", "download"], "threads": ["1", "2"], "jobs": ["1", "1"], "wall s": positive}
    ],
    ("speed.py", "--smoke"): [
        {
            "measure": [
                "GEMM 256²",
                "generator fwd+bwd",
                "ILO step, layer 0, noise",
                "ILO step, layer 3, noise",
                "LPIPS-squeeze fwd+bwd (256²)",
                "ILO step, layer 0, noise, LPIPS-squeeze",
                "ILO step, layer 3, noise, LPIPS-squeeze",
                "ILO step, layer 0, noise",
                "ILO step, layer 0, noise",
                "ScoreViT 0M fwd+bwd",
                "SGILO Langevin step, layer 2",
            ],
            "batch": ["1", "1", "1", "1", "1", "1", "1", "1", "2", "2", "1"],
            "s/step": positive,
            "met": verdicts([False, True, True, True, False, True, True, False, True, False, False]),
        }
    ],
    ("stylegan2_reference.py", "--smoke"): [
        {
            "entry": ["s32.w", "s32.image", "s32.image_trunc"],
            "shape": ["2×64", "2×3×32×32", "2×3×32×32"],
            "max abs error, ours": within_the_fixture_tolerance,
        }
    ],
}
# Started at toy sizes by their own tests below, with checks of their own.
STARTED_BY_OWN_TESTS = {"precision.py", "memory.py"}


def benchmark(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """`python benchmarks/<args>` from the project root, as docs/benchmarks.md gives the commands."""
    return subprocess.run(
        [sys.executable, str(BENCHMARKS / args[0]), *args[1:]],
        cwd=REPO,
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def tables(stdout: str) -> list[tuple[list[str], list[list[str]]]]:
    """Each Markdown table printed: (header cells, rows of cells), the separator line left out."""
    found, block = [], []
    for line in [*stdout.splitlines(), ""]:
        if line.startswith("|"):
            block.append([cell.strip() for cell in line.strip()[1:-1].split("|")])
        elif block:
            found.append((block[0], block[2:]))
            block = []
    return found


def test_no_benchmark_script_shadows_a_package_the_scripts_import():
    imported = {"sgilo", "torch", "numpy", "pandas", "snakemake", "conftest"}
    assert not imported & {p.stem for p in BENCHMARKS.glob("*.py")}


def test_every_script_starts_in_the_suite():
    scripts = {p.name for p in BENCHMARKS.glob("*.py") if not p.name.startswith("_")}
    assert scripts == {command[0] for command in SMOKE_RUNS} | STARTED_BY_OWN_TESTS


@pytest.mark.parametrize("command", list(SMOKE_RUNS), ids=" ".join)
def test_smoke_run_prints_its_tables(command):
    assert f"python benchmarks/{' '.join(command)} " in (BENCHMARKS / command[0]).read_text(), (
        "the docstring gives the command"
    )
    result = benchmark(*command)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "SMOKE RUN" in result.stdout and "its numbers mean nothing" in result.stdout
    printed = tables(result.stdout)
    assert len(printed) == len(SMOKE_RUNS[command]), result.stdout
    for (header, rows), expected in zip(printed, SMOKE_RUNS[command]):
        assert set(expected) <= set(header), f"{header} lacks {set(expected) - set(header)}"
        assert rows and all(len(row) == len(header) for row in rows), result.stdout
        for column, cells in expected.items():
            shown = [row[header.index(column)] for row in rows]
            assert all(cell not in ("", "nan", "OOM") for cell in shown), f"{column}: {shown}"
            assert cells is None or (cells(shown) if callable(cells) else shown == cells), f"{column}: {shown}"


@pytest.mark.parametrize(
    ("code", "clone"),
    [
        ("nvidia", "git clone https://github.com/NVlabs/stylegan2-ada-pytorch"),
        ("rosinality", "git clone https://github.com/rosinality/stylegan2-pytorch"),
    ],
)
def test_the_reference_script_says_what_to_clone_when_the_checkout_is_missing(tmp_path, code, clone):
    checkout = tmp_path / "not-cloned"
    result = benchmark("stylegan2_reference.py", f"--{code}", str(checkout))
    assert (
        result.returncode == 2
        and clone in result.stderr
        and f"{checkout} && git -C {checkout} checkout " in result.stderr
    ), result.stderr
    assert "no " in result.stderr and "there" in result.stderr and not result.stdout


def test_precision_benchmark_runs_and_says_what_auto_resolves_to():
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / "precision.py"), "--smoke"],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "capability" in result.stdout and "precision auto → " in result.stdout
    rows = [
        line.split("|")[1:-1] for line in result.stdout.splitlines() if line.startswith("| ") and "---" not in line
    ][1:]
    assert [row[0].split()[0] for row in rows] == ["matmul", "matmul", "conv"]
    assert all(float(row[2]) > 0 for row in rows) and all(float(row[4]) > 0 for row in rows[1:])


def test_prior_samples_compares_models_with_both_references(tmp_path):
    from conftest import shard_paths, tiny_workspace

    root = tiny_workspace(tmp_path, upto="score")
    figure = tmp_path / "prior.png"
    result = subprocess.run(
        [
            sys.executable,
            str(BENCHMARKS / "prior_samples.py"),
            "--generator",
            str(root / "generator.pt"),
            "--latents",
            *(str(path) for path in shard_paths(root / "params.yaml", root / "invert")),
            "--models",
            str(root / "score" / "model.pt"),
            "--names",
            "tiny",
            "--samples",
            "4",
            "--steps",
            "3",
            "--shown",
            "2",
            "--figure",
            str(figure),
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [
        line.split("|")[1:-1] for line in result.stdout.splitlines() if line.startswith("| ") and "---" not in line
    ][1:]
    assert [row[0].strip() for row in rows] == [
        "inverted latents (second half)",
        "generator latents (second set)",
        "tiny",
    ]
    assert all(float(cell) >= 0 for row in rows for cell in row[1:3])
    assert figure.stat().st_size > 0
    too_many = subprocess.run(
        [
            sys.executable,
            str(BENCHMARKS / "prior_samples.py"),
            "--generator",
            str(root / "generator.pt"),
            "--latents",
            *(str(path) for path in shard_paths(root / "params.yaml", root / "invert")),
            "--models",
            str(root / "score" / "model.pt"),
            "--samples",
            "7",
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert too_many.returncode == 2 and "--samples may be at most 6" in too_many.stderr


def test_memory_benchmark_runs_each_stage_at_n_and_4n():
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / "memory.py"), "--smoke"],
        check=False,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "capability" in result.stdout
    rows = [
        line.split("|")[1:-1] for line in result.stdout.splitlines() if line.startswith("| ") and "---" not in line
    ][1:]
    assert [row[0].strip() for row in rows] == ["trajectories (scaling)", "trajectories shard (largest)", "score"]
    assert all(float(row[1]) > 0 and float(row[2]) > 0 for row in rows)
