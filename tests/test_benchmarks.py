"""The benchmark scripts start as documented (`python benchmarks/<name>.py`). Their folder comes first on sys.path,
so a script named after a package would shadow it for every other script there, which is how a
benchmarks/sgilo.py once broke them all."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_no_benchmark_script_shadows_a_package_the_scripts_import():
    imported = {"sgilo", "torch", "numpy", "pandas", "snakemake", "conftest"}
    assert not imported & {p.stem for p in BENCHMARKS.glob("*.py")}


def test_a_benchmark_script_starts():
    result = subprocess.run([sys.executable, str(BENCHMARKS / "generator.py"), "--help"], check=False, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "usage:" in result.stdout


def test_precision_benchmark_runs_and_says_what_auto_resolves_to():
    result = subprocess.run([sys.executable, str(BENCHMARKS / "precision.py"), "--smoke"], check=False, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "capability" in result.stdout and "precision auto → " in result.stdout
    rows = [line.split("|")[1:-1] for line in result.stdout.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert [row[0].split()[0] for row in rows] == ["matmul", "matmul", "conv"]
    assert all(float(row[2]) > 0 for row in rows) and all(float(row[4]) > 0 for row in rows[1:])


def test_prior_samples_compares_models_with_both_references(tmp_path):
    from conftest import tiny_workspace

    root = tiny_workspace(tmp_path, upto="score")
    figure = tmp_path / "prior.png"
    result = subprocess.run([sys.executable, str(BENCHMARKS / "prior_samples.py"), "--generator", str(root / "generator.pt"),
                             "--invert", str(root / "invert"), "--models", str(root / "score" / "model.pt"), "--names", "tiny",
                             "--samples", "4", "--steps", "3", "--shown", "2", "--figure", str(figure)],
                            check=False, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [line.split("|")[1:-1] for line in result.stdout.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert [row[0].strip() for row in rows] == ["inverted latents (second half)", "generator latents (second set)", "tiny"]
    assert all(float(cell) >= 0 for row in rows for cell in row[1:3])
    assert figure.stat().st_size > 0
    too_many = subprocess.run([sys.executable, str(BENCHMARKS / "prior_samples.py"), "--generator", str(root / "generator.pt"),
                               "--invert", str(root / "invert"), "--models", str(root / "score" / "model.pt"), "--samples", "7"],
                              check=False, capture_output=True, text=True, timeout=300)
    assert too_many.returncode == 2 and "--samples may be at most 6" in too_many.stderr


def test_memory_benchmark_runs_each_stage_at_n_and_4n():
    result = subprocess.run([sys.executable, str(BENCHMARKS / "memory.py"), "--smoke"], check=False, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "capability" in result.stdout
    rows = [line.split("|")[1:-1] for line in result.stdout.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert [row[0].strip() for row in rows] == ["trajectories --stats", "trajectories --shard (largest)", "score"]
    assert all(float(row[1]) > 0 and float(row[2]) > 0 for row in rows)
