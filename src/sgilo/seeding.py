"""Per-item seeds: every random draw is seeded by (global seed, stage, item), never by what ran before.

This is what makes a shard, an image or a training step give the same result whatever else runs, in any
order, on any number of workers, and what lets a resumed run continue bit for bit.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch


def item_seed(*keys: int | str) -> int:
    """A 63-bit seed from a tuple of ints and strings, stable across processes and Python versions."""
    text = "\x1f".join(f"{type(k).__name__}:{k}" for k in keys)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


def torch_generator(*keys: int | str, device: str | torch.device = "cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(item_seed(*keys))


def numpy_generator(*keys: int | str) -> np.random.Generator:
    return np.random.default_rng(item_seed(*keys))
