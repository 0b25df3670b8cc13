"""Synthfaces rendering and writing, and reading dataset folders, through the public functions only.

Faces are rendered at 32x32 (64 or 128 where a test needs a second resolution) so the whole file stays fast.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from sgilo.data import (
    DataError,
    load_images,
    load_user_image,
    read_index,
    save_image_grid,
)
from sgilo.synthfaces import HAIR_COLORS, HAIR_STYLES, render_face, write_synthfaces

N_VARIETY = 200


def _files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    """Six train and two test faces at 32x32."""
    write_synthfaces(tmp_path / "ds", seed=1, n_train=6, n_test=2, resolution=32, progress=False)
    return tmp_path / "ds"


@pytest.fixture(scope="module")
def many_faces() -> tuple[np.ndarray, list[dict]]:
    images, attrs = zip(*(render_face(11, i, 32) for i in range(N_VARIETY)))
    return np.stack(images).astype(np.float32), list(attrs)


# ------------------------------------------------------------------------------------------ render_face
def test_render_face_is_deterministic_and_plain() -> None:
    image, attrs = render_face(3, 7, 32)
    again, attrs_again = render_face(3, 7, 32)
    assert image.dtype == np.uint8 and image.shape == (32, 32, 3)
    np.testing.assert_array_equal(image, again)
    assert attrs == attrs_again
    assert all(type(v) in (int, float, str, bool) for v in attrs.values())


@pytest.mark.parametrize("other", [(3, 8), (4, 7)])
def test_render_face_differs_by_index_and_seed(other: tuple[int, int]) -> None:
    image, attrs = render_face(3, 7, 32)
    image2, attrs2 = render_face(*other, 32)
    assert attrs != attrs2
    assert np.abs(image.astype(int) - image2.astype(int)).mean() > 10


def test_attributes_and_layout_do_not_depend_on_resolution() -> None:
    small, attrs_small = render_face(5, 2, 32)
    large, attrs_large = render_face(5, 2, 128)
    assert attrs_small == attrs_large
    # The same face drawn at 4x the size and box-filtered down must look the same, not merely share attributes.
    shrunk = np.asarray(Image.fromarray(large).reduce(4)).astype(int)
    assert np.abs(shrunk - small.astype(int)).mean() < 6


@pytest.mark.parametrize("resolution", [16, 48, 100, 2048, 0, -32])
def test_render_face_rejects_bad_resolution(resolution: int) -> None:
    with pytest.raises(ValueError, match="power of two"):
        render_face(0, 0, resolution)


def test_render_face_rejects_negative_seed() -> None:
    with pytest.raises(ValueError, match="seed"):
        render_face(-1, 0, 32)


# --------------------------------------------------------------------------------------------- variety
def test_every_category_occurs(many_faces: tuple[np.ndarray, list[dict]]) -> None:
    _, attrs = many_faces
    assert set(Counter(a["hair_style"] for a in attrs)) == set(HAIR_STYLES)
    assert set(Counter(a["hair_color"] for a in attrs)) == set(HAIR_COLORS)
    for flag in ("glasses", "mouth_open"):
        assert {a[flag] for a in attrs} == {True, False}
    assert {a["background"] for a in attrs} == {"solid", "gradient"}


def test_pixels_vary_across_faces(many_faces: tuple[np.ndarray, list[dict]]) -> None:
    images, _ = many_faces
    assert images.std(axis=0).mean() > 40
    # No two faces are (nearly) the same image.
    flat = images.reshape(len(images), -1)
    nearest = min(np.abs(flat[i] - flat[i + 1 :]).mean(axis=1).min() for i in range(len(flat) - 1))
    assert nearest > 5


def test_skin_tone_drives_cheek_brightness(many_faces: tuple[np.ndarray, list[dict]]) -> None:
    images, attrs = many_faces
    tone = np.array([a["skin_tone"] for a in attrs])
    cheeks = images[:, 18:21, 11:14].mean(axis=(1, 2, 3))  # between nose and eye, inside every face
    assert np.corrcoef(tone, cheeks)[0, 1] < -0.8


def test_glasses_add_a_bridge_between_the_eyes(many_faces: tuple[np.ndarray, list[dict]]) -> None:
    images, attrs = many_faces
    glasses = np.array([a["glasses"] for a in attrs])
    # Without glasses the nose bridge is smooth skin; a frame's bridge adds vertical edges there.
    edges = np.abs(np.diff(images.mean(axis=3), axis=1))[:, 12:19, 15:17].mean(axis=(1, 2))
    assert edges[glasses].mean() > 1.5 * edges[~glasses].mean()


def test_bald_heads_show_skin_on_top(many_faces: tuple[np.ndarray, list[dict]]) -> None:
    images, attrs = many_faces
    bald = np.array([a["hair_style"] == "bald" for a in attrs])
    cheek = images[:, 18:21, 9:12].mean(axis=(1, 2))
    crown = images[:, 5:8, 14:18].mean(axis=(1, 2))
    distance = np.linalg.norm(crown - cheek, axis=1)
    assert np.median(distance[bald]) < 0.6 * np.median(distance[~bald])


# ------------------------------------------------------------------------------------- write_synthfaces
def test_write_synthfaces_layout(dataset: Path) -> None:
    index = pd.read_csv(dataset / "index.csv")
    assert list(index.columns[:3]) == ["id", "split", "path"]
    assert "hair_style" in index.columns and "glasses" in index.columns
    assert index["id"].tolist() == list(range(8))
    assert index["split"].tolist() == ["train"] * 6 + ["test"] * 2
    assert index["path"].tolist() == [f"images/{i:06d}.png" for i in range(8)]
    # Nothing but the images and the index: no temp files from the atomic writes.
    assert _files(dataset) == ["images/" + f"{i:06d}.png" for i in range(8)] + ["index.csv"]
    with Image.open(dataset / "images/000003.png") as im:
        assert im.mode == "RGB" and im.size == (32, 32)
        np.testing.assert_array_equal(np.asarray(im), render_face(1, 3, 32)[0])
    assert index.loc[3, "hair_style"] == render_face(1, 3, 32)[1]["hair_style"]


def test_rerun_rewrites_only_the_missing_image(dataset: Path) -> None:
    images = sorted((dataset / "images").glob("*.png"))
    before = {p.name: p.read_bytes() for p in images}
    csv_before = (dataset / "index.csv").read_text()
    for p in images:  # an old mtime makes any rewrite visible whatever the filesystem's timestamp resolution
        os.utime(p, ns=(1_000_000_000, 1_000_000_000))
    (dataset / "images/000004.png").unlink()
    write_synthfaces(dataset, seed=1, n_train=6, n_test=2, resolution=32, progress=False)
    assert (dataset / "images/000004.png").read_bytes() == before["000004.png"]
    for p in images:
        if p.name != "000004.png":
            assert p.stat().st_mtime_ns == 1_000_000_000, p.name
            assert p.read_bytes() == before[p.name]
    assert (dataset / "index.csv").read_text() == csv_before


def test_rerun_repairs_corrupt_stale_and_leftover_files(dataset: Path) -> None:
    good = (dataset / "images/000002.png").read_bytes()
    (dataset / "images/000002.png").write_bytes(good[: len(good) // 2])
    (dataset / "images/.000005.png.x1y2.tmp").write_bytes(b"half a png")  # left by a killed run
    write_synthfaces(dataset, seed=1, n_train=4, n_test=1, resolution=32, progress=False)
    assert (dataset / "images/000002.png").read_bytes() == good
    # Images past the end of the earlier, larger run are gone; only the new five remain.
    assert _files(dataset) == ["images/" + f"{i:06d}.png" for i in range(5)] + ["index.csv"]


def test_rerun_with_another_seed_rerenders(dataset: Path) -> None:
    write_synthfaces(dataset, seed=2, n_train=6, n_test=2, resolution=32, progress=False)
    with Image.open(dataset / "images/000000.png") as im:
        np.testing.assert_array_equal(np.asarray(im), render_face(2, 0, 32)[0])


# -------------------------------------------------------------------------------- read_index / load_images
def test_load_images_shape_range_and_values(dataset: Path) -> None:
    train = load_images(dataset, "train", 32)
    assert train.shape == (6, 3, 32, 32) and train.dtype == torch.float32
    assert train.min() >= -1 and train.max() <= 1 and train.min() < -0.5 and train.max() > 0.5
    pixels = torch.from_numpy(render_face(1, 5, 32)[0]).permute(2, 0, 1).float()
    torch.testing.assert_close(train[5], pixels / 127.5 - 1)
    assert load_images(dataset, "test", 32).shape == (2, 3, 32, 32)


def test_load_images_by_ids_keeps_their_order(dataset: Path) -> None:
    train = load_images(dataset, "train", 32)
    picked = load_images(dataset, "train", 32, ids=[4, 1, 4])
    torch.testing.assert_close(picked, train[[4, 1, 4]])
    torch.testing.assert_close(load_images(dataset, "test", 32, ids=[7]), load_images(dataset, "test", 32)[1:])
    with pytest.raises(DataError, match=r"6.*'train'"):
        load_images(dataset, "train", 32, ids=[6])


def test_load_images_resizes_with_lanczos(tmp_path: Path) -> None:
    write_synthfaces(tmp_path, seed=0, n_train=2, n_test=1, resolution=64, progress=False)
    small = load_images(tmp_path, "train", 32)
    assert small.shape == (2, 3, 32, 32)
    with Image.open(tmp_path / "images/000001.png") as im:
        expected = np.array(im.resize((32, 32), Image.Resampling.LANCZOS))
    torch.testing.assert_close(small[1], torch.from_numpy(expected).permute(2, 0, 1).float() / 127.5 - 1)


def test_truncated_image_is_named(dataset: Path) -> None:
    path = dataset / "images/000003.png"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="000003.png.*corrupt or truncated"):
        load_images(dataset, "train", 32)


@pytest.mark.parametrize("mode", ["RGBA", "L"])
def test_wrong_mode_is_named(dataset: Path, mode: str) -> None:
    Image.new(mode, (32, 32)).save(dataset / "images/000001.png")
    with pytest.raises(DataError, match=f"000001.png.*mode is {mode}"):
        load_images(dataset, "train", 32)


def test_non_square_image_is_named(dataset: Path) -> None:
    Image.new("RGB", (40, 32)).save(dataset / "images/000006.png")
    with pytest.raises(DataError, match="000006.png.*40x32"):
        load_images(dataset, "test", 32)


def test_missing_image_is_named(dataset: Path) -> None:
    (dataset / "images/000000.png").unlink()
    with pytest.raises(DataError, match="000000.png.*missing"):
        load_images(dataset, "train", 32)


def test_missing_index_is_named(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="index.csv.*not found"):
        read_index(tmp_path)
    with pytest.raises(DataError, match="index.csv"):
        load_images(tmp_path, "train", 32)


def test_empty_selection(tmp_path: Path) -> None:
    write_synthfaces(tmp_path, seed=0, n_train=2, n_test=0, resolution=32, progress=False)
    with pytest.raises(DataError, match=f"{tmp_path}.*'test'.*no images"):
        load_images(tmp_path, "test", 32)
    with pytest.raises(DataError, match="'train'.*no images"):
        load_images(tmp_path, "train", 32, ids=[])


@pytest.mark.parametrize(
    ("csv", "problem"),
    [
        ("id,path\n0,images/000000.png\n", "missing column.*split"),
        ("id,split,path\n0,train,a.png\n0,test,b.png\n", "duplicate id.*0"),
        ("id,split,path\n0,train,a.png\n1,valid,b.png\n", "'train' or 'test'.*'valid'"),
        ("id,split,path\nx,train,a.png\n", "'id' must hold integers"),
        ("id,split,path\n0,train,../a.png\n", "relative to the dataset folder"),
        ("", "unreadable"),
    ],
)
def test_bad_index_is_named(tmp_path: Path, csv: str, problem: str) -> None:
    (tmp_path / "index.csv").write_text(csv)
    with pytest.raises(DataError, match=f"index.csv.*{problem}"):
        read_index(tmp_path)


def test_read_index_keeps_attribute_columns(dataset: Path) -> None:
    index = read_index(dataset)
    assert index["id"].dtype == np.int64 and len(index) == 8
    assert "skin_tone" in index.columns


# ------------------------------------------------------------------------------------------ save_image_grid
def test_save_image_grid(tmp_path: Path) -> None:
    images = torch.cat([torch.full((3, 3, 8, 8), -1.0), torch.full((3, 3, 8, 8), 1.5)])
    out = tmp_path / "grid.png"
    save_image_grid(images, out, nrow=3)
    with Image.open(out) as im:
        assert im.mode == "RGB" and im.size == (3 * 10 + 2, 2 * 10 + 2)  # torchvision pads by 2 pixels
        grid = np.asarray(im)
    assert (grid[2:10, 2:10] == 0).all() and (grid[12:20, 2:10] == 255).all()  # -1 -> black, clamped 1.5 -> white
    assert _files(tmp_path) == ["grid.png"]
    with pytest.raises(ValueError, match="shape"):
        save_image_grid(torch.zeros(2, 1, 8, 8), out, nrow=2)


# ------------------------------------------------------------------------------------------ load_user_image
def _save(tmp_path: Path, name: str, array: np.ndarray, mode: str | None = None) -> Path:
    image = Image.fromarray(array) if mode is None else Image.fromarray(array).convert(mode)
    image.save(tmp_path / name)
    return tmp_path / name


def test_load_user_image_rgb_shape_range_and_values(tmp_path: Path) -> None:
    array = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    loaded = load_user_image(_save(tmp_path, "rgb.png", array), 32)
    assert loaded.shape == (1, 3, 32, 32) and loaded.dtype == torch.float32
    assert 0 <= float(loaded.min()) and float(loaded.max()) <= 1
    np.testing.assert_array_equal(np.rint(loaded[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8), array)
    # An image already of the right size is left alone by resize=True.
    assert torch.equal(load_user_image(tmp_path / "rgb.png", 32, resize=True), loaded)


def test_load_user_image_replicates_grey(tmp_path: Path) -> None:
    grey = (np.arange(32 * 32) % 256).astype(np.uint8).reshape(32, 32)
    path = _save(tmp_path, "grey.png", grey)
    assert Image.open(path).mode == "L"
    loaded = load_user_image(path, 32)
    assert loaded.shape == (1, 3, 32, 32)
    for channel in range(3):
        np.testing.assert_allclose(loaded[0, channel].numpy(), grey / 255.0, atol=1e-7)


def test_load_user_image_drops_alpha(tmp_path: Path) -> None:
    rgba = np.zeros((32, 32, 4), dtype=np.uint8)
    rgba[..., 0], rgba[..., 1], rgba[..., 2] = 200, 100, 50
    rgba[:, :16, 3] = 255  # left half opaque, right half fully transparent: the colour is kept either way
    path = _save(tmp_path, "rgba.png", rgba)
    assert Image.open(path).mode == "RGBA"
    loaded = load_user_image(path, 32)
    assert loaded.shape == (1, 3, 32, 32)
    expected = torch.tensor([200, 100, 50]) / 255.0
    assert torch.allclose(loaded[0, :, 0, 0], expected) and torch.allclose(loaded[0, :, 0, 31], expected)
    assert torch.equal(loaded, loaded[:, :, :1, :1].expand_as(loaded))


def test_load_user_image_converts_palette_and_grey_alpha(tmp_path: Path) -> None:
    palette = Image.new("P", (32, 32))
    palette.putpalette([0, 0, 0, 255, 0, 0, 0, 0, 255] + [0] * (256 * 3 - 9))
    palette.paste(1, (0, 0, 16, 32))
    palette.paste(2, (16, 0, 32, 32))
    palette.save(tmp_path / "p.png")
    loaded = load_user_image(tmp_path / "p.png", 32)
    assert torch.equal(loaded[0, :, 5, 5], torch.tensor([1.0, 0.0, 0.0]))
    assert torch.equal(loaded[0, :, 5, 20], torch.tensor([0.0, 0.0, 1.0]))

    Image.new("LA", (32, 32), (51, 0)).save(tmp_path / "la.png")
    assert torch.allclose(load_user_image(tmp_path / "la.png", 32), torch.full((1, 3, 32, 32), 0.2))


def test_load_user_image_scales_16_bit_grey(tmp_path: Path) -> None:
    path = tmp_path / "grey16.png"
    Image.fromarray(np.full((32, 32), 32768, dtype=np.uint16)).save(path)
    assert Image.open(path).mode.startswith("I")
    loaded = load_user_image(path, 32)
    assert torch.allclose(loaded, torch.full_like(loaded, 32768 / 65535), atol=1 / 255)


def _stripes(width: int, height: int) -> np.ndarray:
    """Green, with a 4-pixel red band on the left/top and a blue one on the right/bottom of the long side."""
    array = np.zeros((height, width, 3), dtype=np.uint8)
    array[..., 1] = 255
    if width >= height:
        array[:, :4], array[:, -4:] = (255, 0, 0), (0, 0, 255)
    else:
        array[:4], array[-4:] = (255, 0, 0), (0, 0, 255)
    return array


@pytest.mark.parametrize("size", [(40, 32), (32, 40)])
def test_load_user_image_resize_centre_crops(tmp_path: Path, size: tuple[int, int]) -> None:
    path = _save(tmp_path, "wide.png", _stripes(*size))
    loaded = load_user_image(path, 32, resize=True)
    assert loaded.shape == (1, 3, 32, 32)
    # The centre 32x32 square is all green: both bands were cropped away and nothing was resampled.
    assert torch.equal(loaded, torch.tensor([0.0, 1.0, 0.0]).reshape(1, 3, 1, 1).expand(1, 3, 32, 32))


def test_load_user_image_resize_crop_offset_and_scaling(tmp_path: Path) -> None:
    # 41 wide: the crop starts at column (41 - 32) // 2 = 4, so column 4 is the first one kept.
    array = np.zeros((32, 41, 3), dtype=np.uint8)
    array[:, 4] = 255
    loaded = load_user_image(_save(tmp_path, "odd.png", array), 32, resize=True)
    assert torch.equal(loaded[0, :, :, 0], torch.ones(3, 32)) and float(loaded[0, :, :, 1:].max()) == 0

    # A larger image is cropped to its centre square and scaled down: a 96x64 image with a left red half
    # (x < 48) becomes red on the left half of the 32x32 output, green on the right.
    big = np.zeros((64, 96, 3), dtype=np.uint8)
    big[:, :48, 0], big[:, 48:, 1] = 255, 255
    small = load_user_image(_save(tmp_path, "big.png", big), 32, resize=True)
    assert small.shape == (1, 3, 32, 32)
    assert 0 <= float(small.min()) and float(small.max()) <= 1
    assert torch.allclose(
        small[0, :, :, :15], torch.tensor([1.0, 0.0, 0.0]).reshape(3, 1, 1).expand(3, 32, 15), atol=0.02
    )
    assert torch.allclose(
        small[0, :, :, 17:], torch.tensor([0.0, 1.0, 0.0]).reshape(3, 1, 1).expand(3, 32, 15), atol=0.02
    )


def test_load_user_image_wrong_size_suggests_resize(tmp_path: Path) -> None:
    path = _save(tmp_path, "wide.png", _stripes(40, 32))
    with pytest.raises(DataError, match="--resize") as info:
        load_user_image(path, 32)
    assert str(path) in str(info.value) and "40x32" in str(info.value) and "32x32" in str(info.value)


def test_load_user_image_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="nope.png"):
        load_user_image(tmp_path / "nope.png", 32)
    with pytest.raises(DataError, match="no such image"):
        load_user_image(tmp_path, 32)  # a folder is not an image file


@pytest.mark.parametrize("content", [b"just some text, not pixels\n", b"", b"\x89PNG\r\n\x1a\n" + b"\0" * 40])
def test_load_user_image_non_image_is_named(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "fake.png"
    path.write_bytes(content)
    with pytest.raises(DataError, match="not a readable image") as info:
        load_user_image(path, 32)
    assert str(path) in str(info.value)


def test_load_user_image_truncated_png_is_named(tmp_path: Path) -> None:
    array = np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    path = _save(tmp_path, "cut.png", array)
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    with pytest.raises(DataError, match="cut.png"):
        load_user_image(path, 32)


def test_caption_png_writes_a_red_caption_under_the_image_and_nothing_when_empty(tmp_path: Path) -> None:
    from sgilo.data import caption_png

    path = tmp_path / "grid.png"
    Image.fromarray(np.full((64, 64, 3), 90, np.uint8)).save(path)
    before = path.read_bytes()
    caption_png(path, "")
    assert path.read_bytes() == before
    caption_png(path, "stand-in weights: seeded random values, not a trained network")
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB")).astype(int)
    assert pixels.shape[0] > 64 and pixels.shape[1] == 64
    assert (pixels[:64] == 90).all()  # the image itself untouched
    strip = pixels[64:]
    assert ((strip[..., 0] > 150) & (strip[..., 1] < 80)).sum() > 20  # red text drawn
