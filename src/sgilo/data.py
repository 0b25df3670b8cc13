"""Reading a dataset folder (`index.csv` + PNG images) into tensors, and writing image grids.

A dataset folder holds `index.csv` with at least the columns `id` (unique int), `split` ("train" or "test") and
`path` (relative to the folder), plus any attribute columns. Every problem with it raises `DataError`, whose
message names the offending file and how to fix it, instead of a bare PIL or pandas trace deep inside training.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd
import torch
from PIL import Image

from sgilo.io import atomic_path

SPLITS = ("train", "test")
REQUIRED_COLUMNS = ("id", "split", "path")
_REDOWNLOAD = "delete it and rerun the download stage"


class DataError(ValueError):
    """A dataset that cannot be used; the message names the file and the fix."""


def _preview(values: Sequence[object], limit: int = 5) -> str:
    shown = ", ".join(repr(v) for v in list(values)[:limit])
    return shown + (f", ... ({len(values)} in all)" if len(values) > limit else "")


def _read_csv(csv: Path) -> pd.DataFrame:
    if not csv.is_file():
        raise DataError(f"{csv}: dataset index not found; rerun the download stage to create it")
    try:
        return pd.read_csv(csv, dtype={"split": str, "path": str}, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as exc:
        raise DataError(f"{csv}: unreadable dataset index ({type(exc).__name__}: {exc}); {_REDOWNLOAD}") from exc


def _check_paths(csv: Path, paths: pd.Series) -> None:
    # Image paths must stay inside the dataset folder, so an index can never make us read other files.
    bad = [p for p in paths if not p or PurePosixPath(p).is_absolute() or ".." in PurePosixPath(p).parts]
    if bad:
        raise DataError(
            f"{csv}: column 'path' must hold non-empty paths relative to the dataset folder, got "
            f"{_preview(bad)}; {_REDOWNLOAD}"
        )


def read_index(dataset_dir: str | Path) -> pd.DataFrame:
    """The validated `index.csv` of `dataset_dir`, rows in file order."""
    csv = Path(dataset_dir) / "index.csv"
    index = _read_csv(csv)
    missing = [c for c in REQUIRED_COLUMNS if c not in index.columns]
    if missing:
        raise DataError(
            f"{csv}: missing column(s) {', '.join(missing)} (have {', '.join(map(str, index.columns))}); {_REDOWNLOAD}"
        )
    if not pd.api.types.is_integer_dtype(index["id"]):
        raise DataError(f"{csv}: column 'id' must hold integers, got dtype {index['id'].dtype}; {_REDOWNLOAD}")
    duplicated = index.loc[index["id"].duplicated(), "id"].unique().tolist()
    if duplicated:
        raise DataError(f"{csv}: duplicate id(s) {_preview(duplicated)}; {_REDOWNLOAD}")
    bad_splits = sorted(set(index["split"]) - set(SPLITS))
    if bad_splits:
        raise DataError(f"{csv}: column 'split' must be 'train' or 'test', got {_preview(bad_splits)}; {_REDOWNLOAD}")
    _check_paths(csv, index["path"])
    return index.astype({"id": "int64"}).reset_index(drop=True)


def _select(dataset_dir: Path, index: pd.DataFrame, split: str, ids: Sequence[int] | None) -> pd.DataFrame:
    rows = index[index["split"] == split]
    if ids is not None:
        wanted = [int(i) for i in ids]
        by_id = rows.set_index("id", drop=False)
        absent = [i for i in wanted if i not in by_id.index]
        if absent:
            raise DataError(
                f"{dataset_dir / 'index.csv'}: id(s) {_preview(absent)} are not in split {split!r}; "
                "choose ids from that split, or rerun the download stage if the index is stale"
            )
        rows = by_id.loc[wanted]
    if len(rows) == 0:
        raise DataError(
            f"{dataset_dir}: split {split!r} selects no images; check the split sizes in the params "
            "and rerun the download stage"
        )
    return rows


def _open_rgb(path: Path, resolution: int) -> np.ndarray:
    if not path.is_file():
        raise DataError(f"{path}: image listed in index.csv is missing; rerun the download stage")
    try:
        with Image.open(path) as image:
            image.load()  # decode now: a truncated file fails here, not later as a black image
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"{path}: corrupt or truncated image ({exc}); {_REDOWNLOAD}") from exc
    if image.mode != "RGB":
        raise DataError(f"{path}: image mode is {image.mode}, expected RGB; convert it to RGB, or {_REDOWNLOAD}")
    if image.width != image.height:
        raise DataError(f"{path}: image size is {image.width}x{image.height}, expected a square image; {_REDOWNLOAD}")
    if image.width != resolution:
        image = image.resize((resolution, resolution), Image.Resampling.LANCZOS)
    return np.array(image)  # a writable copy: torch.from_numpy warns on read-only buffers


def load_images(dataset_dir: str | Path, split: str, resolution: int, ids: Sequence[int] | None = None) -> torch.Tensor:
    """Images of `split` (only `ids`, in that order, if given) as float32 (N, 3, R, R) in [-1, 1]."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if isinstance(resolution, bool) or not isinstance(resolution, (int, np.integer)) or resolution < 1:
        raise ValueError(f"resolution must be a positive integer, got {resolution!r}")
    dataset_dir = Path(dataset_dir)
    rows = _select(dataset_dir, read_index(dataset_dir), split, ids)
    # Filled in place, so the peak memory is the float result, not a list of arrays plus a stacked copy.
    out = torch.empty((len(rows), 3, resolution, resolution), dtype=torch.float32)
    for i, rel in enumerate(rows["path"]):
        out[i] = torch.from_numpy(_open_rgb(dataset_dir / rel, resolution)).permute(2, 0, 1)
    return out.div_(127.5).sub_(1.0)


def load_user_image(path: str | Path, resolution: int, resize: bool = False) -> torch.Tensor:
    """A user's image as (1, 3, R, R) in [0, 1].

    Greyscale, palette and alpha images are converted to RGB (grey replicated, alpha dropped). An image that is not
    R×R is an error unless `resize`, which centre-crops it to a square and resizes it with Lanczos.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such image file")
    try:
        with Image.open(path) as opened:
            opened.load()
            image = _to_rgb8(opened)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"{path}: not a readable image ({exc}); give a PNG or JPEG file") from exc
    if image.size != (resolution, resolution):
        if not resize:
            raise DataError(
                f"{path}: image is {image.width}x{image.height} but the generator makes {resolution}x{resolution}; "
                "pass --resize to centre-crop and resize it, or give an image of that size"
            )
        side = min(image.size)
        left, top = (image.width - side) // 2, (image.height - side) // 2
        image = image.crop((left, top, left + side, top + side)).resize(
            (resolution, resolution), Image.Resampling.LANCZOS
        )
    return torch.from_numpy(np.array(image)).permute(2, 0, 1).unsqueeze(0).float().div_(255.0)


def _to_rgb8(image: Image.Image) -> Image.Image:
    """8-bit RGB; PIL's convert() clips 16-bit and float greys instead of scaling them, so scale those first."""
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        grey = np.asarray(image, dtype=np.float64)
        scale = 1.0 if image.mode == "F" else 65535.0  # float images are taken to be in [0, 1]
        image = Image.fromarray(np.clip(np.rint(grey / scale * 255.0), 0, 255).astype(np.uint8), mode="L")
    return image.convert("RGB")


def caption_png(path: str | Path, text: str) -> None:
    """Add `text` in red on a white strip under the PNG at `path` (nothing when `text` is empty), atomically."""
    if not text:
        return
    from PIL import ImageDraw, ImageFont

    with Image.open(path) as image:
        image = image.convert("RGB")
    size = max(10, min(18, image.width // 40))
    font = ImageFont.load_default(size=size)
    # Wrap to the image width: a 32² grid is narrow, the caption is a sentence.
    words, lines = text.split(), [""]
    for word in words:
        trial = f"{lines[-1]} {word}".strip()
        if font.getlength(trial) <= image.width - 8 or not lines[-1]:
            lines[-1] = trial
        else:
            lines.append(word)
    strip = Image.new("RGB", (image.width, image.height + len(lines) * (size + 4) + 6), "white")
    strip.paste(image, (0, 0))
    draw = ImageDraw.Draw(strip)
    for i, line in enumerate(lines):
        draw.text((4, image.height + 3 + i * (size + 4)), line, fill=(200, 0, 0), font=font)
    with atomic_path(path) as tmp:
        strip.save(tmp, format="PNG")


def save_image_grid(images: torch.Tensor, path: str | Path, nrow: int) -> None:
    """Write images in [-1, 1] of shape (N, 3, H, W) as one PNG grid with `nrow` images per row."""
    from torchvision.utils import (
        save_image,  # deferred: importing torchvision is slow and only grids need it
    )

    if images.ndim != 4 or images.shape[1] != 3 or images.shape[0] == 0:
        raise ValueError(f"images must have shape (N>0, 3, H, W), got {tuple(images.shape)}")
    if nrow < 1:
        raise ValueError(f"nrow must be at least 1, got {nrow}")
    grid = (images.detach().to("cpu", torch.float32).clamp(-1, 1) + 1) / 2
    with atomic_path(path) as tmp:
        save_image(grid, tmp, nrow=nrow, format="png")
