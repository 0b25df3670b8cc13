"""StyleGAN2 in plain PyTorch, numerically the generator the ILO/SGILO community uses.

Module and parameter names follow rosinality/stylegan2-pytorch (`model.py`) so that its checkpoints, and the
official NVIDIA pickles converted to its layout, load with strict key matching. No compiled extensions: the
fused bias-activation and upfirdn2d kernels are written with standard PyTorch ops, which autograd and bf16
autocast handle on CPU and GPU alike.

Layer indexing follows ILO: block 0 is the 4x4 block (`conv1`, `to_rgb1`); block b >= 1 upsamples to
4·2^b (`convs[2b-2]`, `convs[2b-1]`, `to_rgbs[b-1]`). "Layer k" is the input of block k, i.e. the feature map
and skip image that block k-1 produced; layer 0 is the w+ latent alone. ILO and SGILO optimise that input.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from sgilo.io import CheckpointError, load_torch, save_torch
from sgilo.nvidia_pickle import load_nvidia_generator_state

BLUR_KERNEL = (1, 3, 3, 1)
SQRT2 = math.sqrt(2.0)
FORMAT = "sgilo.stylegan2/1"


# ------------------------------------------------------------------------------------------------ kernels
def bias_leaky_relu(x: Tensor, bias: Tensor | None = None, scale: float = SQRT2) -> Tensor:
    """StyleGAN2's fused_leaky_relu: leaky ReLU (slope 0.2) of x + bias, gained by sqrt(2) to keep variance."""
    if bias is not None:
        x = x + bias.view(1, -1, *([1] * (x.ndim - 2)))
    return F.leaky_relu(x, 0.2) * scale


def make_kernel(taps: Sequence[float]) -> Tensor:
    kernel = torch.tensor(taps, dtype=torch.float32)
    kernel = kernel[None, :] * kernel[:, None]
    return kernel / kernel.sum()


def upfirdn2d(x: Tensor, kernel: Tensor, up: int = 1, down: int = 1, pad: tuple[int, int] = (0, 0)) -> Tensor:
    """Upsample by zero insertion, pad, convolve with a 2-D FIR kernel, downsample — per channel."""
    batch, channels, height, width = x.shape
    if up > 1:
        x = x.reshape(batch, channels, height, 1, width, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1]).reshape(batch, channels, height * up, width * up)
    pad0, pad1 = pad
    x = F.pad(x, [max(pad0, 0), max(pad1, 0), max(pad0, 0), max(pad1, 0)])
    x = x[:, :, max(-pad0, 0) : x.shape[2] - max(-pad1, 0), max(-pad0, 0) : x.shape[3] - max(-pad1, 0)]
    # True convolution, as in the reference: flip the kernel (symmetric kernels are unaffected). A depthwise
    # (grouped) convolution is an order of magnitude faster than folding channels into the batch.
    weight = torch.flip(kernel, [0, 1]).to(x.dtype)[None, None].expand(channels, 1, -1, -1)
    return F.conv2d(x, weight, stride=down, groups=channels)


# ------------------------------------------------------------------------------------------------- layers
class PixelNorm(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x * torch.rsqrt(torch.mean(x**2, dim=1, keepdim=True) + 1e-8)


class Blur(nn.Module):
    def __init__(self, pad: tuple[int, int], upsample_factor: int = 1):
        super().__init__()
        self.register_buffer("kernel", make_kernel(BLUR_KERNEL) * upsample_factor**2)
        self.pad = pad

    def forward(self, x: Tensor) -> Tensor:
        return upfirdn2d(x, self.kernel, pad=self.pad)


class Upsample(nn.Module):
    def __init__(self, factor: int = 2):
        super().__init__()
        self.factor = factor
        self.register_buffer("kernel", make_kernel(BLUR_KERNEL) * factor**2)
        p = len(BLUR_KERNEL) - factor
        self.pad = ((p + 1) // 2 + factor - 1, p // 2)

    def forward(self, x: Tensor) -> Tensor:
        return upfirdn2d(x, self.kernel, up=self.factor, pad=self.pad)


class EqualLinear(nn.Module):
    """Linear layer with equalized learning rate: weights stored at unit scale, scaled at run time."""

    def __init__(
        self, in_dim: int, out_dim: int, bias_init: float = 0.0, lr_mul: float = 1.0, activation: bool = False
    ):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim).div_(lr_mul))
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init)))
        self.scale = lr_mul / math.sqrt(in_dim)
        self.lr_mul = lr_mul
        self.activation = activation

    def forward(self, x: Tensor) -> Tensor:
        if self.activation:
            return bias_leaky_relu(F.linear(x, self.weight * self.scale), self.bias * self.lr_mul)
        return F.linear(x, self.weight * self.scale, self.bias * self.lr_mul)


class EqualConv2d(nn.Module):
    def __init__(
        self, in_channel: int, out_channel: int, kernel_size: int, stride: int = 1, padding: int = 0, bias: bool = True
    ):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channel, in_channel, kernel_size, kernel_size))
        self.scale = 1 / math.sqrt(in_channel * kernel_size**2)
        self.stride, self.padding = stride, padding
        self.bias = nn.Parameter(torch.zeros(out_channel)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight * self.scale, self.bias, stride=self.stride, padding=self.padding)


class FusedLeakyReLU(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        return bias_leaky_relu(x, self.bias)


class ModulatedConv2d(nn.Module):
    """Style-modulated (and optionally demodulated) convolution."""

    def __init__(
        self,
        in_channel: int,
        out_channel: int,
        kernel_size: int,
        style_dim: int,
        demodulate: bool = True,
        upsample: bool = False,
    ):
        super().__init__()
        self.upsample, self.demodulate = upsample, demodulate
        if upsample:
            p = (len(BLUR_KERNEL) - 2) - (kernel_size - 1)
            self.blur = Blur(pad=((p + 1) // 2 + 1, p // 2 + 1), upsample_factor=2)
        self.scale = 1 / math.sqrt(in_channel * kernel_size**2)
        self.padding = kernel_size // 2
        self.weight = nn.Parameter(torch.randn(1, out_channel, in_channel, kernel_size, kernel_size))
        self.modulation = EqualLinear(style_dim, in_channel, bias_init=1.0)

    def forward(self, x: Tensor, style: Tensor) -> Tensor:
        # Modulating the input and demodulating the output is the same maths as scaling a per-image
        # weight (rosinality's grouped convolution), but runs as one ordinary batched convolution, which
        # is several times faster for batches on both CPU and GPU.
        batch = x.shape[0]
        style = self.modulation(style)
        weight = self.scale * self.weight[0]
        x = x * style.view(batch, -1, 1, 1)
        if self.upsample:
            out = self.blur(F.conv_transpose2d(x, weight.transpose(0, 1), stride=2))
        else:
            out = F.conv2d(x, weight, padding=self.padding)
        if self.demodulate:
            # Σ_{i,k} (W_oik·s_i)² = Σ_i s_i² Σ_k W_oik²: a (B×in)·(in×out) product instead of a B×out×in×k×k tensor.
            energy = style.square() @ weight.square().sum([2, 3]).t()
            out = out * torch.rsqrt(energy + 1e-8).view(batch, -1, 1, 1)
        return out


class NoiseInjection(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x: Tensor, noise: Tensor) -> Tensor:
        return x + self.weight * noise


class ConstantInput(nn.Module):
    def __init__(self, channels: int, size: int = 4):
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channels, size, size))

    def forward(self, batch: int) -> Tensor:
        return self.input.expand(batch, -1, -1, -1)


class StyledConv(nn.Module):
    def __init__(self, in_channel: int, out_channel: int, style_dim: int, upsample: bool = False):
        super().__init__()
        self.conv = ModulatedConv2d(in_channel, out_channel, 3, style_dim, upsample=upsample)
        self.noise = NoiseInjection()
        self.activate = FusedLeakyReLU(out_channel)

    def forward(self, x: Tensor, style: Tensor, noise: Tensor) -> Tensor:
        return self.activate(self.noise(self.conv(x, style), noise))


class ToRGB(nn.Module):
    def __init__(self, in_channel: int, style_dim: int, upsample: bool = True):
        super().__init__()
        if upsample:
            self.upsample = Upsample()
        self.conv = ModulatedConv2d(in_channel, 3, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(self, x: Tensor, style: Tensor, skip: Tensor | None = None) -> Tensor:
        out = self.conv(x, style) + self.bias
        return out if skip is None else out + self.upsample(skip)


# ---------------------------------------------------------------------------------------------- generator
def channel_count(resolution: int, channel_multiplier: int, channel_max: int) -> int:
    """Feature maps at a resolution: rosinality's table (512 up to 32², then 256·m, 128·m, …), capped."""
    return min(channel_max, channel_multiplier * 16384 // resolution)


def same_architecture(a: dict[str, int], b: dict[str, int]) -> bool:
    """Whether two constructor configs build the same network (channel tables, not how they are written)."""

    def table(c: dict[str, int]) -> tuple:
        sizes = [2**r for r in range(2, int(math.log2(c["size"])) + 1)]
        return (
            c["size"],
            c["style_dim"],
            c["n_mlp"],
            [channel_count(s, c["channel_multiplier"], c["channel_max"]) for s in sizes],
        )

    return table(a) == table(b)


class Generator(nn.Module):
    def __init__(
        self,
        size: int,
        style_dim: int = 512,
        n_mlp: int = 8,
        channel_multiplier: int = 2,
        channel_max: int = 512,
        lr_mlp: float = 0.01,
    ):
        super().__init__()
        if size < 4 or size & (size - 1):
            raise ValueError(f"generator size must be a power of two >= 4, got {size}")
        self.config = {
            "size": size,
            "style_dim": style_dim,
            "n_mlp": n_mlp,
            "channel_multiplier": channel_multiplier,
            "channel_max": channel_max,
        }
        # Non-empty for stand-in weights (sgilo.smoke): kept through save/load and written on every figure and table.
        self.standin = ""
        self.size, self.style_dim = size, style_dim
        self.log_size = int(math.log2(size))
        self.num_blocks = self.log_size - 1
        self.num_ws = 2 * self.log_size - 2
        self.num_noises = 2 * self.log_size - 3
        self.channels = {
            2**r: channel_count(2**r, channel_multiplier, channel_max) for r in range(2, self.log_size + 1)
        }
        self.style = nn.Sequential(
            PixelNorm(), *[EqualLinear(style_dim, style_dim, lr_mul=lr_mlp, activation=True) for _ in range(n_mlp)]
        )
        self.input = ConstantInput(self.channels[4])
        self.conv1 = StyledConv(self.channels[4], self.channels[4], style_dim)
        self.to_rgb1 = ToRGB(self.channels[4], style_dim, upsample=False)
        self.convs, self.to_rgbs = nn.ModuleList(), nn.ModuleList()
        for r in range(3, self.log_size + 1):
            in_ch, out_ch = self.channels[2 ** (r - 1)], self.channels[2**r]
            self.convs.append(StyledConv(in_ch, out_ch, style_dim, upsample=True))
            self.convs.append(StyledConv(out_ch, out_ch, style_dim))
            self.to_rgbs.append(ToRGB(out_ch, style_dim))
        self.noises = nn.Module()
        for j in range(self.num_noises):
            res = 2 ** ((j + 5) // 2)
            self.noises.register_buffer(f"noise_{j}", torch.randn(1, 1, res, res))
        # Not in the state dict: rosinality keeps it beside g_ema as "latent_avg".
        self.register_buffer("w_avg", torch.zeros(style_dim), persistent=False)
        # PULSE/ILO's Gaussianised latent space: w = LeakyReLU_0.2(std·z + mean). Zero std means "not fitted yet".
        self.register_buffer("w_gauss_mean", torch.zeros(style_dim), persistent=False)
        self.register_buffer("w_gauss_std", torch.zeros(style_dim), persistent=False)

    # --------------------------------------------------------------------------------- mapping & noise
    def mapping(self, z: Tensor, truncation_psi: float = 1.0) -> Tensor:
        """z (B, style_dim) → w (B, style_dim); psi < 1 pulls w towards the average latent."""
        w = self.style(z)
        if truncation_psi != 1.0:
            w = self.w_avg + truncation_psi * (w - self.w_avg)
        return w

    def stored_noise(self) -> list[Tensor]:
        return [getattr(self.noises, f"noise_{j}") for j in range(self.num_noises)]

    def random_noise(self, batch: int, generator: torch.Generator | None = None) -> list[Tensor]:
        """Fresh per-image noise maps, ordered like `noises.noise_j`, on the model's device.

        They are drawn on `generator`'s device, so a seeded CPU generator gives the same maps to a model on the GPU.
        """
        device = self.input.input.device
        draw_on = generator.device if generator is not None else device
        shapes = [n.shape[-1] for n in self.stored_noise()]
        return [torch.randn(batch, 1, r, r, device=draw_on, generator=generator).to(device) for r in shapes]

    def layer_shape(self, layer: int) -> tuple[int, int, int]:
        """(C, H, W) of the feature map that enters block `layer` (1 <= layer < num_blocks)."""
        if not 1 <= layer < self.num_blocks:
            raise ValueError(f"layer must be in [1, {self.num_blocks - 1}] for a {self.size}² generator, got {layer}")
        res = 2 ** (layer + 1)
        return (self.channels[res], res, res)

    # ---------------------------------------------------------------------------------------- synthesis
    def synthesis(self, w_plus: Tensor, noise: Sequence[Tensor | None] | None = None) -> Tensor:
        """w+ (B, num_ws, style_dim) or w (B, style_dim) → image (B, 3, size, size), about [-1, 1]."""
        return self.synthesis_from(0, None, None, w_plus, noise)

    def synthesis_features(
        self, w_plus: Tensor, layer: int, noise: Sequence[Tensor | None] | None = None
    ) -> tuple[Tensor, Tensor]:
        """The (features, skip) pair that enters block `layer`: what ILO at layer `layer` optimises."""
        self.layer_shape(layer)
        features, skip = self._blocks(0, layer, None, None, self._broadcast(w_plus), self._noise(noise))
        return features, skip

    def synthesis_from(
        self,
        layer: int,
        features: Tensor | None,
        skip: Tensor | None,
        w_plus: Tensor,
        noise: Sequence[Tensor | None] | None = None,
    ) -> Tensor:
        """Run blocks `layer`… to the image, starting from a given feature map and skip image (layer 0: none)."""
        _, skip = self._blocks(layer, self.num_blocks, features, skip, self._broadcast(w_plus), self._noise(noise))
        return skip

    def synthesis_between(
        self,
        start: int,
        stop: int,
        features: Tensor | None,
        skip: Tensor | None,
        w_plus: Tensor,
        noise: Sequence[Tensor | None] | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Run blocks `start`…`stop − 1`: the (features, skip) entering block `start` → those entering `stop`."""
        return self._blocks(start, stop, features, skip, self._broadcast(w_plus), self._noise(noise))

    def _broadcast(self, w_plus: Tensor) -> Tensor:
        if w_plus.ndim == 2:
            return w_plus.unsqueeze(1).expand(-1, self.num_ws, -1)
        if w_plus.ndim != 3 or w_plus.shape[1:] != (self.num_ws, self.style_dim):
            raise ValueError(
                f"w_plus must be (B, {self.num_ws}, {self.style_dim}) or (B, {self.style_dim}), got {tuple(w_plus.shape)}"
            )
        return w_plus

    def _noise(self, noise: Sequence[Tensor | None] | None) -> list[Tensor]:
        stored = self.stored_noise()
        if noise is None:
            return stored
        if len(noise) != self.num_noises:
            raise ValueError(f"noise must be a list of {self.num_noises} maps (or None), got {len(noise)}")
        return [s if n is None else n for n, s in zip(noise, stored)]

    def _blocks(
        self, start: int, stop: int, x: Tensor | None, skip: Tensor | None, w: Tensor, noise: list[Tensor]
    ) -> tuple[Tensor, Tensor]:
        for b in range(start, stop):
            if b == 0:
                x = self.conv1(self.input(w.shape[0]), w[:, 0], noise[0])
                skip = self.to_rgb1(x, w[:, 1])
                continue
            if x is None or skip is None:
                raise ValueError(f"starting at layer {start} needs both features and skip")
            i = 2 * b - 1
            x = self.convs[2 * b - 2](x, w[:, i], noise[i])
            x = self.convs[2 * b - 1](x, w[:, i + 1], noise[i + 1])
            skip = self.to_rgbs[b - 1](x, w[:, i + 2], skip)
        return x, skip

    def forward(self, z: Tensor, truncation_psi: float = 1.0, noise: Sequence[Tensor | None] | None = None) -> Tensor:
        return self.synthesis(self.mapping(z, truncation_psi), noise)

    def _mapped(self, n: int, generator: torch.Generator | None, batch: int) -> Iterator[Tensor]:
        """w = mapping(z) for `n` random z, in float64 batches of at most `batch`."""
        device = self.input.input.device
        for start in range(0, n, batch):
            count = min(batch, n - start)
            yield self.style(torch.randn(count, self.style_dim, device=device, generator=generator)).double()

    @torch.no_grad()
    def mean_latent(self, n: int, generator: torch.Generator | None = None, batch: int = 4096) -> Tensor:
        """Average w over `n` random z: the truncation centre (rosinality's `latent_avg`)."""
        return (sum(w.sum(0) for w in self._mapped(n, generator, batch)) / n).float()

    @torch.no_grad()
    def fit_gaussian(
        self, n: int, generator: torch.Generator | None = None, batch: int = 4096
    ) -> tuple[Tensor, Tensor]:
        """Mean and std of LeakyReLU_5(w) over `n` random z, i.e. w with the mapping's last activation undone.

        In that space w is close to Gaussian, so optimising a unit Gaussian z with w = LeakyReLU_0.2(std·z + mean)
        keeps inversions near the generator's own latent distribution (PULSE, ILO, SGILO).
        """
        total = torch.zeros(self.style_dim, device=self.input.input.device, dtype=torch.float64)
        squares = torch.zeros_like(total)
        for w in self._mapped(n, generator, batch):
            undone = torch.nn.functional.leaky_relu(w, 5.0)
            total += undone.sum(0)
            squares += undone.square().sum(0)
        mean = total / n
        std = (squares / n - mean.square()).clamp_min(0).sqrt()
        self.w_gauss_mean.copy_(mean.float())
        self.w_gauss_std.copy_(std.float())
        return self.w_gauss_mean, self.w_gauss_std

    @property
    def gaussian_fitted(self) -> bool:
        return bool(self.w_gauss_std.abs().sum() > 0)


# ------------------------------------------------------------------------------------------ discriminator
class ConvLayer(nn.Sequential):
    def __init__(
        self, in_channel: int, out_channel: int, kernel_size: int, downsample: bool = False, activate: bool = True
    ):
        layers: list[nn.Module] = []
        stride, padding = 1, kernel_size // 2
        if downsample:
            p = (len(BLUR_KERNEL) - 2) + (kernel_size - 1)
            layers.append(Blur(pad=((p + 1) // 2, p // 2)))
            stride, padding = 2, 0
        layers.append(EqualConv2d(in_channel, out_channel, kernel_size, stride, padding, bias=not activate))
        if activate:
            layers.append(FusedLeakyReLU(out_channel))
        super().__init__(*layers)


class ResBlock(nn.Module):
    def __init__(self, in_channel: int, out_channel: int):
        super().__init__()
        self.conv1 = ConvLayer(in_channel, in_channel, 3)
        self.conv2 = ConvLayer(in_channel, out_channel, 3, downsample=True)
        self.skip = ConvLayer(in_channel, out_channel, 1, downsample=True, activate=False)

    def forward(self, x: Tensor) -> Tensor:
        return (self.conv2(self.conv1(x)) + self.skip(x)) / SQRT2


class Discriminator(nn.Module):
    """StyleGAN2's residual discriminator with minibatch standard deviation (rosinality's layout)."""

    def __init__(self, size: int, channel_multiplier: int = 2, channel_max: int = 512, stddev_group: int = 4):
        super().__init__()
        ch = {2**r: channel_count(2**r, channel_multiplier, channel_max) for r in range(2, int(math.log2(size)) + 1)}
        convs: list[nn.Module] = [ConvLayer(3, ch[size], 1)]
        for r in range(int(math.log2(size)), 2, -1):
            convs.append(ResBlock(ch[2**r], ch[2 ** (r - 1)]))
        self.convs = nn.Sequential(*convs)
        self.stddev_group = stddev_group
        self.final_conv = ConvLayer(ch[4] + 1, ch[4], 3)
        self.final_linear = nn.Sequential(EqualLinear(ch[4] * 16, ch[4], activation=True), EqualLinear(ch[4], 1))

    def forward(self, image: Tensor) -> Tensor:
        x = self.convs(image)
        batch, channels, height, width = x.shape
        group = min(batch, self.stddev_group)
        while batch % group:
            group -= 1
        stddev = x.view(group, -1, 1, channels, height, width)
        stddev = torch.sqrt(stddev.var(0, unbiased=False) + 1e-8).mean([2, 3, 4], keepdim=True).squeeze(2)
        stddev = stddev.repeat(group, 1, height, width)
        x = self.final_conv(torch.cat([x, stddev], 1))
        return self.final_linear(x.view(batch, -1))


# ------------------------------------------------------------------------------------------- checkpoints
def infer_config(state_dict: dict[str, Tensor]) -> dict[str, int]:
    """Recover the constructor arguments of a rosinality-layout state dict from its key set and shapes."""
    try:
        style_dim = state_dict["style.1.weight"].shape[1]
        n_mlp = sum(1 for k in state_dict if k.startswith("style.") and k.endswith(".weight"))
        log_size = 2 + sum(1 for k in state_dict if k.startswith("to_rgbs.") and k.endswith(".conv.weight"))
        channel_max = state_dict["input.input"].shape[1]
    except KeyError as exc:
        raise CheckpointError(f"not a StyleGAN2 generator state dict: key {exc} is missing") from exc
    size = 2**log_size
    channel_multiplier = 2
    for b in range(1, log_size - 1):
        res, out_ch = 2 ** (b + 2), state_dict[f"convs.{2 * b - 2}.conv.weight"].shape[1]
        if out_ch < channel_max:
            channel_multiplier = max(1, out_ch * res // 16384)
            break
    return {
        "size": size,
        "style_dim": style_dim,
        "n_mlp": n_mlp,
        "channel_multiplier": channel_multiplier,
        "channel_max": channel_max,
    }


def generator_from_state(
    state_dict: dict[str, Tensor],
    latent_avg: Tensor | None,
    config: dict[str, int] | None,
    source: str,
    gaussian_fit: dict[str, Tensor] | None = None,
) -> Generator:
    """Build a generator and load `state_dict` with strict key and shape matching."""
    config = dict(config) if config else infer_config(state_dict)
    generator = Generator(**config)
    try:
        generator.load_state_dict(state_dict, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{source}: the weights do not fit a StyleGAN2 generator {config}: {exc}") from exc
    if latent_avg is not None:
        generator.w_avg.copy_(latent_avg.reshape(-1))
    if gaussian_fit is not None:
        generator.w_gauss_mean.copy_(gaussian_fit["mean"].reshape(-1))
        generator.w_gauss_std.copy_(gaussian_fit["std"].reshape(-1))
    return generator.eval()


def load_generator(path: str | Path) -> Generator:
    """Load a rosinality checkpoint, an official NVIDIA stylegan2-ada-pytorch pickle, or this project's format.

    Pickles are read with an allow-list unpickler that never imports NVIDIA's code; `.pt` files with
    `weights_only=True`. The result is in eval mode on the CPU.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: generator checkpoint not found; run the generator stage or fix the path")
    if _is_torch_file(path):
        return _load_torch_generator(path)
    state_dict, latent_avg, standin = load_nvidia_generator_state(path)
    config = infer_config(state_dict)
    # NVIDIA keeps no blur-kernel buffers under rosinality's names; they are constants of the architecture.
    constants = {k: v for k, v in Generator(**config).state_dict().items() if k.endswith(".kernel")}
    generator = generator_from_state({**constants, **state_dict}, latent_avg, config, str(path))
    generator.standin = standin
    return generator


# torch.save's legacy (pre-1.6) format opens with a pickled magic number; the current one is a zip archive.
_LEGACY_TORCH_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"


def _is_torch_file(path: Path) -> bool:
    with open(path, "rb") as handle:
        head = handle.read(len(_LEGACY_TORCH_MAGIC))
    return head.startswith(b"PK") or head == _LEGACY_TORCH_MAGIC


def _load_torch_generator(path: Path) -> Generator:
    # rosinality's train.py checkpoints pickle their argparse namespace; it carries only plain values.
    checkpoint = load_torch(path, safe_globals=[argparse.Namespace])
    if not isinstance(checkpoint, dict) or "g_ema" not in checkpoint:
        keys = sorted(checkpoint)[:8] if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise CheckpointError(f"{path}: expected a dict with 'g_ema' (rosinality layout), found {keys}")
    generator = generator_from_state(
        checkpoint["g_ema"],
        checkpoint.get("latent_avg"),
        checkpoint.get("config"),
        str(path),
        checkpoint.get("gaussian_fit"),
    )
    generator.standin = str(checkpoint.get("standin", ""))
    return generator


def save_generator(generator: Generator, path: str | Path, extra: dict[str, Any] | None = None) -> None:
    """Write the project's format: rosinality's keys plus the constructor config, atomically."""
    state = {k: v.detach().cpu().clone() for k, v in generator.state_dict().items()}
    payload = {
        "format": FORMAT,
        "config": dict(generator.config),
        "g_ema": state,
        "latent_avg": generator.w_avg.detach().cpu().clone(),
    }
    if generator.gaussian_fitted:
        payload["gaussian_fit"] = {
            "mean": generator.w_gauss_mean.detach().cpu().clone(),
            "std": generator.w_gauss_std.detach().cpu().clone(),
        }
    if generator.standin:
        payload["standin"] = generator.standin
    save_torch({**payload, **(extra or {})}, path)
