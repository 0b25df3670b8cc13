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
