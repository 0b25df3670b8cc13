"""Deterministic StyleGAN2 weights and inputs shared by the generator tests and the reference fixture.

The weights come from `sgilo.smoke.seeded_state_dict`; `tests/fixtures/stylegan2_reference.safetensors` holds what
rosinality/stylegan2-pytorch (model.py at commit bef283a, run on the CPU with its pure-PyTorch op fallbacks) computed
for exactly these weights and inputs, under the keys `reference_views` gives. `benchmarks/stylegan2_reference.py`
writes it again from a checkout of that code, and compares NVIDIA's stylegan2-ada-pytorch on the same weights.
"""

from __future__ import annotations

import torch
from torch import Tensor

from sgilo.smoke import seeded_state_dict
from sgilo.stylegan2 import Generator

# name → constructor arguments; "config_f" is the 1024² FFHQ generator of the papers.
CONFIGS: dict[str, dict[str, int]] = {
    "s32": {"size": 32, "style_dim": 64, "n_mlp": 2, "channel_multiplier": 2, "channel_max": 64},
    "s64": {"size": 64, "style_dim": 128, "n_mlp": 3, "channel_multiplier": 1, "channel_max": 512},
    "config_f": {"size": 1024, "style_dim": 512, "n_mlp": 8, "channel_multiplier": 2, "channel_max": 512},
}
TRUNCATION_PSI = 0.7
INPUT_SEED = 2  # the fixture's z, w+ and noise: seeded_inputs(generator, INPUT_SEED)


def seeded_weights(name: str) -> tuple[dict[str, Tensor], Tensor]:
    """The fixture's generator `name`: a rosinality-layout state dict and its latent_avg (the truncation centre)."""
    template = Generator(**CONFIGS[name]).state_dict()
    latent_avg = 0.1 * torch.randn(CONFIGS[name]["style_dim"], generator=torch.Generator().manual_seed(3))
    return seeded_state_dict(template, seed=1), latent_avg


def seeded_inputs(generator: Generator, seed: int, batch: int = 2) -> tuple[Tensor, Tensor, list[Tensor]]:
    """z (B, D), a w+ (B, num_ws, D) with a different w per layer, and per-image noise maps."""
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(batch, generator.style_dim, generator=gen)
    w_plus = torch.randn(batch, generator.num_ws, generator.style_dim, generator=gen)
    noise = [torch.randn(batch, 1, n.shape[-1], n.shape[-1], generator=gen) for n in generator.stored_noise()]
    return z, w_plus, noise


def summarize_image(image: Tensor) -> dict[str, Tensor]:
    """Small but sensitive views of a large image: a 32² average pool and a full-resolution 16² crop."""
    crop = image.shape[-1] // 2
    return {
        "pooled": torch.nn.functional.adaptive_avg_pool2d(image, 32),
        "crop": image[..., crop : crop + 16, crop : crop + 16],
    }


@torch.no_grad()
def fixture_outputs(generator: Generator, z: Tensor, w_plus: Tensor, noise: list[Tensor]) -> dict[str, Tensor]:
    """What the fixture records of our generator, before `reference_views`: w, the w+ image, the truncated image."""
    return {
        "w": generator.mapping(z),
        "image": generator.synthesis(w_plus, noise),
        "image_trunc": generator.synthesis(generator.mapping(z, TRUNCATION_PSI), noise),
    }


def reference_views(name: str, outputs: dict[str, Tensor]) -> dict[str, Tensor]:
    """The fixture's entries for generator `name` from its outputs "w" (mapping of z), "image" (synthesis of w+ with the
    explicit noise) and "image_trunc" (of z at TRUNCATION_PSI, the same noise): whole above 64², summarised at 1024²."""
    views = {}
    for tag, value in outputs.items():
        if tag == "w" or CONFIGS[name]["size"] <= 64:
            views[f"{name}.{tag}"] = value
        else:
            views.update({f"{name}.{tag}.{k}": v for k, v in summarize_image(value).items()})
    return views
