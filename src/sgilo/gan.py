"""StyleGAN2 training: non-saturating logistic loss, lazy R1 on real images, EMA generator, style mixing.

The trainer holds no I/O. Every step draws its batch, latents and noise from generators seeded by
(seed, "generator", step), so a run resumed from a checkpoint continues exactly as if it had not stopped.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor
from torch.nn import functional as F

from sgilo.config import ArchitectureConfig, TrainConfig
from sgilo.precision import autocast, resolve
from sgilo.seeding import torch_generator
from sgilo.stylegan2 import Discriminator, Generator

CPU = torch.device("cpu")


class GANTrainer:
    def __init__(self, architecture: ArchitectureConfig, train: TrainConfig, seed: int):
        self.train_config, self.seed = train, seed
        self.precision = resolve(train.precision, CPU, "generator.train.precision")  # training runs on the CPU
        with torch.random.fork_rng():  # seeded initial weights, leaving the caller's global RNG untouched
            torch.manual_seed(seed)
            self.generator = Generator(**vars(architecture))
            self.discriminator = Discriminator(
                architecture.size, architecture.channel_multiplier, train.disc_channel_max
            )
        self.g_ema = copy.deepcopy(self.generator).eval().requires_grad_(False)
        self.g_optim = torch.optim.Adam(self.generator.parameters(), lr=train.lr, betas=(0.0, 0.99))
        # Lazy regularisation: R1 runs every r1_every steps, so D's Adam is rescaled as in StyleGAN2.
        ratio = train.r1_every / (train.r1_every + 1)
        self.d_optim = torch.optim.Adam(self.discriminator.parameters(), lr=train.lr * ratio, betas=(0.0, 0.99**ratio))
        self.ema_beta = 0.5 ** (train.batch_size / max(train.ema_half_life_images, 1e-8))

    def batch_indices(self, step: int, n_images: int) -> Tensor:
        return torch.randint(
            n_images, (self.train_config.batch_size,), generator=torch_generator(self.seed, "generator", "batch", step)
        )

    def train_step(self, step: int, real: Tensor) -> dict[str, float]:
        """One discriminator step (with R1 when due), one generator step and the EMA update."""
        rng = torch_generator(self.seed, "generator", "step", step)
        with autocast(self.precision, CPU):
            d_loss = self._discriminator_step(real, rng)
        # R1's double backward stays in float32: the penalty is a small difference of large gradients.
        r1 = self._r1_step(real) if step % self.train_config.r1_every == 0 else float("nan")
        with autocast(self.precision, CPU):
            g_loss = self._generator_step(real.shape[0], rng)
        self._update_ema()
        return {"d_loss": d_loss, "g_loss": g_loss, "r1": r1}

    def _fake(self, batch: int, rng: torch.Generator) -> Tensor:
        g = self.generator
        w = g.mapping(torch.randn(batch, g.style_dim, generator=rng))
        w_plus = w.unsqueeze(1).repeat(1, g.num_ws, 1)
        if torch.rand((), generator=rng).item() < self.train_config.mixing_prob:
            cut = int(torch.randint(1, g.num_ws, (), generator=rng))
            w_plus[:, cut:] = g.mapping(torch.randn(batch, g.style_dim, generator=rng)).unsqueeze(1)
        return g.synthesis(w_plus, g.random_noise(batch, rng))

    def _discriminator_step(self, real: Tensor, rng: torch.Generator) -> float:
        self.generator.requires_grad_(False)
        self.discriminator.requires_grad_(True)
        with torch.no_grad():
            fake = self._fake(real.shape[0], rng)
        loss = F.softplus(-self.discriminator(real)).mean() + F.softplus(self.discriminator(fake)).mean()
        self.d_optim.zero_grad(set_to_none=True)
        loss.backward()
        self.d_optim.step()
        return loss.item()

    def _r1_step(self, real: Tensor) -> float:
        real = real.detach().requires_grad_(True)
        prediction = self.discriminator(real)
        (grad,) = torch.autograd.grad(prediction.sum(), real, create_graph=True)
        penalty = grad.square().flatten(1).sum(1).mean()
        self.d_optim.zero_grad(set_to_none=True)
        (self.train_config.r1_gamma / 2 * penalty * self.train_config.r1_every).backward()
        self.d_optim.step()
        return penalty.item()

    def _generator_step(self, batch: int, rng: torch.Generator) -> float:
        self.generator.requires_grad_(True)
        self.discriminator.requires_grad_(False)
        loss = F.softplus(-self.discriminator(self._fake(batch, rng))).mean()
        self.g_optim.zero_grad(set_to_none=True)
        loss.backward()
        self.g_optim.step()
        return loss.item()

    @torch.no_grad()
    def _update_ema(self) -> None:
        for ema, live in zip(self.g_ema.parameters(), self.generator.parameters()):
            ema.lerp_(live, 1.0 - self.ema_beta)

    def state_dict(self) -> dict[str, Any]:
        return {
            "generator": self.generator.state_dict(),
            "discriminator": self.discriminator.state_dict(),
            "g_ema": self.g_ema.state_dict(),
            "g_optim": self.g_optim.state_dict(),
            "d_optim": self.d_optim.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.load_state_dict(state["generator"])
        self.discriminator.load_state_dict(state["discriminator"])
        self.g_ema.load_state_dict(state["g_ema"])
        self.g_optim.load_state_dict(state["g_optim"])
        self.d_optim.load_state_dict(state["d_optim"])


def sliced_wasserstein(a: Tensor, b: Tensor, projections: int = 256, seed: int = 0) -> float:
    """Sliced Wasserstein-1 distance between two equal-size sets of flattened images.

    A weight-free sample-quality figure for the demo profile, where Inception weights (FID) are absent.
    """
    a, b = a.flatten(1).double(), b.flatten(1).double()
    if a.shape != b.shape:
        raise ValueError(f"sliced_wasserstein needs sets of equal shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    directions = torch.randn(
        a.shape[1], projections, generator=torch.Generator().manual_seed(seed), dtype=torch.float64
    )
    directions /= directions.norm(dim=0, keepdim=True)
    pa, _ = torch.sort(a @ directions, dim=0)
    pb, _ = torch.sort(b @ directions, dim=0)
    return (pa - pb).abs().mean().item()
