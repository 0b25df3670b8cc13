"""The papers' small theory experiments, I/O-free.

GNC in 1-D (Kobler & Pock, Fig. 1): a Gaussian mixture smoothed by σ (each variance grows by σ², as convolving the
density with N(0, σ²) does) has the energy E(x, σ) = −log Σ_j w_j N(x; μ_j, s_j² + σ²). It is convex for σ large
enough (their Theorem 2.2). The GNC flow follows a decreasing σ schedule with one Tweedie step each,
x ← x − σ_i² ∂E(x, σ_i) (the MMSE estimate under the smoothed density), and so reaches the global minimum of the
unsmoothed energy from starts where gradient descent stays in a local one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import logsumexp, softmax


@dataclass(frozen=True)
class Mixture1D:
    """A 1-D Gaussian mixture: weights on the simplex, means, standard deviations."""

    weights: np.ndarray
    means: np.ndarray
    stds: np.ndarray

    def _terms(self, x: np.ndarray, sigma: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per point and component: log(w_j N(x; μ_j, v_j)), x − μ_j and v_j = s_j² + σ²."""
        variance = self.stds**2 + sigma**2
        offset = np.asarray(x, dtype=float)[..., None] - self.means
        log_terms = np.log(self.weights) - 0.5 * (np.log(2 * np.pi * variance) + offset**2 / variance)
        return log_terms, offset, variance

    def energy(self, x: np.ndarray, sigma: float = 0.0) -> np.ndarray:
        log_terms, _, _ = self._terms(x, sigma)
        return -logsumexp(log_terms, axis=-1)

    def gradient(self, x: np.ndarray, sigma: float = 0.0) -> np.ndarray:
        """∂E/∂x = Σ_j r_j (x − μ_j) / v_j, with r_j the responsibilities."""
        log_terms, offset, variance = self._terms(x, sigma)
        return (softmax(log_terms, axis=-1) * offset / variance).sum(-1)

    def curvature(self, x: np.ndarray, sigma: float = 0.0) -> np.ndarray:
        """∂²E/∂x² = (∂E/∂x)² − Σ_j r_j ((x − μ_j)² / v_j² − 1 / v_j)."""
        log_terms, offset, variance = self._terms(x, sigma)
        resp = softmax(log_terms, axis=-1)
        slope = (resp * offset / variance).sum(-1)
        return slope**2 - (resp * (offset**2 / variance**2 - 1 / variance)).sum(-1)


def sigma_schedule(sigma_max: float, sigma_min: float, steps: int) -> np.ndarray:
    """The paper's logarithmic schedule: `steps` values from sigma_max down to sigma_min, evenly spaced in log σ."""
    return np.geomspace(sigma_max, sigma_min, steps) if steps > 1 else np.array([sigma_max])


def gnc_flow(mixture: Mixture1D, starts: np.ndarray, sigmas: np.ndarray) -> np.ndarray:
    """End points of the GNC flow from every start: one Tweedie step per smoothing level."""
    x = np.asarray(starts, dtype=float).copy()
    for sigma in sigmas:
        x = x - sigma**2 * mixture.gradient(x, sigma)
    return x


def gradient_descent(mixture: Mixture1D, starts: np.ndarray, steps: int, lr: float) -> np.ndarray:
    """Plain gradient descent on the unsmoothed energy, the baseline the flow is compared with."""
    x = np.asarray(starts, dtype=float).copy()
    for _ in range(steps):
        x = x - lr * mixture.gradient(x)
    return x


def global_basin(mixture: Mixture1D, lo: float, hi: float, points: int = 200_001) -> tuple[float, float, float]:
    """(minimiser, left edge, right edge): the global minimum of E(·, 0) on [lo, hi] and the interval between the
    energy maxima (or the domain's ends) around it, from which gradient descent flows into it."""
    grid = np.linspace(lo, hi, points)
    energy = mixture.energy(grid)
    best = int(np.argmin(energy))
    rising = np.diff(energy)
    left = next((i + 1 for i in range(best - 1, -1, -1) if rising[i] > 0), None)  # a maximum at i + 1
    right = next((i for i in range(best, len(rising)) if rising[i] < 0), None)  # a maximum at i
    return float(grid[best]), float(grid[left]) if left is not None else lo, float(grid[right]) if right is not None else hi


def min_curvature(mixture: Mixture1D, lo: float, hi: float, sigmas: np.ndarray, points: int = 4001) -> np.ndarray:
    """For each σ, the smallest ∂²E/∂x² on [lo, hi]: E(·, σ) is convex there where it is ≥ 0."""
    grid = np.linspace(lo, hi, points)
    return np.array([mixture.curvature(grid, sigma).min() for sigma in sigmas])


def convexity_threshold(sigmas: np.ndarray, curvature: np.ndarray) -> float:
    """The smallest σ of `sigmas` (ascending) from which on the energy stays convex, given min_curvature over
    them; inf if it is not convex at the largest."""
    convex = curvature >= 0
    if not convex[-1]:
        return float("inf")
    last_nonconvex = np.flatnonzero(~convex)
    return float(sigmas[last_nonconvex[-1] + 1] if last_nonconvex.size else sigmas[0])


def attainment(ends: np.ndarray, basin: tuple[float, float, float]) -> float:
    """The fraction of trajectories that end in the global minimum's basin."""
    _, left, right = basin
    return float(np.mean((ends > left) & (ends < right)))
