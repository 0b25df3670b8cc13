"""Forward operators A for the imaging inverse problems we solve, built on DeepInverse.

Images are (B, C, H, W) tensors in [0, 1], deepinv's convention. Every operator is built for a batch with one
seed per image: image i's mask, sensing matrix and measurement noise come only from seeds[i] (through
`sgilo.seeding`), so a batch of 8 gives exactly the measurements of 8 batches of one with the same seeds.
The operator's random parts and the noise use separate streams, (seed, "operator") and (seed, "noise"), so
changing the noise level leaves the mask or the sensing matrix as it was.
"""

from __future__ import annotations

import math
import numbers
import operator as _operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import deepinv as dinv
import numpy as np
import torch
from deepinv.physics import LinearPhysics
from deepinv.physics.functional import dct_2d, idct_2d
from PIL import Image, UnidentifiedImageError
from torch import Tensor
from torch.nn import functional as F

from sgilo.seeding import torch_generator

TASKS = ("inpaint", "cs", "denoise", "sr", "colorize", "identity")
MASK_KINDS = ("random", "center", "box", "file")
SR_FILTERS = ("area", "bicubic")
CS_KINDS = ("auto", "gaussian", "structured")
Shape = tuple[int, int, int]  # (C, H, W)
Device = str | torch.device
GAUSSIAN_CS_MAX_N = 1024  # "auto" uses the dense Gaussian matrix up to this many unknowns C*H*W (deepinv pinv()s it on build: seconds at 3072)
GAUSSIAN_CS_MAX_ENTRIES = 2**26  # a larger dense m x n matrix (and its pseudo-inverse) would not fit in memory


@dataclass(frozen=True)
class OperatorSpec:
    """What to measure: the task, its level and its options, as read from params.yaml.

    level means, per task: inpaint, the fraction of pixels kept in (0, 1]; cs, the ratio m/n in (0, 1];
    denoise, the noise sigma (>= 0, on the [0, 1] pixel scale); sr, the integer downsampling factor (>= 1);
    colorize and identity ignore it (use 1.0).
    """

    task: str
    level: float
    noise_std: float = 0.0  # extra Gaussian noise on y, any task
    mask: str = "random"  # inpaint only: random | center | box | file
    mask_path: str | None = None  # mask="file": a PNG, white (>= 0.5) = kept
    sr_filter: str = "area"  # sr: area (mean over f x f blocks) | bicubic
    cs_kind: str = "auto"  # cs: gaussian | structured | auto

    def __post_init__(self) -> None:
        _check_choice("task", self.task, TASKS)
        _check_choice("mask", self.mask, MASK_KINDS)
        _check_choice("sr_filter", self.sr_filter, SR_FILTERS)
        _check_choice("cs_kind", self.cs_kind, CS_KINDS)
        _check_number("level", self.level)
        _check_number("noise_std", self.noise_std)
        if self.noise_std < 0:
            raise ValueError(f"OperatorSpec.noise_std must be >= 0; got {self.noise_std}")
        _check_level(self)
        if self.task == "inpaint" and self.mask == "file" and not self.mask_path:
            raise ValueError("OperatorSpec.mask_path is required when mask='file' (a PNG, white = kept)")


def _check_choice(field: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"OperatorSpec.{field} must be one of {', '.join(allowed)}; got {value!r}")


def _check_number(field: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"OperatorSpec.{field} must be a finite number; got {value!r}")


def _check_level(spec: OperatorSpec) -> None:
    level = spec.level
    if spec.task in ("inpaint", "cs") and not 0 < level <= 1:
        what = "the fraction of pixels kept" if spec.task == "inpaint" else "the ratio m/n"
        raise ValueError(f"OperatorSpec.level ({what}) for {spec.task} must be in (0, 1]; got {level}")
    if spec.task == "denoise" and level < 0:
        raise ValueError(f"OperatorSpec.level (noise sigma) for denoise must be >= 0; got {level}")
    if spec.task == "sr" and (level < 1 or not float(level).is_integer()):
        raise ValueError(f"OperatorSpec.level (downsampling factor) for sr must be an integer >= 1; got {level}")


@dataclass(eq=False)
class Operator:
    """A built operator: the noiseless deepinv `physics` for the whole batch plus the per-image noise."""

    spec: OperatorSpec
    shape: Shape
    seeds: tuple[int, ...]
    physics: LinearPhysics  # noiseless A; physics.A(x) is differentiable in x
    cs_kind: str | None = None  # the resolved cs kind ("auto" decided), None for other tasks

    @property
    def noise_sigma(self) -> float:
        """Std of the Gaussian noise on y: denoise's level and noise_std add as independent noises."""
        level = self.spec.level if self.spec.task == "denoise" else 0.0
        return math.hypot(level, self.spec.noise_std)

    def measure(self, x: Tensor) -> Tensor:
        """y = A(x) + noise, image i's noise drawn from (seeds[i], "noise"): the same y on every call."""
        self._check_images(x)
        y = self.physics.A(x)
        if self.noise_sigma == 0:
            return y
        noise = [
            torch.randn(y.shape[1:], generator=torch_generator(seed, "noise"), dtype=y.dtype) for seed in self.seeds
        ]  # drawn on the CPU, like the operator, so y does not depend on the device
        return y + self.noise_sigma * torch.stack(noise).to(y.device)

    def naive(self, y: Tensor) -> Tensor:
        """A cheap baseline reconstruction, to report next to ours: pseudo-inverse, upsampling or grey."""
        task = self.spec.task
        if task in ("inpaint", "cs"):
            x = self.physics.A_dagger(y)
        elif task == "sr":
            x = F.interpolate(y, scale_factor=int(self.spec.level), mode="bicubic", align_corners=False)
        elif task == "colorize":
            x = y.expand(-1, self.shape[0], -1, -1)
        else:
            x = y
        return x.clamp(0, 1)

    def describe(self) -> dict:
        """A small JSON-able record of the operator, saved with every result so it can be rebuilt."""
        spec = self.spec
        return {
            "task": spec.task,
            "level": float(spec.level),
            "noise_std": float(spec.noise_std),
            "noise_sigma": self.noise_sigma,
            "mask": spec.mask if spec.task == "inpaint" else None,
            "mask_path": spec.mask_path if spec.task == "inpaint" and spec.mask == "file" else None,
            "sr_filter": spec.sr_filter if spec.task == "sr" else None,
            "cs_kind": self.cs_kind,
            "shape": list(self.shape),
            "seeds": list(self.seeds),
        }

    def _check_images(self, x: Tensor) -> None:
        expected = (len(self.seeds), *self.shape)
        if tuple(x.shape) != expected:
            raise ValueError(f"images must have shape {expected} (one per seed); got {tuple(x.shape)}")


def build_operator(spec: OperatorSpec, shape: Shape, seeds: Sequence[int], device: Device = "cpu") -> Operator:
    """The operator for a batch of images of `shape` (C, H, W), image i's randomness drawn from seeds[i]."""
    shape, seeds = _check_shape(shape), _check_seeds(seeds)
    builders: dict[str, Callable[..., LinearPhysics]] = {
        "inpaint": _inpainting,
        "cs": _compressed_sensing,
        "denoise": _identity,
        "identity": _identity,
        "sr": _super_resolution,
        "colorize": _colorization,
    }
    # Everything random is drawn on the CPU, then moved: the same seeds give the same operator on any device.
    physics = builders[spec.task](spec, shape, seeds).to(device)
    cs_kind = _resolve_cs_kind(spec, shape) if spec.task == "cs" else None
    return Operator(spec, shape, seeds, physics, cs_kind)


def _check_shape(shape: Sequence[int]) -> Shape:
    try:
        shape = tuple(_operator.index(s) for s in shape)
    except TypeError:
        raise ValueError(f"shape must be (C, H, W) of positive ints; got {shape!r}") from None
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"shape must be (C, H, W) of positive ints; got {shape!r}")
    return shape


def _check_seeds(seeds: Sequence[int]) -> tuple[int, ...]:
    try:
        seeds = tuple(_operator.index(s) for s in seeds)
    except TypeError:
        raise ValueError(f"seeds must be a sequence of ints, one per image; got {seeds!r}") from None
    if not seeds:
        raise ValueError("seeds must hold one int per image; got an empty sequence")
    return seeds


def _identity(spec: OperatorSpec, shape: Shape, seeds: tuple[int, ...]) -> LinearPhysics:
    # Denoising's default noise model adds sigma=0.1; Operator.measure adds the per-image noise instead.
    return dinv.physics.Denoising(noise_model=dinv.physics.ZeroNoise())


def _colorization(spec: OperatorSpec, shape: Shape, seeds: tuple[int, ...]) -> LinearPhysics:
    if shape[0] != 3:
        raise ValueError(f"task 'colorize' needs RGB images (shape with C = 3); got shape {shape}")
    return dinv.physics.Decolorize(channels=3, srf="rec601")


def _super_resolution(spec: OperatorSpec, shape: Shape, seeds: tuple[int, ...]) -> LinearPhysics:
    factor, (_, height, width) = int(spec.level), shape
    if height % factor or width % factor:
        raise ValueError(f"OperatorSpec.level (sr factor) must divide H={height} and W={width}; got {factor}")
    if spec.sr_filter == "area":
        return AreaDownsampling(factor)
    if factor > 1 and min(height, width) <= 2 * factor:
        raise ValueError(
            f"OperatorSpec.sr_filter='bicubic' needs H and W > 2 x factor (its 4·factor-wide kernel is padded by "
            f"reflection); got factor {factor} for {height}x{width}; use a smaller factor or sr_filter='area'"
        )
    # Reflect padding: circular padding would blend the top row of a face into the bottom one.
    return dinv.physics.Downsampling(
        img_size=shape, filter="bicubic" if factor > 1 else None, factor=factor, padding="reflect"
    )


class AreaDownsampling(LinearPhysics):
    """A = the mean over factor x factor blocks, i.e. F.avg_pool2d, with its exact adjoint.

    deepinv's Downsampling with a box filter and 'valid' padding gives the same y, but it recomputes the
    filter's FFT and runs a general convolution on every call: 30x slower at 1024x1024, inside our loops.
    """

    def __init__(self, factor: int):
        super().__init__()
        self.factor = factor

    def A(self, x: Tensor, **kwargs) -> Tensor:
        return F.avg_pool2d(x, self.factor)

    def A_adjoint(self, y: Tensor, **kwargs) -> Tensor:
        # Each low-resolution pixel spreads back over its block with the block's weight 1/factor^2.
        return F.interpolate(y, scale_factor=self.factor, mode="nearest") / self.factor**2

    def A_dagger(self, y: Tensor, **kwargs) -> Tensor:
        # A A^T = I / factor^2, so the pseudo-inverse is factor^2 A^T: nearest-neighbour upsampling.
        return F.interpolate(y, scale_factor=self.factor, mode="nearest")


# ---------------------------------------------------------------------------------------------- inpainting


def _inpainting(spec: OperatorSpec, shape: Shape, seeds: tuple[int, ...]) -> LinearPhysics:
    channels, height, width = shape
    if spec.mask == "file":
        masks = [load_mask(spec.mask_path, shape)] * len(seeds)
    else:
        masks = [_seeded_mask(spec, shape, torch_generator(seed, "operator")) for seed in seeds]
    mask = torch.stack([m.expand(channels, height, width) for m in masks]).contiguous()  # (B, C, H, W)
    return dinv.physics.Inpainting(img_size=shape, mask=mask)


def _seeded_mask(spec: OperatorSpec, shape: Shape, rng: torch.Generator) -> Tensor:
    """One image's (1, H, W) mask: random pixels, or a square hole in the centre or at a random place."""
    _, height, width = shape
    if spec.mask == "random":
        # With an all-ones input mask deepinv keeps exactly int(level * H * W) pixels, drawn by randperm.
        generator = dinv.physics.generator.BernoulliSplittingMaskGenerator(
            img_size=(1, height, width), split_ratio=spec.level, pixelwise=True, rng=rng
        )
        return generator.step(batch_size=None, input_mask=torch.ones(1, height, width))["mask"]
    side = _hole_side(spec.level, height, width)
    if spec.mask == "center":
        top, left = (height - side) // 2, (width - side) // 2
    else:  # "box"
        top = int(torch.randint(height - side + 1, (1,), generator=rng))
        left = int(torch.randint(width - side + 1, (1,), generator=rng))
    mask = torch.ones(1, height, width)
    mask[:, top : top + side, left : left + side] = 0
    return mask


def _hole_side(keep_fraction: float, height: int, width: int) -> int:
    """The side of the square hole that leaves keep_fraction of the pixels, as nearly as integer sides allow."""
    side = round(math.sqrt((1 - keep_fraction) * height * width))
    if side > min(height, width):
        raise ValueError(
            f"OperatorSpec.level (keep fraction) {keep_fraction} needs a {side}x{side} square hole, larger than "
            f"the {height}x{width} image; use a larger level or mask='random'"
        )
    return side


def load_mask(path: str | Path, shape: Sequence[int]) -> Tensor:
    """A user mask as a (1, H, W) float tensor of {0, 1}; shape is (H, W) or (C, H, W).

    A pixel is kept where its grey level (RGB converted by luminance) is >= 0.5. If the PNG has an alpha
    channel, the grey level is composited over black first, so transparent pixels are holes. 16-bit grey
    PNGs are scaled by 65535.
    """
    height, width = (int(s) for s in tuple(shape)[-2:])
    try:
        with Image.open(path) as image:
            image.load()
            grey = _grey_levels(image)
    except (OSError, UnidentifiedImageError, ValueError) as error:
        raise ValueError(f"mask file {path}: cannot read it as an image ({error})") from None
    if grey.shape != (height, width):
        raise ValueError(
            f"mask file {path} is {grey.shape[0]}x{grey.shape[1]} (HxW); expected {height}x{width}, "
            "the size of the images"
        )
    return torch.from_numpy((grey >= 0.5).astype(np.float32)).unsqueeze(0)


def _grey_levels(image: Image.Image) -> np.ndarray:
    """Grey levels in [0, 1], alpha multiplied in (transparent = black)."""
    if image.mode in ("I", "I;16", "I;16B", "I;16L"):
        return np.asarray(image, dtype=np.float64) / 65535.0
    if image.mode == "F":
        return np.asarray(image, dtype=np.float64)
    grey_alpha = np.asarray(image.convert("RGBA").convert("LA"), dtype=np.float64) / 255.0
    return grey_alpha[..., 0] * grey_alpha[..., 1]


# ------------------------------------------------------------------------------------- compressed sensing


def _resolve_cs_kind(spec: OperatorSpec, shape: Shape) -> str:
    if spec.cs_kind != "auto":
        return spec.cs_kind
    return "gaussian" if math.prod(shape) <= GAUSSIAN_CS_MAX_N else "structured"


def _compressed_sensing(spec: OperatorSpec, shape: Shape, seeds: tuple[int, ...]) -> LinearPhysics:
    n = math.prod(shape)
    m = max(1, round(spec.level * n))
    kind = _resolve_cs_kind(spec, shape)
    if kind == "gaussian" and m * n > GAUSSIAN_CS_MAX_ENTRIES:
        raise ValueError(
            f"OperatorSpec.cs_kind='gaussian' stores a dense {m}x{n} matrix per image, too large; "
            "use cs_kind='structured' (or 'auto')"
        )
    rngs = [torch_generator(seed, "operator") for seed in seeds]
    if kind == "gaussian":
        # deepinv draws A with i.i.d. N(0, 1/m) entries (E|Ax|^2 = |x|^2) and stores its pinv for A_dagger.
        per_image = [dinv.physics.CompressedSensing(m=m, img_size=shape, rng=rng) for rng in rngs]
    else:
        per_image = [SubsampledOrthogonal(shape, m, rng) for rng in rngs]
    return PerImagePhysics(per_image)


class PerImagePhysics(LinearPhysics):
    """Applies image i's own operator to x[i]: deepinv's CompressedSensing holds one matrix for the batch."""

    def __init__(self, operators: Sequence[LinearPhysics]):
        super().__init__()
        self.operators = torch.nn.ModuleList(operators)

    def _each(self, method: str, batch: Tensor) -> Tensor:
        if batch.shape[0] != len(self.operators):
            raise ValueError(f"batch has {batch.shape[0]} items but the operator was built for {len(self.operators)}")
        return torch.cat([getattr(op, method)(batch[i : i + 1]) for i, op in enumerate(self.operators)])

    def A(self, x: Tensor, **kwargs) -> Tensor:
        return self._each("A", x)

    def A_adjoint(self, y: Tensor, **kwargs) -> Tensor:
        return self._each("A_adjoint", y)

    def A_dagger(self, y: Tensor, **kwargs) -> Tensor:
        return self._each("A_dagger", y)


class SubsampledOrthogonal(LinearPhysics):
    """Subsampled randomized orthogonal transform, A = sqrt(n/m) · S · DCT2 · P · D, for one image.

    D flips signs at random, P permutes the n = C·H·W entries, DCT2 is the orthonormal 2-D DCT per channel
    and S keeps m random coefficients. It costs O(n log n) where a dense Gaussian matrix costs O(mn) time
    and memory, and like it satisfies E|Ax|^2 = |x|^2. Its rows are orthogonal (A A^T = n/m · I), so the
    pseudo-inverse is (m/n) · A^T.
    """

    def __init__(self, img_size: Shape, m: int, rng: torch.Generator):
        super().__init__()
        n = math.prod(img_size)
        if not 1 <= m <= n:
            raise ValueError(f"SubsampledOrthogonal needs 1 <= m <= n = {n}; got m = {m}")
        self.img_size, self.m, self.n = tuple(img_size), m, n
        self.scale = math.sqrt(n / m)
        signs = torch.randint(0, 2, (n,), generator=rng) * 2.0 - 1.0
        self.register_buffer("signs", signs)
        self.register_buffer("perm", torch.randperm(n, generator=rng))
        self.register_buffer("kept", torch.randperm(n, generator=rng)[:m].sort().values)

    def A(self, x: Tensor, **kwargs) -> Tensor:
        mixed = (x.reshape(x.shape[0], -1) * self.signs)[:, self.perm]
        coefficients = dct_2d(mixed.reshape(-1, *self.img_size), norm="ortho").reshape(x.shape[0], -1)
        return coefficients[:, self.kept] * self.scale

    def A_adjoint(self, y: Tensor, **kwargs) -> Tensor:
        coefficients = y.new_zeros(y.shape[0], self.n).index_copy(1, self.kept, y * self.scale)
        mixed = idct_2d(coefficients.reshape(-1, *self.img_size), norm="ortho").reshape(y.shape[0], -1)
        unpermuted = torch.zeros_like(mixed).index_copy(1, self.perm, mixed)  # P^T
        return (unpermuted * self.signs).reshape(-1, *self.img_size)

    def A_dagger(self, y: Tensor, **kwargs) -> Tensor:
        return self.A_adjoint(y) * (self.m / self.n)
