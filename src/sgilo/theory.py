"""The papers' small theory experiments, I/O-free.

GNC in 1-D (Kobler & Pock, Fig. 1): a Gaussian mixture smoothed by σ (each variance grows by σ², as convolving the
density with N(0, σ²) does) has the energy E(x, σ) = −log Σ_j w_j N(x; μ_j, s_j² + σ²). It is convex for σ large
enough (their Theorem 2.2). The GNC flow follows a decreasing σ schedule with one Tweedie step each,
x ← x − σ_i² ∂E(x, σ_i) (the MMSE estimate under the smoothed density), and so reaches the global minimum of the
unsmoothed energy from starts where gradient descent stays in a local one.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import torch
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
    return (
        float(grid[best]),
        float(grid[left]) if left is not None else lo,
        float(grid[right]) if right is not None else hi,
    )


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


# ------------------------------------------------------------------------------------------------------------
# Langevin on random expansive ReLU generators (the SGILO paper's Theorem 3.1, in Hand & Voroninski's setting).
#
# G(z) = ReLU(W_d ⋯ ReLU(W_1 z)) with W_i ~ N(0, 1/n_i) entry-wise, A ~ N(0, 1/m), y = A G(z*). Each ReLU layer
# halves ‖·‖² in expectation, so the loss is scaled by 2^d: f(z) = 2^(d−1) ‖A G(z) − y‖² has a Hessian near z* of
# about the identity whatever the depth, which makes one step size and one β mean the same for every architecture.
# Its expected gradient vanishes at z*, at 0 and at −ρ_d z* (Hand & Voroninski; Huang et al. 2018), the spurious
# point that gradient descent needs sign flips to escape and that the paper proves Langevin noise escapes.


def expansive_widths(latent: int, depth: int, expansion: float) -> list[int]:
    """Layer widths [k, n_1, …, n_d] with n_i = ⌈expansion · n_(i−1)⌉."""
    widths = [latent]
    for _ in range(depth):
        widths.append(math.ceil(expansion * widths[-1]))
    return widths


def spurious_scale(depth: int) -> float:
    """ρ_d of Huang et al. (2018): the expected gradient's spurious zero is −ρ_d z*.

    θ_0 = π, θ_i = g(θ_(i−1)) with g(θ) = arccos(((π − θ) cos θ + sin θ) / π), the angle a ReLU layer maps the angle
    between two inputs to; ρ_d = Σ_i (sin θ_i / π) Π_(j>i) (π − θ_j) / π. ρ_1 = 0 (one layer has no spurious point),
    ρ_2 = 1/π, and ρ_d → 1 with depth."""
    angles = [math.pi]
    for _ in range(depth - 1):
        theta = angles[-1]
        angles.append(math.acos(min(1.0, max(-1.0, ((math.pi - theta) * math.cos(theta) + math.sin(theta)) / math.pi))))
    return sum(
        math.sin(angles[i]) / math.pi * math.prod((math.pi - angles[j]) / math.pi for j in range(i + 1, depth))
        for i in range(depth)
    )


@dataclass(frozen=True)
class ReLUInversion:
    """The inverse problem y = A G(z*) for a random ReLU generator G, with the 2^d-scaled least-squares loss."""

    weights: tuple[np.ndarray, ...]  # W_1 … W_d, (n_i, n_(i−1))
    sensing: np.ndarray  # A, (m, n_d)
    z_star: np.ndarray  # (k,), unit norm
    y: np.ndarray  # (m,)

    @classmethod
    def random(cls, widths: list[int], measurements: int, noise: float, rng: np.random.Generator) -> ReLUInversion:
        weights = tuple(
            rng.normal(0.0, 1.0 / math.sqrt(n_out), (n_out, n_in)) for n_in, n_out in itertools.pairwise(widths)
        )
        sensing = rng.normal(0.0, 1.0 / math.sqrt(measurements), (measurements, widths[-1]))
        z_star = rng.normal(size=widths[0])
        z_star /= np.linalg.norm(z_star)
        clean = cls(weights, sensing, z_star, np.zeros(measurements))
        y = clean.measure(z_star[None])[0] + noise * rng.normal(size=measurements) / math.sqrt(measurements)
        return cls(weights, sensing, z_star, y)

    @property
    def depth(self) -> int:
        return len(self.weights)

    @property
    def widths(self) -> list[int]:
        return [self.weights[0].shape[1], *(w.shape[0] for w in self.weights)]

    def measure(self, z: np.ndarray) -> np.ndarray:
        """A G(z) for a batch of latents (B, k)."""
        h = z
        for w in self.weights:
            h = np.maximum(h @ w.T, 0.0)
        return h @ self.sensing.T

    def loss(self, z: np.ndarray) -> np.ndarray:
        return 2.0 ** (self.depth - 1) * np.square(self.measure(z) - self.y).sum(-1)

    def gradient(self, z: np.ndarray) -> np.ndarray:
        """∇f for a batch, back-propagated by hand through the ReLU masks."""
        masks, h = [], z
        for w in self.weights:
            pre = h @ w.T
            masks.append(pre > 0)
            h = np.maximum(pre, 0.0)
        g = 2.0**self.depth * (h @ self.sensing.T - self.y) @ self.sensing
        for w, mask in zip(reversed(self.weights), reversed(masks)):
            g = (g * mask) @ w
        return g

    def hessian_at_truth(self) -> np.ndarray:
        """∇²f at z* for noiseless y: 2^d Jᵀ AᵀA J, with J the (piecewise-constant) Jacobian of G at z*."""
        jacobian, h = np.eye(len(self.z_star)), self.z_star
        for w in self.weights:
            pre = w @ h
            jacobian = (pre > 0)[:, None] * (w @ jacobian)
            h = np.maximum(pre, 0.0)
        projected = self.sensing @ jacobian
        return 2.0**self.depth * projected.T @ projected


def langevin(
    problem: ReLUInversion,
    starts: np.ndarray,
    steps: int,
    step_size: float,
    beta: np.ndarray,
    sign_flip: np.ndarray,
    rng: np.random.Generator,
    record_every: int = 10,
) -> dict[str, np.ndarray]:
    """Runs every row of `starts` (B, k) for `steps` iterations of z ← z − η∇f(z) + sqrt(2η/β) ξ.

    `beta` (B,) may be inf (gradient descent); rows with `sign_flip` replace z by −z whenever that lowers f, Huang et
    al.'s fix. Returns the distances of each row to z* and to −ρ_d z* every `record_every` iterations (T, B), the
    iterations they were taken at (T,), and the final rows (B, k)."""
    z = np.array(starts, dtype=float)
    noise = np.sqrt(2 * step_size / np.asarray(beta, dtype=float))[:, None]
    flip = np.asarray(sign_flip, dtype=bool)
    spurious = -spurious_scale(problem.depth) * problem.z_star
    iterations, to_truth, to_spurious = [], [], []
    for step in range(steps + 1):
        if step % record_every == 0:
            iterations.append(step)
            to_truth.append(np.linalg.norm(z - problem.z_star, axis=1))
            to_spurious.append(np.linalg.norm(z - spurious, axis=1))
        if step == steps:
            break
        if flip.any():
            better = flip & (problem.loss(-z) < problem.loss(z))
            z[better] = -z[better]
        z = z - step_size * problem.gradient(z) + noise * rng.standard_normal(z.shape)
    return {
        "iterations": np.array(iterations),
        "to_truth": np.array(to_truth),
        "to_spurious": np.array(to_spurious),
        "final": z,
    }


# ------------------------------------------------------------------------------------------------------------
# IGO's toy setting: a 2-D point set for the non-affine forward SDEs, and a sample-quality distance.


def ring_of_gaussians(n: int, modes: int, radius: float, std: float, generator: torch.Generator) -> torch.Tensor:
    """n points (n, 2) from `modes` equal Gaussians of std `std` spaced evenly on a circle of `radius`."""
    which = torch.randint(modes, (n,), generator=generator)
    angle = 2 * math.pi * which.double() / modes
    centres = radius * torch.stack((angle.cos(), angle.sin()), dim=1)
    return (centres + std * torch.randn(n, 2, generator=generator, dtype=torch.float64)).float()


def energy_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Székely's energy distance 2E‖X − Y‖ − E‖X − X′‖ − E‖Y − Y′‖ between two samples (n, d), (m, d): zero
    exactly when the distributions agree (the V-statistic, so slightly positive for equal finite samples)."""
    a, b = a.double().flatten(1), b.double().flatten(1)
    return float(2 * torch.cdist(a, b).mean() - torch.cdist(a, a).mean() - torch.cdist(b, b).mean())
