"""Atomic writes and safe loading, shared by every stage.

A killed job must never leave a half-written file where a result is expected, so every artifact is written to
a temporary file in the destination folder and renamed into place (`os.replace` is atomic on POSIX). Every
checkpoint is read with `weights_only=True`: loading a file never runs code from it.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import hashlib
import io
import json
import logging
import math
import os
import pickle
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import safetensors
import safetensors.torch
import torch

log = logging.getLogger("sgilo")


class CheckpointError(ValueError):
    """A checkpoint that cannot be read; the message names the file and the fix."""


class DiskFullError(OSError):
    """A write ran out of space (or out of the file-size limit); the previous version of the file is intact."""

    def __str__(self) -> str:
        return str(self.strerror)  # the message alone, which names the file: no "[Errno 28]" in front


_NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


@contextlib.contextmanager
def atomic_path(dest: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `dest`; on success it is renamed to `dest`, on failure removed.

    A writer killed with SIGKILL cannot remove its temporary file, so the next write of the same `dest` removes it:
    one writer per output at a time, which Snakemake's lock on the working directory guarantees."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    for stale in dest.parent.glob(f".{glob.escape(dest.name)}.*.tmp"):
        stale.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, dest)
    except OSError as exc:
        if exc.errno not in _NO_SPACE or isinstance(exc, DiskFullError):
            raise
        state = "the previous version is intact" if dest.exists() else "nothing was written"
        raise DiskFullError(
            exc.errno,
            f"{dest}: out of disk space while writing it ({os.strerror(exc.errno)}); {state}. "
            f"Free space on the file system of {dest.parent} (or raise the file-size limit) and rerun",
        ) from exc
    finally:
        tmp_path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_open(dest: str | Path, mode: str = "w") -> Iterator[IO[Any]]:
    """Open a temporary file beside `dest` for writing; it replaces `dest` only if the block succeeds."""
    with atomic_path(dest) as tmp, open(tmp, mode) as handle:
        yield handle
        handle.flush()
        os.fsync(handle.fileno())


def save_torch(obj: Any, dest: str | Path) -> None:
    # Serialised in memory first: torch's file writer turns a full disk into a RuntimeError without its errno.
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    with atomic_open(dest, "wb") as handle:
        handle.write(buffer.getbuffer())


def save_json(obj: Any, dest: str | Path) -> None:
    with atomic_open(dest) as handle:
        json.dump(obj, handle, indent=2, sort_keys=True)
        handle.write("\n")


def load_torch(path: str | Path, safe_globals: list[Any] | None = None) -> Any:
    """`torch.load(weights_only=True)` with errors that name the file instead of a bare unpickling trace."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found; check the path or rerun the stage that writes it")
    try:
        with torch.serialization.safe_globals(safe_globals or []):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{path}: refused to load: it holds objects that are not plain tensors and containers ({exc}); "
            "only load checkpoints you trust, converted to a state dict"
        ) from exc
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        raise CheckpointError(
            f"{path}: truncated or corrupt checkpoint ({type(exc).__name__}: {exc}); delete it and rerun the "
            "stage that writes it, or download it again"
        ) from exc


def fingerprint(settings: dict[str, Any], *files: str | Path) -> str:
    """What a resume checkpoint must match: the settings (as sorted JSON) and the bytes of the input files."""
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for path in files:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def resume_batches(path: str | Path, fingerprint: str, what: str) -> list:
    """The finished batches of a partial checkpoint {"fingerprint", "batches"}; [] when there is none, or when it was
    made with other settings or inputs (then `what`, e.g. "the shard", starts again)."""
    path = Path(path)
    if not path.exists():
        return []
    state = load_torch(path)
    if state.get("fingerprint") != fingerprint:
        log.info("%s: made with other settings or inputs; starting %s again", path, what)
        return []
    log.info("%s: resuming after %d finished batches", path, len(state["batches"]))
    return list(state["batches"])


def discard_checkpoint(path: str | Path) -> None:
    """Remove a finished job's resume checkpoint, and its folder once no other job's checkpoint is left in it."""
    path = Path(path)
    path.unlink(missing_ok=True)
    try:
        path.parent.rmdir()
    except OSError:  # not empty (another shard's or cell's checkpoint) or already gone
        pass


def save_safetensors(
    tensors: dict[str, torch.Tensor], dest: str | Path, metadata: dict[str, str] | None = None
) -> None:
    """Tensors as safetensors (no code can hide in the file), atomically; the same tensors and metadata give the
    same bytes in any process."""
    # Serialised in memory first, as in save_torch: the Rust writer's error would hide the errno of a full disk.
    data = safetensors.torch.save({k: v.contiguous() for k, v in tensors.items()}, metadata=metadata)
    with atomic_open(dest, "wb") as handle:
        handle.write(_sorted_metadata(data))


def _sorted_metadata(data: bytes) -> bytes:
    """`data` with its header's __metadata__ keys in sorted order.

    safetensors writes them from a Rust HashMap, in an order that changes from process to process, so identical
    results would get a new hash (and DVC would rerun what depends on them). The header is JSON after an 8-byte
    little-endian length, padded with spaces to a multiple of 8 (the format's specification); the data offsets in
    it are relative to the data section, so rewriting the header moves nothing."""
    length = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + length])
    if not header.get("__metadata__"):
        return data
    header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + data[8 + length :]


def load_safetensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of a safetensors file; a damaged or foreign file raises CheckpointError naming it."""
    path = Path(path)
    try:
        with safetensors.safe_open(str(path), framework="pt") as handle:
            return {key: handle.get_tensor(key) for key in handle.keys()}, dict(handle.metadata() or {})  # noqa: SIM118 (safe_open is no dict)
    except (OSError, safetensors.SafetensorError) as exc:
        raise CheckpointError(
            f"{path}: not a readable safetensors file ({exc}); delete it and rerun the stage that writes it"
        ) from exc


# safetensors' dtype names (its documented header format) → torch dtypes
_SAFETENSORS_DTYPES = {
    "BOOL": torch.bool,
    "U8": torch.uint8,
    "I8": torch.int8,
    "I16": torch.int16,
    "I32": torch.int32,
    "I64": torch.int64,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "F32": torch.float32,
    "F64": torch.float64,
}


class ShardRows:
    """Rows of the same-named tensors of several safetensors files, read on demand, as one table of len(self) rows.

    Rows are read with `pread` at the offsets of each file's header; nothing is memory-mapped, so the process holds
    only what it asked for (the page cache holds the files, outside its RSS) and a data set of any size trains in
    the memory of one batch. Every file must hold the same keys, each with its rows along dim 0.
    """

    def __init__(self, paths: list[Path]):
        if not paths:
            raise ValueError("ShardRows needs at least one file")
        self.paths = [Path(p) for p in paths]
        self._files = []
        counts = []
        for path in self.paths:
            header, start = self._header(path)
            keys = sorted(k for k in header if k != "__metadata__")
            if self._files and keys != self.keys:
                raise CheckpointError(
                    f"{path}: keys {keys} differ from {self.paths[0]}'s {self.keys}; rerun the stage that writes it"
                )
            self.keys = keys
            rows = {header[k]["shape"][0] if header[k]["shape"] else 1 for k in keys}
            if len(rows) != 1:
                raise CheckpointError(f"{path}: its tensors have different row counts {sorted(rows)}")
            counts.append(rows.pop())
            end = start + max((header[k]["data_offsets"][1] for k in keys), default=0)
            if path.stat().st_size < end:
                raise CheckpointError(
                    f"{path}: not a readable safetensors file (truncated: {path.stat().st_size} of {end} bytes); "
                    "delete it and rerun the stage that writes it"
                )
            self._files.append((os.open(path, os.O_RDONLY), header, start))
        self.offsets = torch.tensor([0, *counts]).cumsum(0)

    @staticmethod
    def _header(path: Path) -> tuple[dict[str, Any], int]:
        try:
            with open(path, "rb") as handle:
                size = int.from_bytes(handle.read(8), "little")
                header = json.loads(handle.read(size))
        except (OSError, ValueError) as exc:
            raise CheckpointError(
                f"{path}: not a readable safetensors file ({exc}); delete it and rerun the stage that writes it"
            ) from exc
        if not isinstance(header, dict):
            raise CheckpointError(
                f"{path}: not a readable safetensors file (no header); delete it and rerun the stage that writes it"
            )
        return header, 8 + size

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __del__(self) -> None:
        for fd, _, _ in getattr(self, "_files", []):
            with contextlib.suppress(OSError):
                os.close(fd)

    def shape(self, key: str) -> tuple[int, ...]:
        """(len(self), *the shape of one row)."""
        return (len(self), *self._files[0][1][key]["shape"][1:])

    def rows(self, key: str, index: torch.Tensor) -> torch.Tensor:
        """Rows `index` (global row numbers, any order, repeats allowed) of tensor `key`, in that order."""
        index = torch.as_tensor(index, dtype=torch.int64).reshape(-1)
        if len(index) and (int(index.min()) < 0 or int(index.max()) >= len(self)):
            raise IndexError(f"row index out of range [0, {len(self)})")
        info = self._files[0][1][key]
        dtype, row_shape = _SAFETENSORS_DTYPES[info["dtype"]], info["shape"][1:]
        row_bytes = math.prod(row_shape) * torch.empty((), dtype=dtype).element_size()
        buffer = bytearray(len(index) * row_bytes)
        view = memoryview(buffer)
        shards = torch.searchsorted(self.offsets, index, right=True) - 1
        for position, (row, shard) in enumerate(zip(index.tolist(), shards.tolist())):
            fd, header, start = self._files[shard]
            offset = start + header[key]["data_offsets"][0] + (row - int(self.offsets[shard])) * row_bytes
            if os.preadv(fd, [view[position * row_bytes : (position + 1) * row_bytes]], offset) != row_bytes:
                raise CheckpointError(
                    f"{self.paths[shard]}: not a readable safetensors file (truncated at {key} row {row}); "
                    "delete it and rerun the stage that writes it"
                )
        if not buffer:
            return torch.empty((0, *row_shape), dtype=dtype)
        return torch.frombuffer(buffer, dtype=dtype).reshape(len(index), *row_shape)

    def column_part(self, key: str, shard: int) -> torch.Tensor:
        """All rows of `key` in file `shard`, in one read."""
        fd, header, start = self._files[shard]
        info = header[key]
        begin, end = info["data_offsets"]
        if end == begin:
            return torch.empty(info["shape"], dtype=_SAFETENSORS_DTYPES[info["dtype"]])
        data = os.pread(fd, end - begin, start + begin)
        if len(data) != end - begin:
            raise CheckpointError(
                f"{self.paths[shard]}: not a readable safetensors file (truncated at {key}); "
                "delete it and rerun the stage that writes it"
            )
        return torch.frombuffer(bytearray(data), dtype=_SAFETENSORS_DTYPES[info["dtype"]]).reshape(info["shape"])

    def column(self, key: str) -> torch.Tensor:
        """All rows of `key`, one read per file: for the small per-row tensors (ids, flags, times)."""
        return torch.cat([self.column_part(key, shard) for shard in range(len(self.paths))])
