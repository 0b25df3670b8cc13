"""Freed memory is reused: a loop of large allocations page-faults once, not at every step (sgilo.allocator)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import run_stage

# Steps that each allocate, fill and free 256 MiB, as a 1024² generator step does with its activations; prints the
# minor page faults that ten of them took after a warm-up.
LOOP = """
import resource, sys, torch
from sgilo.allocator import retain_freed_memory
print(retain_freed_memory(), file=sys.stderr)
for _ in range(10):  # warm-up: the heap settles (64-byte-aligned blocks need a few rounds to find reusable room)
    x = torch.empty(2**26).fill_(1.0)
    del x
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    x = torch.empty(2**26).fill_(1.0)
    del x
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(setting: str | None) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if k != "SGILO_MALLOC"} | ({"SGILO_MALLOC": setting} if setting else {})
    result = subprocess.run(
        [sys.executable, "-c", LOOP], env=env, capture_output=True, text=True, check=True, timeout=120
    )
    return int(result.stdout), result.stderr.strip()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_large_allocations_are_reused_instead_of_faulted_in_again():
    retained, how = _faults(None)
    system, how_system = _faults("system")
    if how == "unavailable":
        pytest.skip("this C library has no glibc mallopt")
    assert (how, how_system) == ("retain", "system")
    pages = 10 * 2**28 // os.sysconf("SC_PAGE_SIZE")
    assert system > 0.5 * pages, f"the C library's defaults took only {system} faults for {pages} fresh pages"
    assert retained < 0.3 * pages, f"{retained} page faults for 10 reused 256 MiB blocks"


def test_an_unknown_setting_stops_a_stage_naming_the_variable(tmp_path, tiny_params):
    env = os.environ.copy()
    os.environ["SGILO_MALLOC"] = "jemalloc"
    try:
        result = run_stage(
            "download", "--params", str(tiny_params), "--out", str(tmp_path / "d"), cwd=tmp_path, check=False
        )
    finally:
        os.environ.clear()
        os.environ.update(env)
    assert result.returncode == 2 and "SGILO_MALLOC='jemalloc'" in result.stderr and "Traceback" not in result.stderr
