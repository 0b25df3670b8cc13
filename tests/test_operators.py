"""Forward operators through the public functions: masks, adjoints, pseudo-inverses, batching by seed.

Images are 16x16 (32x32 where a statistic needs pixels) and batches hold at most 4, so the file stays fast.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from torch.nn import functional as F

from sgilo.operators import OperatorSpec, build_operator, load_mask

SHAPE = (3, 16, 16)
SEEDS = [11, 22, 33]


def _images(n: int, shape: tuple[int, int, int] = SHAPE, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, *shape, generator=torch.Generator().manual_seed(seed))


def _kept(spec: OperatorSpec, seeds: list[int], shape: tuple[int, int, int] = SHAPE) -> torch.Tensor:
    """The inpainting mask, read through the operator: A(1) is 1 where a pixel is kept."""
    op = build_operator(spec, shape, seeds)
    return op.physics.A(torch.ones(len(seeds), *shape))


def _adjoint_gap(op, x: torch.Tensor) -> float:
    """|<Ax, y> - <x, A^T y>| relative to |Ax||y|, for a random y."""
    ax = op.physics.A(x)
    y = torch.randn(ax.shape, generator=torch.Generator().manual_seed(5), dtype=ax.dtype)
    gap = (ax * y).sum() - (x * op.physics.A_adjoint(y)).sum()
    return float(gap.abs() / (ax.norm() * y.norm()))


# ------------------------------------------------------------------------------------------- inpainting


def test_random_mask_keeps_exact_fraction_same_for_every_channel():
    kept = _kept(OperatorSpec("inpaint", 0.25), SEEDS)
    assert set(kept.unique().tolist()) == {0.0, 1.0}
    assert kept[:, 0].sum(dim=(1, 2)).tolist() == [64.0] * 3  # int(0.25 * 256)
    assert torch.equal(kept, kept[:, :1].expand_as(kept))


def test_random_mask_depends_on_seed_only():
    first = _kept(OperatorSpec("inpaint", 0.5), [1, 2])
    again = _kept(OperatorSpec("inpaint", 0.5), [1, 2])
    assert torch.equal(first, again)
    assert not torch.equal(first[0], first[1])


@pytest.mark.parametrize("kind", ["center", "box"])
def test_square_hole_keeps_about_the_fraction(kind):
    kept = _kept(OperatorSpec("inpaint", 0.75, mask=kind), [1, 2, 3], shape=(3, 32, 32))
    fractions = kept[:, 0].mean(dim=(1, 2))
    assert torch.allclose(fractions, torch.full_like(fractions, 0.75), atol=0.02)
    holes = [(k[0] == 0).nonzero() for k in kept]
    sides = [(h.max(0).values - h.min(0).values + 1).tolist() for h in holes]
    assert all(side[0] == side[1] and len(h) == side[0] ** 2 for side, h in zip(sides, holes))


def test_center_hole_is_centred_and_box_hole_moves_with_seed():
    center = _kept(OperatorSpec("inpaint", 0.75, mask="center"), [1, 2], shape=(1, 32, 32))
    assert torch.equal(center[0], center[1])
    assert torch.equal(center[0, 0], center[0, 0].flip(0)) and torch.equal(center[0, 0], center[0, 0].flip(1))
    boxes = _kept(OperatorSpec("inpaint", 0.75, mask="box"), [1, 2, 3, 4], shape=(1, 32, 32))
    assert len({tuple(b.flatten().tolist()) for b in boxes}) > 1


def test_inpaint_measures_masked_image_and_naive_is_its_pseudo_inverse():
    op = build_operator(OperatorSpec("inpaint", 0.5), SHAPE, SEEDS)
    x = _images(3)
    kept = op.physics.A(torch.ones_like(x))
    y = op.measure(x)
    assert torch.equal(y, x * kept)
    assert torch.equal(op.naive(y), x * kept)


def _write_png(path, array: np.ndarray) -> str:
    Image.fromarray(array).save(path)
    return str(path)


def test_mask_png_loads_grey_rgb_and_alpha(tmp_path):
    grey = np.zeros((16, 16), np.uint8)
    grey[:, :8] = 255
    expected = torch.from_numpy(grey >= 128).float().unsqueeze(0)
    assert torch.equal(load_mask(_write_png(tmp_path / "grey.png", grey), (16, 16)), expected)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    assert torch.equal(load_mask(_write_png(tmp_path / "rgb.png", rgb), (3, 16, 16)), expected)
    rgba = np.full((16, 16, 4), 255, np.uint8)
    rgba[:, 8:, 3] = 0  # transparent right half is a hole
    assert torch.equal(load_mask(_write_png(tmp_path / "rgba.png", rgba), (16, 16)), expected)


def test_file_mask_is_used_for_every_image(tmp_path):
    grey = np.zeros((16, 16), np.uint8)
    grey[4:, :] = 255
    path = _write_png(tmp_path / "mask.png", grey)
    kept = _kept(OperatorSpec("inpaint", 1.0, mask="file", mask_path=path), [1, 2])
    assert torch.equal(kept, load_mask(path, SHAPE).expand(2, 3, 16, 16))


def test_mask_png_of_wrong_size_or_unreadable_names_the_file(tmp_path):
    path = _write_png(tmp_path / "small.png", np.zeros((8, 8), np.uint8))
    with pytest.raises(ValueError, match=r"small\.png.*16x16"):
        load_mask(path, (16, 16))
    junk = tmp_path / "junk.png"
    junk.write_text("not an image")
    with pytest.raises(ValueError, match=r"junk\.png"):
        load_mask(junk, (16, 16))
    with pytest.raises(ValueError, match=r"absent\.png"):
        load_mask(tmp_path / "absent.png", (16, 16))


# ----------------------------------------------------------------------------------- compressed sensing


def test_structured_cs_at_full_rate_is_invertible():
    op = build_operator(OperatorSpec("cs", 1.0, cs_kind="structured"), SHAPE, SEEDS)
    x = _images(3)
    assert torch.allclose(op.physics.A_dagger(op.physics.A(x)), x, atol=1e-5)


@pytest.mark.parametrize("kind", ["structured", "gaussian"])
def test_cs_adjoint(kind):
    op = build_operator(OperatorSpec("cs", 0.3, cs_kind=kind), (1, 16, 16), [1, 2])
    assert op.describe()["cs_kind"] == kind
    assert _adjoint_gap(op, _images(2, (1, 16, 16))) < 1e-5


@pytest.mark.parametrize("kind", ["structured", "gaussian"])
def test_cs_preserves_energy_on_average(kind):
    seeds = [1, 2, 3, 4]
    op = build_operator(OperatorSpec("cs", 0.5, cs_kind=kind), (1, 16, 16), seeds)
    x = torch.randn(4, 1, 16, 16, generator=torch.Generator().manual_seed(3))
    ratio = op.physics.A(x).pow(2).sum() / x.pow(2).sum()
    assert 0.8 < float(ratio) < 1.2


def test_structured_cs_pseudo_inverse_is_a_projection():
    op = build_operator(OperatorSpec("cs", 0.4, cs_kind="structured"), SHAPE, [7])
    y = op.physics.A(_images(1))
    assert torch.allclose(op.physics.A(op.physics.A_dagger(y)), y, atol=1e-5)


def test_cs_auto_picks_gaussian_for_small_images_only():
    assert build_operator(OperatorSpec("cs", 0.1), (1, 16, 16), [1]).describe()["cs_kind"] == "gaussian"
    assert build_operator(OperatorSpec("cs", 0.1), (3, 64, 64), [1]).describe()["cs_kind"] == "structured"


def test_cs_measurement_count_and_gradient():
    op = build_operator(OperatorSpec("cs", 0.25, cs_kind="structured"), SHAPE, SEEDS)
    x = _images(3).requires_grad_()
    y = op.measure(x)
    assert y.shape == (3, round(0.25 * math.prod(SHAPE)))
    y.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


# ------------------------------------------------------------------------- super-resolution and others


@pytest.mark.parametrize("factor", [1, 2, 4])
def test_sr_area_is_avg_pool(factor):
    op = build_operator(OperatorSpec("sr", factor), SHAPE, SEEDS)
    x = _images(3)
    assert torch.allclose(op.measure(x), F.avg_pool2d(x, factor), atol=1e-6)
    assert op.naive(op.measure(x)).shape == x.shape


@pytest.mark.parametrize("sr_filter", ["area", "bicubic"])
def test_sr_adjoint(sr_filter):
    op = build_operator(OperatorSpec("sr", 2, sr_filter=sr_filter), SHAPE, SEEDS)
    assert _adjoint_gap(op, _images(3)) < 1e-5


def test_sr_bicubic_keeps_constant_images():
    op = build_operator(OperatorSpec("sr", 4, sr_filter="bicubic"), SHAPE, [1])
    y = op.measure(torch.full((1, *SHAPE), 0.3))
    assert y.shape == (1, 3, 4, 4) and torch.allclose(y, torch.full_like(y, 0.3), atol=1e-5)


def test_colorize_gives_rec601_luminance():
    op = build_operator(OperatorSpec("colorize", 1.0), SHAPE, SEEDS)
    x = _images(3)
    y = op.measure(x)
    luminance = 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
    assert y.shape == (3, 1, 16, 16)
    assert torch.allclose(y[:, 0], luminance, atol=1e-3)
    assert torch.equal(op.naive(y), y.clamp(0, 1).expand(-1, 3, -1, -1))


def test_denoise_noise_std_matches_level_and_is_fixed_by_seed():
    op = build_operator(OperatorSpec("denoise", 0.1), (3, 32, 32), [1, 2])
    x = _images(2, (3, 32, 32))
    noise = op.measure(x) - x
    assert torch.allclose(noise.std(dim=(1, 2, 3)), torch.full((2,), 0.1), rtol=0.05)
    assert abs(float(noise.mean())) < 0.01
    assert torch.equal(op.measure(x), op.measure(x))
    assert not torch.allclose(noise[0], noise[1])


def test_noise_std_adds_to_denoise_level():
    op = build_operator(OperatorSpec("denoise", 0.06, noise_std=0.08), (3, 32, 32), [1])
    x = _images(1, (3, 32, 32))
    assert op.noise_sigma == pytest.approx(0.1)
    assert float((op.measure(x) - x).std()) == pytest.approx(0.1, rel=0.05)


def test_identity_is_exact():
    op = build_operator(OperatorSpec("identity", 1.0), SHAPE, SEEDS)
    x = _images(3)
    assert torch.equal(op.measure(x), x)
    assert torch.equal(op.naive(x), x)
    assert torch.equal(op.physics.A_adjoint(x), x)


def test_noise_std_on_any_task_leaves_the_operator_unchanged():
    x = _images(2)
    clean = build_operator(OperatorSpec("inpaint", 0.5), SHAPE, [1, 2])
    noisy = build_operator(OperatorSpec("inpaint", 0.5, noise_std=0.05), SHAPE, [1, 2])
    assert torch.equal(clean.physics.A(x), noisy.physics.A(x))
    assert 0.02 < float((noisy.measure(x) - clean.measure(x)).std()) < 0.08


# ------------------------------------------------------------------------------------------- batching

BATCH_SPECS = [
    OperatorSpec("inpaint", 0.3),
    OperatorSpec("inpaint", 0.7, mask="box"),
    OperatorSpec("inpaint", 0.7, mask="center", noise_std=0.02),
    OperatorSpec("cs", 0.3, cs_kind="gaussian", noise_std=0.01),
    OperatorSpec("cs", 0.3, cs_kind="structured", noise_std=0.01),
    OperatorSpec("denoise", 0.1),
    OperatorSpec("sr", 2, noise_std=0.01),
    OperatorSpec("sr", 2, sr_filter="bicubic"),
    OperatorSpec("colorize", 1.0, noise_std=0.01),
    OperatorSpec("identity", 1.0),
]


@pytest.mark.parametrize("spec", BATCH_SPECS, ids=lambda s: f"{s.task}-{s.mask}-{s.cs_kind}-{s.sr_filter}")
def test_batch_equals_images_measured_alone(spec):
    shape = (1, 8, 8) if spec.cs_kind == "gaussian" else SHAPE
    x = _images(3, shape)
    batch = build_operator(spec, shape, SEEDS)
    alone = [build_operator(spec, shape, [seed]) for seed in SEEDS]
    y = batch.measure(x)
    assert torch.allclose(y, torch.cat([op.measure(x[i : i + 1]) for i, op in enumerate(alone)]), atol=1e-6)
    naive = torch.cat([op.naive(y[i : i + 1]) for i, op in enumerate(alone)])
    assert torch.allclose(batch.naive(y), naive, atol=1e-6)


def test_describe_is_json_and_records_the_operator():
    op = build_operator(OperatorSpec("cs", 0.2), SHAPE, [4, 5])
    record = json.loads(json.dumps(op.describe()))
    assert record["task"] == "cs" and record["level"] == 0.2
    assert record["cs_kind"] == "gaussian" and record["shape"] == list(SHAPE) and record["seeds"] == [4, 5]
    assert json.dumps(build_operator(OperatorSpec("inpaint", 0.5), SHAPE, [np.int64(3)]).describe())


# ---------------------------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"task": "deblur", "level": 1.0}, "task"),
        ({"task": "inpaint", "level": 0.0}, "level"),
        ({"task": "inpaint", "level": 1.5}, "level"),
        ({"task": "cs", "level": -0.1}, "level"),
        ({"task": "denoise", "level": -0.1}, "level"),
        ({"task": "sr", "level": 2.5}, "level"),
        ({"task": "sr", "level": 0}, "level"),
        ({"task": "inpaint", "level": "0.5"}, "level"),
        ({"task": "inpaint", "level": 0.5, "noise_std": -1.0}, "noise_std"),
        ({"task": "inpaint", "level": 0.5, "mask": "circle"}, "mask"),
        ({"task": "inpaint", "level": 0.5, "mask": "file"}, "mask_path"),
        ({"task": "sr", "level": 2, "sr_filter": "lanczos"}, "sr_filter"),
        ({"task": "cs", "level": 0.5, "cs_kind": "fourier"}, "cs_kind"),
    ],
)
def test_bad_spec_names_the_field(fields, message):
    with pytest.raises(ValueError, match=message):
        OperatorSpec(**fields)


@pytest.mark.parametrize(
    "spec, shape, message",
    [
        (OperatorSpec("sr", 3), (3, 32, 32), "sr factor"),
        (OperatorSpec("sr", 8, sr_filter="bicubic"), (3, 16, 16), "sr_filter"),
        (OperatorSpec("colorize", 1.0), (1, 32, 32), "colorize"),
        (OperatorSpec("inpaint", 0.5, mask="center"), (3, 4, 32), "level"),
        (OperatorSpec("cs", 0.5, cs_kind="gaussian"), (3, 128, 128), "cs_kind"),
        (OperatorSpec("identity", 1.0), (32, 32), "shape"),
    ],
)
def test_bad_combination_names_the_field(spec, shape, message):
    with pytest.raises(ValueError, match=message):
        build_operator(spec, shape, [1])


def test_bad_seeds_and_batch_shape_are_rejected():
    with pytest.raises(ValueError, match="seeds"):
        build_operator(OperatorSpec("identity", 1.0), SHAPE, [])
    with pytest.raises(ValueError, match="seeds"):
        build_operator(OperatorSpec("identity", 1.0), SHAPE, [1.5])
    op = build_operator(OperatorSpec("identity", 1.0), SHAPE, [1, 2])
    with pytest.raises(ValueError, match="one per seed"):
        op.measure(_images(3))
