"""Atomic writes: nothing half-written under an output's name, and nothing left behind by a killed writer."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from sgilo.io import atomic_open


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    dest = tmp_path / "table.csv"
    dest.write_text("old")
    with pytest.raises(RuntimeError), atomic_open(dest) as handle:
        handle.write("half")
        raise RuntimeError("killed halfway")
    assert dest.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["table.csv"]


def test_the_temporary_of_a_writer_killed_with_sigkill_is_removed_by_the_next_write(tmp_path):
    dest = tmp_path / "model [1].pt"  # glob metacharacters in the name must not matter
    code = ("import sys, time\nfrom sgilo.io import atomic_open\n"
            "with atomic_open(sys.argv[1]) as h:\n    h.write('half'); h.flush(); print('writing', flush=True); time.sleep(60)\n")
    writer = subprocess.Popen([sys.executable, "-c", code, str(dest)], stdout=subprocess.PIPE, text=True)
    assert writer.stdout.readline().strip() == "writing"
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    left = [p.name for p in tmp_path.iterdir()]
    assert len(left) == 1 and left[0].startswith(".model [1].pt.") and not dest.exists()  # SIGKILL: no cleanup ran
    with atomic_open(dest) as handle:
        handle.write("whole")
    assert dest.read_text() == "whole" and [p.name for p in tmp_path.iterdir()] == [dest.name]
