"""Download FFHQ (Flickr-Faces-HQ: 70,000 aligned faces) as described by its official metadata.

The metadata `ffhq-dataset-v1.json` (267,793,842 bytes, md5 425ae20f06a4da1d4dc0f46d40ba5fd6) maps "0".."69999"
to entries with a `category` ("training" for ids below 60,000, "validation" for the rest) and, per kind, an `image`
(1024x1024) and a `thumbnail` (128x128) record: `file_url`, `file_path`, `file_size`, `file_md5`, `pixel_size`,
`pixel_md5`. `file_path` looks like `thumbnails128x128/00000/00042.png` (subfolder = id rounded down to 1000).
Categories become the pipeline's splits: training -> "train", validation -> "test".

Mirrors: with `mirror_url` set, every file comes from `<mirror_url>/<file_path>` (a copy with the original
layout) and the metadata itself from `<mirror_url>/ffhq-dataset-v1.json`; otherwise files come from each entry's
`file_url` (Google Drive) and the metadata from `metadata_url`.

Output under `out_dir`: the metadata, the files at their `file_path`, and `index.csv` (`id, split, path`, path
relative to `out_dir`). Reruns skip every file already present and verified, and resume partial `.part` files.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import numpy as np
import pandas as pd
import requests
from PIL import Image
from tqdm import tqdm

from sgilo.fetch import DownloadError, download_file, make_session

METADATA_NAME = "ffhq-dataset-v1.json"
INDEX_NAME = "index.csv"
N_TRAIN = 60_000  # ids below are "training", the rest "validation"
_KIND_KEYS = {"thumbnails": "thumbnail", "images": "image"}
_SPLITS = {"training": "train", "validation": "test"}
_REQUIRED_FIELDS = ("file_url", "file_path", "file_size", "file_md5")
_SHOWN_FAILURES = 5


class MetadataError(ValueError):
    """FFHQ metadata that cannot be used; the message names the file or entry and what is wrong."""


@dataclass(frozen=True)
class FileSpec:
    """One file to fetch: `path` is relative to the output folder (posix), `split` is "train" or "test"."""

    id: int
    split: str
    url: str
    path: str
    size: int
    md5: str
    pixel_md5: str | None


# --------------------------------------------------------------------------------------------- metadata
def load_metadata(path: str | Path) -> dict[str, Any]:
    """Read the metadata JSON: a dict of id strings to entries. Raises MetadataError naming the file."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MetadataError(f"{path}: not valid JSON ({exc}). Fix: delete it and rerun to fetch it again") from exc
    if not isinstance(data, dict) or not all(isinstance(entry, dict) for entry in data.values()):
        raise MetadataError(
            f"{path}: not FFHQ metadata: expected a JSON object mapping '0'..'69999' to entry objects, "
            f"got {type(data).__name__}. Fix: point metadata_url (or the mirror) at {METADATA_NAME}"
        )
    return data


def select_files(
    metadata: dict[str, Any],
    kind: Literal["thumbnails", "images"],
    index_start: int,
    index_stop: int,
    mirror_url: str = "",
) -> list[FileSpec]:
    """Specs for ids in [index_start, index_stop), sorted; urls from `mirror_url` + file_path when it is set."""
    _check_selection(kind, index_start, index_stop)
    ids = range(index_start, index_stop)
    missing = [i for i in ids if str(i) not in metadata]
    if missing:
        raise MetadataError(
            f"metadata has no entry for {len(missing)} of the requested ids {index_start}..{index_stop - 1} "
            f"(first: {missing[:_SHOWN_FAILURES]}); it holds {len(metadata)} entries. Fix: lower index_stop"
        )
    return [_file_spec(i, metadata[str(i)], _KIND_KEYS[kind], mirror_url) for i in ids]


def _check_selection(kind: str, index_start: int, index_stop: int) -> None:
    if kind not in _KIND_KEYS:
        raise ValueError(f"kind must be one of {sorted(_KIND_KEYS)}, got {kind!r}")
    if not 0 <= index_start < index_stop:
        raise ValueError(f"need 0 <= index_start < index_stop, got [{index_start}, {index_stop})")


def _file_spec(idx: int, entry: dict[str, Any], key: str, mirror_url: str) -> FileSpec:
    record = entry.get(key)
    if not isinstance(record, dict) or any(name not in record for name in _REQUIRED_FIELDS):
        raise MetadataError(f"metadata entry '{idx}': expected '{key}' with fields {', '.join(_REQUIRED_FIELDS)}")
    path = _relative_path(record["file_path"], idx)
    return FileSpec(
        id=idx,
        split=_split(idx, entry),
        url=f"{mirror_url.rstrip('/')}/{path}" if mirror_url else str(record["file_url"]),
        path=path,
        size=int(record["file_size"]),
        md5=str(record["file_md5"]).lower(),
        pixel_md5=str(record["pixel_md5"]).lower() if record.get("pixel_md5") else None,
    )


def _split(idx: int, entry: dict[str, Any]) -> str:
    category = entry.get("category")
    if category is None:
        return "train" if idx < N_TRAIN else "test"
    if category not in _SPLITS:
        raise MetadataError(f"metadata entry '{idx}': category {category!r} is not one of {sorted(_SPLITS)}")
    return _SPLITS[category]


def _relative_path(file_path: Any, idx: int) -> str:
    path = PurePosixPath(str(file_path))
    # The path decides where we write: never let metadata point outside the output folder.
    if path.is_absolute() or ".." in path.parts or not path.parts:
        raise MetadataError(f"metadata entry '{idx}': file_path {file_path!r} must be relative, inside the dataset")
    return path.as_posix()


# --------------------------------------------------------------------------------------------- download
def download_ffhq(
    out_dir: str | Path,
    *,
    metadata_url: str,
    metadata_md5: str,
    metadata_size: int | None,
    kind: str,
    index_start: int,
    index_stop: int,
    mirror_url: str = "",
    workers: int = 8,
    retries: int = 5,
    timeout: float = 60.0,
    progress: bool = True,
) -> pd.DataFrame:
    """Fetch the metadata and the selected files into `out_dir`, verified, then write and return `index.csv`.

    An empty `metadata_md5` or a falsy `metadata_size` skips that check. Files that fail do not stop the others;
    at the end a DownloadError lists them and `index.csv` is not written, so a partial set is never indexed.
    """
    _check_selection(kind, index_start, index_stop)  # before fetching 268 MB of metadata
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with make_session(retries, pool_size=workers) as session:
        meta_url = f"{mirror_url.rstrip('/')}/{METADATA_NAME}" if mirror_url else metadata_url
        meta_path = download_file(
            meta_url,
            out / METADATA_NAME,
            size=metadata_size or None,
            md5=metadata_md5 or None,
            session=session,
            timeout=timeout,
            progress=progress,
        )
        # Not kept in a variable: the parsed 70,000-entry dict is large and only the specs are needed.
        specs = select_files(
            load_metadata(meta_path),
            kind,  # type: ignore[arg-type]
            index_start,
            index_stop,
            mirror_url,
        )
        failures = _download_all(specs, out, session, timeout, workers, progress)
    if failures:
        raise _failure_report(failures, len(specs), out)
    return _write_index(specs, out)


def _download_all(
    specs: list[FileSpec], out: Path, session: requests.Session, timeout: float, workers: int, progress: bool
) -> list[tuple[FileSpec, str]]:
    failures: list[tuple[FileSpec, str]] = []
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ffhq")
    try:
        futures = {pool.submit(_fetch_one, spec, out, session, timeout): spec for spec in specs}
        done = tqdm(
            as_completed(futures), total=len(futures), desc="FFHQ", unit="file", file=sys.stderr, disable=not progress
        )
        for future in done:
            exc = future.exception()
            if exc is None:
                continue
            if not isinstance(exc, (DownloadError, OSError, ValueError)):
                raise exc  # a bug, not a bad file: stop
            failures.append((futures[future], str(exc)))
    finally:
        # On Ctrl-C or a bug, drop the queued downloads instead of working through all of them first.
        pool.shutdown(wait=True, cancel_futures=True)
    return failures


def _fetch_one(spec: FileSpec, out: Path, session: requests.Session, timeout: float) -> None:
    dest = download_file(spec.url, out / spec.path, size=spec.size, md5=spec.md5, session=session, timeout=timeout)
    if spec.pixel_md5:
        got = pixel_md5(dest)
        if got != spec.pixel_md5:
            # The bytes match file_md5, so re-downloading cannot help: the decoder disagrees with the metadata.
            raise DownloadError(
                f"{dest} (from {spec.url}): pixel md5 expected {spec.pixel_md5}, got {got} although the file md5 "
                "matches. Fix: check the Pillow/numpy installation (the decoded pixels differ from the reference)"
            )


def pixel_md5(path: str | Path) -> str:
    """md5 of the decoded pixel array, as FFHQ's `pixel_md5` defines it."""
    with Image.open(path) as image:
        return hashlib.md5(np.array(image).tobytes(), usedforsecurity=False).hexdigest()


def _failure_report(failures: list[tuple[FileSpec, str]], total: int, out: Path) -> DownloadError:
    failures = sorted(failures, key=lambda item: item[0].id)
    lines = [f"  {spec.path}: {reason}" for spec, reason in failures[:_SHOWN_FAILURES]]
    if len(failures) > _SHOWN_FAILURES:
        lines.append(f"  ... and {len(failures) - _SHOWN_FAILURES} more")
    return DownloadError(
        f"FFHQ: {len(failures)} of {total} files failed; the other {total - len(failures)} are verified and kept "
        f"under {out}, and {INDEX_NAME} was not written:\n"
        + "\n".join(lines)
        + "\nFix: rerun to fetch only what is missing; if a file keeps failing, check its URL or set mirror_url"
    )


def _write_index(specs: list[FileSpec], out: Path) -> pd.DataFrame:
    index = pd.DataFrame(
        {
            "id": [spec.id for spec in specs],
            "split": [spec.split for spec in specs],
            "path": [spec.path for spec in specs],
        }
    )
    tmp = out / f"{INDEX_NAME}.tmp"
    index.to_csv(tmp, index=False)
    os.replace(tmp, out / INDEX_NAME)  # readers never see a half-written index
    return index
