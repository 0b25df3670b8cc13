"""Atomic writes: nothing half-written under an output's name, and nothing left behind by a killed writer."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sgilo.io import (
    CheckpointError,
    DiskFullError,
    ShardRows,
    atomic_open,
    load_safetensors,
    save_safetensors,
)


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    dest = tmp_path / "table.csv"
    dest.write_text("old")
    with pytest.raises(RuntimeError), atomic_open(dest) as handle:
        handle.write("half")
        raise RuntimeError("killed halfway")
    assert dest.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["table.csv"]


def test_the_temporary_of_a_writer_killed_with_sigkill_is_removed_by_the_next_write(tmp_path):
    dest = tmp_path / "model [1].pt"  # glob metacharacters in the name must not matter
    code = (
        "import sys, time\nfrom sgilo.io import atomic_open\n"
        "with atomic_open(sys.argv[1]) as h:\n    h.write('half'); h.flush(); print('writing', flush=True); time.sleep(60)\n"
    )
    writer = subprocess.Popen([sys.executable, "-c", code, str(dest)], stdout=subprocess.PIPE, text=True)
    assert writer.stdout.readline().strip() == "writing"
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    left = [p.name for p in tmp_path.iterdir()]
    assert len(left) == 1 and left[0].startswith(".model [1].pt.") and not dest.exists()  # SIGKILL: no cleanup ran
    with atomic_open(dest) as handle:
        handle.write("whole")
    assert dest.read_text() == "whole" and [p.name for p in tmp_path.iterdir()] == [dest.name]


# --------------------------------------------------------------------------------------------- full disk
_WRITERS = {  # each of sgilo.io's writers, writing `dest` with n random floats
    "safetensors": "save_safetensors({'x': torch.randn(n)}, dest, {'k': 'v'})",
    "torch": "save_torch({'x': torch.randn(n)}, dest)",
    "json": "save_json({'x': torch.randn(n).tolist()}, dest)",
    "parquet": "with atomic_path(dest) as tmp:\n    pd.DataFrame({'x': torch.randn(n).numpy()}).to_parquet(tmp)",
}
_PRELUDE = "import torch, pandas as pd\nfrom sgilo.io import atomic_path, save_json, save_safetensors, save_torch\n"


def test_a_write_past_the_space_left_keeps_the_previous_file_and_says_so(tmp_path):
    """Rewrites in a process whose files may not grow past 100 kB: the kernel fails the write (EFBIG) as a full
    disk fails it (ENOSPC)."""
    for name, writer in _WRITERS.items():
        exec(_PRELUDE + writer, {"dest": tmp_path / f"shard.{name}", "n": 1000})  # noqa: S102 (the fixed snippets above)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    code = (
        _PRELUDE + "import resource, signal, sys\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails instead of killing\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))\n"
        "for name, writer in eval(sys.argv[2]).items():\n"
        "    try:\n"
        "        exec(writer, {**globals(), 'dest': f'{sys.argv[1]}/shard.{name}', 'n': 200_000})\n"
        "    except Exception as exc:\n"
        "        print(name, type(exc).__name__, exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path), repr(_WRITERS)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    lines = done.stdout.splitlines()
    assert [line.split()[:2] for line in lines] == [[name, "DiskFullError"] for name in _WRITERS], (
        done.stdout + done.stderr
    )
    for name, line in zip(_WRITERS, lines):
        assert (
            f"shard.{name}: out of disk space while writing it" in line and "the previous version is intact" in line
        ), line
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # same files, same bytes, no temporaries


@pytest.fixture
def small_disk(tmp_path):
    """A real 1 MiB file system (tmpfs); needs the right to mount, else skipped."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True, check=False
        ).returncode
        != 0
    ):
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def test_a_full_disk_during_a_shard_write_keeps_the_previous_shard(small_disk):
    dest = small_disk / "shards" / "shard-00000.safetensors"
    save_safetensors({"x": torch.arange(100_000, dtype=torch.float32)}, dest)  # 400 kB of the 1 MiB
    before = dest.read_bytes()
    # A rewrite needs room for the old file and the new one until the rename: 400 kB + 800 kB does not fit.
    with pytest.raises(
        DiskFullError, match=r"shard-00000.safetensors: out of disk space.*No space left.*previous version is intact"
    ):
        save_safetensors({"x": torch.zeros(200_000)}, dest)
    assert dest.read_bytes() == before and [p.name for p in dest.parent.iterdir()] == [dest.name]
    save_safetensors({"x": torch.zeros(20_000)}, dest)  # once there is room again, writing works
    assert load_safetensors(dest)[0]["x"].shape == (20_000,)


# ------------------------------------------------------------------------------------------ untrusted files
def test_every_load_in_the_package_is_weights_only_or_the_restricted_unpickler():
    """No code path loads a pickle that could run code: torch.load always with weights_only=True, pickle only
    through nvidia_pickle's RestrictedUnpickler, no numpy allow_pickle, no archive extraction."""
    import ast

    src = Path(__file__).resolve().parents[1] / "src" / "sgilo"
    loads, offenders = 0, []
    for path in sorted(src.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call):
                continue
            name = ast.unparse(node.func)
            keywords = {k.arg: ast.unparse(k.value) for k in node.keywords}
            where = f"{path.relative_to(src)}:{node.lineno} {name}"
            if name == "torch.load":
                loads += 1
                if keywords.get("weights_only") != "True":
                    offenders.append(where)
            elif (
                name
                in (
                    "pickle.load",
                    "pickle.loads",
                    "pickle.Unpickler",
                    "dill.load",
                    "joblib.load",
                    "extractall",
                    "shutil.unpack_archive",
                )
                or name.endswith((".extractall", ".unpack_archive"))
                or keywords.get("allow_pickle") == "True"
            ):
                offenders.append(where)
    assert loads >= 2 and offenders == []


def test_shard_rows_reads_any_rows_of_several_files_as_one_table(tmp_path):
    gen = torch.Generator().manual_seed(0)
    shards = [
        {
            "x": torch.randn(n, 3, 2, generator=gen).to(dtype),
            "t": torch.rand(n, generator=gen),
            "flag": torch.rand(n, generator=gen) > 0.5,
            "ids": torch.arange(n) + 10 * k,
        }
        for k, (n, dtype) in enumerate([(5, torch.bfloat16), (0, torch.bfloat16), (3, torch.bfloat16)])
    ]
    paths = [tmp_path / f"shard-{k}.safetensors" for k in range(len(shards))]
    for shard, path in zip(shards, paths):
        save_safetensors(shard, path)
    rows = ShardRows(paths)
    whole = {key: torch.cat([s[key] for s in shards]) for key in shards[0]}
    index = torch.tensor([7, 0, 3, 5, 5, 1])
    assert len(rows) == 8 and rows.shape("x") == (8, 3, 2)
    for key, value in whole.items():
        assert torch.equal(rows.rows(key, index), value[index]), key
        assert torch.equal(rows.column(key), value), key
    assert rows.rows("x", torch.tensor([], dtype=torch.int64)).shape == (0, 3, 2)
    with pytest.raises(IndexError):
        rows.rows("t", torch.tensor([8]))
    paths[2].write_bytes(paths[2].read_bytes()[:-20])
    with pytest.raises(CheckpointError, match="shard-2"):
        ShardRows(paths).rows("x", torch.tensor([7]))


def test_the_same_tensors_and_metadata_give_the_same_bytes_in_every_process(tmp_path):
    """safetensors orders the metadata keys differently in each process; DVC hashes bytes, so identical results must
    be identical files."""
    metadata = {f"key{i}": f"value {i}" for i in (3, 7, 1, 5, 0, 6, 2, 4)} | {"note": "ünïcode ✓"}
    script = (
        "import sys, torch\nfrom sgilo.io import save_safetensors\n"
        "save_safetensors({'b': torch.arange(5.0), 'a': torch.ones(5, 3, dtype=torch.bfloat16)}, sys.argv[1], "
        f"{metadata!r})\n"
    )
    files = [tmp_path / f"run{i}.safetensors" for i in range(3)]
    for path in files:
        subprocess.run([sys.executable, "-c", script, str(path)], check=True)
    assert files[0].read_bytes() == files[1].read_bytes() == files[2].read_bytes()
    tensors, read = load_safetensors(files[0])
    assert read == metadata and torch.equal(tensors["b"], torch.arange(5.0)) and tensors["a"].dtype == torch.bfloat16
    assert ShardRows([files[0]]).rows("b", torch.tensor([4, 0])).tolist() == [4.0, 0.0]  # its own header reader too
