"""The layer-k latents as the score model sees them: min–max scaled per channel to [-1, 1].

The scaling is fitted once on the training latents (trajectories stage), saved, and applied the same way at
training, sampling and reconstruction time, so the score model never sees raw feature magnitudes.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import Tensor

from sgilo.seeding import item_seed


@dataclass(frozen=True)
class LatentScaler:
    """x ↦ 2·(x − min)/(max − min) − 1 per channel (dim 1 of a batch)."""

    minimum: Tensor  # (C,)
    maximum: Tensor  # (C,)

    @classmethod
    def fit(cls, latents: Tensor | Iterable[Tensor]) -> LatentScaler:
        """Per-channel range of a batch of latents (N, C, …), or of several batches seen one at a time."""
        low = high = None
        for batch in [latents] if isinstance(latents, Tensor) else latents:
            if batch.ndim < 2:
                raise ValueError(f"latents must be a batch (N, C, ...), got shape {tuple(batch.shape)}")
            if batch.shape[0] == 0:
                continue
            flat = batch.transpose(0, 1).reshape(batch.shape[1], -1)
            low = flat.amin(1) if low is None else torch.minimum(low, flat.amin(1))
            high = flat.amax(1) if high is None else torch.maximum(high, flat.amax(1))
        if low is None or high is None:
            raise ValueError("latents must hold at least one latent")
        return cls(low.float(), high.float())

    def _view(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if x.shape[1] != self.minimum.shape[0]:
            raise ValueError(f"latents have {x.shape[1]} channels, the scaler was fitted on {self.minimum.shape[0]}")
        shape = (1, -1, *([1] * (x.ndim - 2)))
        low = self.minimum.to(x.device, x.dtype).reshape(shape)
        span = (self.maximum - self.minimum).clamp_min(1e-8).to(x.device, x.dtype).reshape(shape)
        return low, span

    def normalize(self, x: Tensor) -> Tensor:
        low, span = self._view(x)
        return 2 * (x - low) / span - 1

    def denormalize(self, x: Tensor) -> Tensor:
        low, span = self._view(x)
        return (x + 1) / 2 * span + low

    def jacobian(self, x: Tensor) -> Tensor:
        """d denormalize(u)/du per channel, shaped to broadcast against x: turns ∇_h into ∇_u (∇_u = ∇_h · this)."""
        return self._view(x)[1] / 2

    def state_dict(self) -> dict[str, Tensor]:
        return {"minimum": self.minimum.contiguous(), "maximum": self.maximum.contiguous()}

    @classmethod
    def from_state_dict(cls, state: dict[str, Tensor]) -> LatentScaler:
        try:
            return cls(state["minimum"].float(), state["maximum"].float())
        except KeyError as exc:
            raise ValueError(f"not a latent scaler: key {exc} missing") from exc


def pooled_std(batches: Iterable[Tensor]) -> float:
    """The standard deviation (n − 1) of every element of several batches seen one at a time: each batch's mean and
    sum of squared deviations in float64, merged as in Chan et al. (1979), so no large sums cancel."""
    count, mean, m2 = 0, 0.0, 0.0
    for batch in batches:
        values = batch.detach().double().reshape(-1)
        if not len(values):
            continue
        n, batch_mean = len(values), float(values.mean())
        batch_m2 = float((values - batch_mean).square().sum())
        delta, total = batch_mean - mean, count + n
        mean += delta * n / total
        m2 += batch_m2 + delta * delta * count * n / total
        count = total
    if count < 2:
        raise ValueError(f"a standard deviation needs at least two values, got {count}")
    return math.sqrt(m2 / (count - 1))


def split_held_out(ids: Tensor, fraction: float, seed: int) -> Tensor:
    """Boolean mask of the held-out latents: a stable per-id draw, so the split never depends on shard order."""
    draws = torch.tensor([item_seed(seed, "held_out", int(i)) % 1_000_000 for i in ids.tolist()], dtype=torch.float64)
    return draws < fraction * 1_000_000
