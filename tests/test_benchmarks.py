"""The benchmark scripts start as documented (`python benchmarks/<name>.py`): a script named after a package would
shadow it for every other script in the folder, which is how benchmarks/sgilo.py once broke them all."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.mark.parametrize("script", sorted(p.name for p in BENCHMARKS.glob("*.py") if not p.name.startswith("_")))
def test_benchmark_script_starts(script):
    result = subprocess.run([sys.executable, str(BENCHMARKS / script), "--help"], check=False, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "usage:" in result.stdout
