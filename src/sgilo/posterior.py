"""Reconstruction with the learned latent prior: SGILO's posterior sampler and the GNC flow.

Both run ILO's schedule up to the prior's layer k as a warm start, then replace ILO's l1 ball at layer k by the
score model (`sgilo.inversion.LatentStep`): after every Adam step on the measurement loss, the representation h
is moved in the score model's scaled coordinates u = scale(h):

- SGILO (Daras et al. 2022): u ← u + λ·(hot(u) − u) + sqrt(2ηT)·ξ, where hot(u) perturbs u to a small t0 along
  the forward SDE and runs the reverse SDE back (the SGILO code's "hot sampler"; with hot_steps 0, one Tweedie
  denoising step at t0 instead, and λ·(D(u) − u) = η·∇log p_t0(u) with η = λ·(σ/a)²(t0)): a Langevin step of size η
  on the prior smoothed to t0, with SGLD's noise for temperature T. With the paper's Adam data step the chains are
  its heuristic sampler; with the langevin data step (η·∇log p(y | u), Gaussian likelihood) and hot_steps 0 they are
  unadjusted Langevin on [p(y | u)·p_t0(u)]^(1/T), the posterior at T = 1 up to the O(η) bias of the discretisation
  (tests/test_posterior.py checks both against the closed form on a linear-Gaussian model). Several chains per
  measurement give posterior samples, their mean and spread.
- GNC flow (Kobler & Pock 2023): u ← u + λ·(D(u, σ_i) − u) with Tweedie's denoiser D(u, σ) = u + σ²∇log p_σ(u)
  at a smoothing σ_i annealed from large (a convex energy) to small; deterministic, one chain.

For the VP-SDE, x_t = a(t)·x0 + σ(t)·ε, so x_t/a is x0 smoothed by N(0, (σ/a)²) and D(u) = u − (σ/a)·ε̂(a·u, t).
Noise is drawn per chain from its own seed: a batch gives the same chains as running them one by one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import Tensor

from sgilo.config import GNCConfig, SGILOConfig
from sgilo.inversion import LayerPhase, Options, Perceptual, Result, decode, invert
from sgilo.io import CheckpointError, load_torch, save_torch
from sgilo.latents import LatentScaler
from sgilo.score_model import Preconditioned, ScoreViT
from sgilo.sde import (
    SDE,
    build_sde,
    per_item,
    reverse_sde_sample,
    time_vector,
)
from sgilo.seeding import item_seed, torch_generator
from sgilo.stylegan2 import Generator

# 2: the skip c(t)·x and the SDE moved from the ScoreViT's config to the checkpoint's "data_std" and "sde"
# (`Preconditioned`); format 1 files still load, to the same outputs.
FORMAT = "sgilo.score/2"
FORMATS_READ = ("sgilo.score/1", FORMAT)


# --------------------------------------------------------------------------------------------------- prior
@dataclass
class LatentPrior:
    """A trained score model of the layer-`layer` representations, with everything needed to use it."""

    model: Preconditioned  # predicts ε on scaled latents; holds the SDE
    scaler: LatentScaler
    sde_config: dict  # name, beta_min, beta_max, dt: how the training targets were drawn (`build_sde`)
    layer: int
    w_plus_mean: Tensor  # (1, num_ws, style_dim): w+ for the later blocks when sampling unconditionally

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.model.shape)

    @property
    def sde(self) -> SDE:
        return self.model.sde

    def score(self, u: Tensor, t: Tensor) -> Tensor:
        return self.model.score(u, t)

    def to(self, device: torch.device | str) -> LatentPrior:
        return replace(self, model=self.model.to(device), w_plus_mean=self.w_plus_mean.to(device))

    def save(self, path: Path) -> None:
        backbone: ScoreViT = self.model.backbone
        save_torch(
            {
                "format": FORMAT,
                "model": {k: v.cpu() for k, v in backbone.state_dict().items()},
                "config": backbone.config(),
                "data_std": self.model.data_std,
                "scaler": self.scaler.state_dict(),
                "sde": self.sde_config,
                "layer": self.layer,
                "w_plus_mean": self.w_plus_mean.cpu(),
                "tau_fraction": self.model.keep[0],
            },
            path,
        )

    @classmethod
    def load(cls, path: str | Path, device: torch.device | str = "cpu") -> LatentPrior:
        """Read a score stage's model.pt; a file of another kind raises CheckpointError naming it."""
        state = load_torch(Path(path))
        if not isinstance(state, dict) or state.get("format") not in FORMATS_READ:
            found = state.get("format") if isinstance(state, dict) else None
            raise CheckpointError(
                f"{path}: not an sgilo score model of a format this code reads ({', '.join(FORMATS_READ)}; the file "
                f"has {found!r}); point to the score stage's model.pt, or rerun the score stage to rewrite it"
            )
        config = dict(state["config"])
        shape = config.pop("shape")
        sde_config = dict(state["sde"])
        data_std = _format1_skip(path, config, sde_config) if state["format"] == "sgilo.score/1" else state["data_std"]
        backbone = ScoreViT(shape, **config)
        backbone.load_state_dict(state["model"])
        sde = build_sde(sde_config["name"], sde_config["beta_min"], sde_config["beta_max"], sde_config["dt"])
        model = Preconditioned(backbone, sde, data_std, keep=(float(state.get("tau_fraction", 0.5)),))
        model.eval().requires_grad_(False)
        prior = cls(
            model,
            LatentScaler.from_state_dict(state["scaler"]),
            sde_config,
            int(state["layer"]),
            state["w_plus_mean"].float(),
        )
        return prior.to(device)


def _format1_skip(path: str | Path, config: dict, sde_config: dict) -> float | None:
    """A format-1 ScoreViT config carried the skip's data std and the schedule: pops them, returns the std."""
    schedule = (config.pop("beta_min", 0.1), config.pop("beta_max", 20.0))
    if schedule != (sde_config["beta_min"], sde_config["beta_max"]):
        raise CheckpointError(
            f"{path}: the model's skip used β_min, β_max = {schedule}, its SDE {sde_config['beta_min']}, "
            f"{sde_config['beta_max']}; this code keeps one schedule per model: rerun the score stage"
        )
    return config.pop("skip_data_std", None)


@torch.no_grad()
def sample_latents(prior: LatentPrior, n: int, seed: int, steps: int, device: torch.device | str = "cpu") -> Tensor:
    """n unconditional layer-k representations (de-normalised) from the reverse SDE."""
    shape = (n, *prior.shape)
    u = reverse_sde_sample(
        prior.sde, prior.score, shape, torch_generator(seed, "prior_samples", device=device), steps=steps
    )
    return prior.scaler.denormalize(u.float())


@torch.no_grad()
def decode_latents(generator: Generator, prior: LatentPrior, latents: Tensor) -> Tensor:
    """Images in [-1, 1] of layer-k representations, with the later blocks' w+ at the training mean."""
    w = prior.w_plus_mean.to(latents.device).expand(latents.shape[0], -1, -1)
    return decode(generator, latents, prior.layer, w)


# ------------------------------------------------------------------------------------------- latent steps
class _ChainNoise:
    """Standard normal draws with one generator per chain, so chain i's noise never depends on the batch."""

    def __init__(self, seeds: Sequence[int], purpose: str) -> None:
        self.generators = [torch_generator(seed, purpose) for seed in seeds]

    def __call__(self, like: Tensor) -> Tensor:
        if like.shape[0] != len(self.generators):
            raise ValueError(f"noise for {len(self.generators)} chains asked for a batch of {like.shape[0]}")
        draws = [torch.randn(like.shape[1:], generator=g) for g in self.generators]
        return torch.stack(draws).to(like.device, like.dtype)


def _vp_coefficients(prior: LatentPrior, t: Tensor, like: Tensor) -> tuple[Tensor, Tensor]:
    known = prior.sde.marginal(torch.ones_like(like), t)
    if known is None:
        raise ValueError(
            f"this step needs an SDE with a closed-form marginal (vp); the prior was trained with {prior.sde_config['name']!r}"
        )
    mean, std = known
    return mean, per_item(std, like)


class SGLDStep:
    """SGILO's Langevin move at the prior's layer (see the module notes).

    In the score model's coordinates u, with η = weight·s² and s = σ(t0)/a(t0) (`step_size`):
        u ← u + weight·(target(u) − u) [+ η·∇_u log p(y | u)] + sqrt(2ηT)·ξ
    where target is the hot start, or Tweedie's denoiser (hot_steps 0), for which weight·(D(u) − u) = η·∇log p_t0(u);
    the bracket is the langevin data step, log p(y | u) = −‖A(G(u)) − y‖²/(2σ_y²) (σ_y: measurement_std). With a
    perceptual weight w in the data term, its energy is entries/(2σ_y²)·(MSE + w·LPIPS): a Gibbs posterior, not a
    Gaussian likelihood's.
    """

    def __init__(self, prior: LatentPrior, config: SGILOConfig, seeds: Sequence[int], entries: int = 1) -> None:
        """`entries`: the number of values in one measurement, which turns its mean squared error into a log-likelihood."""
        self.layer, self.prior, self.config, self.entries = prior.layer, prior, config, entries
        self.noise = _ChainNoise(seeds, "sgld")
        self.takes_data_gradient = config.data_step == "langevin"
        self.step_size = config.weight * smoothing_std(prior, config.t0) ** 2
        self.noise_std = math.sqrt(2 * self.step_size * config.temperature)

    def __call__(self, h: Tensor, step: int, steps: int, grad: Tensor | None = None) -> Tensor:
        config, prior = self.config, self.prior
        u = prior.scaler.normalize(h.float())
        target = self._hot(u) if config.hot_steps > 0 else self._tweedie(u)
        move = config.weight * (target - u)
        if self.takes_data_gradient:
            if grad is None:
                raise ValueError("the langevin data step needs the data term's gradient at h")
            # grad is ∇_h of each image's mean squared error; the log-likelihood is −entries/(2σ_y²) times it, and
            # h = denormalize(u) per channel, so ∇_u = ∇_h · dh/du.
            nll_grad = grad.float() * prior.scaler.jacobian(u) * (self.entries / (2 * config.measurement_std**2))
            move = move - self.step_size * nll_grad
        u = u + move + self.noise_std * self.noise(u)
        return prior.scaler.denormalize(u).to(h.dtype)

    def _hot(self, u: Tensor) -> Tensor:
        """Perturb to t0 along the forward SDE, then the reverse SDE back to ~0 (the hot-start sampler)."""
        prior, t0 = self.prior, self.config.t0
        mean, std = _vp_coefficients(prior, time_vector(t0, u), u)
        x_t0 = mean * u + std * self.noise(u)
        return reverse_sde_sample(
            prior.sde,
            prior.score,
            u.shape,
            None,
            steps=self.config.hot_steps,
            corrector_steps=0,
            x_T=x_t0,
            t_start=t0,
            noise=self.noise,
        )

    def _tweedie(self, u: Tensor) -> Tensor:
        return _denoise(self.prior, u, self.config.t0)


class GNCStep:
    """The GNC flow's move: toward Tweedie's denoiser at a smoothing level annealed over the phase."""

    takes_data_gradient = False  # Adam makes the data move; this step only denoises

    def __init__(self, prior: LatentPrior, config: GNCConfig) -> None:
        self.layer, self.prior, self.config = prior.layer, prior, config

    def time(self, step: int, steps: int) -> float:
        """Geometric from t_max to t_min over the phase's steps."""
        c = self.config
        fraction = step / max(1, steps - 1)
        return c.t_max * (c.t_min / c.t_max) ** fraction

    def __call__(self, h: Tensor, step: int, steps: int, grad: Tensor | None = None) -> Tensor:
        prior = self.prior
        u = prior.scaler.normalize(h.float())
        u = u + self.config.weight * (_denoise(prior, u, self.time(step, steps)) - u)
        return prior.scaler.denormalize(u).to(h.dtype)


def smoothing_std(prior: LatentPrior, t: float) -> float:
    """s = σ(t)/a(t): x_t/a(t) is the data smoothed by N(0, s²), so Tweedie's D(u) − u = s²·∇log p_t(u)."""
    a, std = _vp_coefficients(prior, torch.tensor([float(t)]), torch.zeros(1))
    return float(std.reshape(-1)[0] / a.reshape(-1)[0])


def _denoise(prior: LatentPrior, u: Tensor, t: float) -> Tensor:
    """Tweedie: E[x0 | x0 + (σ/a)·ε = u] = u − (σ/a)·ε̂(a·u, t)."""
    t_vec = time_vector(t, u)
    a, std = _vp_coefficients(prior, t_vec, u)
    return u - std / a * prior.model(a * u, t_vec)


# ------------------------------------------------------------------------------------------ reconstruction
@dataclass
class Posterior:
    """What SGILO and GNC return for a batch of B measurements with `chains` chains each."""

    samples: Tensor  # (B, chains, 3, size, size) in [-1, 1]
    mean: Tensor  # (B, 3, size, size): the average of the samples (the MMSE estimate)
    std: Tensor  # (B, 3, size, size): per-pixel standard deviation over chains (n − 1), on the [0, 1] scale
    latents: Tensor  # (B, chains, C + 3, H, W) at the prior's layer
    w_plus: Tensor  # (B, chains, num_ws, style_dim)
    loss: Tensor  # (B, chains) measurement MSE of each sample
    steps: int
    failures: list[
        str | None
    ]  # per measurement: None, or which chain went non-finite where (its estimate is not to be used)


def chain_seeds(seeds: Sequence[int], chains: int) -> list[int]:
    """Per-chain seeds, chain j of measurement i at index i·chains + j."""
    return [item_seed(seed, "chain", j) for seed in seeds for j in range(chains)]


def per_chain(forward: Callable[[Tensor], Tensor], chains: int) -> Callable[[Tensor], Tensor]:
    """`forward` for B images applied to B·chains images laid out as `chain_seeds` (image i's chains together)."""
    if chains == 1:
        return forward

    def apply(x: Tensor) -> Tensor:
        grouped = x.reshape(-1, chains, *x.shape[1:])
        measured = torch.stack([forward(grouped[:, j]) for j in range(chains)], 1)
        return measured.reshape(-1, *measured.shape[2:])

    return apply


def warm_phases(phases: Sequence[LayerPhase], layer: int) -> list[LayerPhase]:
    """ILO's schedule before the prior's layer: the warm start that SGILO and GNC continue from."""
    earlier = [phase for phase in phases if phase.layer < layer]
    if not earlier:
        raise ValueError(
            f"the warm start needs ILO phases below the prior's layer {layer}; got layers {[s.layer for s in phases]}"
        )
    return earlier


def score_guided_ilo(
    generator: Generator,
    forward: Callable[[Tensor], Tensor],
    y: Tensor,
    seeds: Sequence[int],
    prior: LatentPrior,
    config: SGILOConfig,
    phases: Sequence[LayerPhase],
    options: Options | None = None,
    perceptual: Perceptual | None = None,
    progress: Callable[[int], None] | None = None,
) -> Posterior:
    """Posterior samples for a batch y (B, …) measured by `forward` (any operator on B images in [0, 1]).

    The phases of `phases` (ILO's schedule) below the prior's layer are the warm start, run per chain from the
    chain's own seed (`config.warm_start` per_chain) or once per measurement (shared); `config.chains` Langevin
    chains then run at the prior's layer, all in one batch, each with its own noise.
    """
    options = options or Options()
    chains, seeds_ = config.chains, chain_seeds(seeds, config.chains)
    forward_, y_ = per_chain(forward, chains), y.repeat_interleave(chains, 0)
    if config.warm_start == "shared":
        start = invert(
            generator, forward, y, list(seeds), warm_phases(phases, prior.layer), options, perceptual, progress
        )
        start = start.repeat_interleave(chains)
    else:
        start = invert(generator, forward_, y_, seeds_, warm_phases(phases, prior.layer), options, perceptual, progress)
    result = invert(
        generator,
        forward_,
        y_,
        seeds_,
        [LayerPhase(prior.layer, config.steps, None, config.lr)],
        replace(options, keep="last"),
        perceptual,
        progress,
        latent_step=SGLDStep(prior, config, seeds_, entries=y[0].numel()),
        init=start,
    )
    return _posterior(result, len(seeds), chains)


def gnc(
    generator: Generator,
    forward: Callable[[Tensor], Tensor],
    y: Tensor,
    seeds: Sequence[int],
    prior: LatentPrior,
    config: GNCConfig,
    phases: Sequence[LayerPhase],
    options: Options | None = None,
    perceptual: Perceptual | None = None,
    progress: Callable[[int], None] | None = None,
) -> Posterior:
    """The GNC flow for a batch y (one deterministic chain per measurement; `forward` acts on B images)."""
    options = options or Options()
    schedule = [*warm_phases(phases, prior.layer), LayerPhase(prior.layer, config.steps, None, config.lr)]
    result = invert(
        generator,
        forward,
        y,
        list(seeds),
        schedule,
        replace(options, keep="last"),
        perceptual,
        progress,
        latent_step=GNCStep(prior, config),
    )
    return _posterior(result, len(seeds), 1)


def _posterior(result: Result, count: int, chains: int) -> Posterior:
    samples = result.image.clamp(-1, 1).reshape(count, chains, *result.image.shape[1:])
    samples01 = (samples + 1) / 2
    # Bessel's correction: a few chains' spread without it is (chains − 1)/chains of the posterior variance on average.
    std = samples01.std(1, correction=1) if chains > 1 else torch.zeros_like(samples01[:, 0])
    return Posterior(
        samples=samples,
        mean=samples.mean(1),
        std=std,
        latents=result.latent.reshape(count, chains, *result.latent.shape[1:]),
        w_plus=result.w_plus.reshape(count, chains, *result.w_plus.shape[1:]),
        loss=result.loss.reshape(count, chains),
        steps=result.steps,
        failures=_chain_failures(result.failures, count, chains),
    )


def _chain_failures(failures: Sequence[str | None], count: int, chains: int) -> list[str | None]:
    """A measurement fails when any of its chains does: its posterior mean and spread would hold that chain."""
    out: list[str | None] = []
    for i in range(count):
        reasons = [
            (j, reason) for j, reason in enumerate(failures[i * chains : (i + 1) * chains]) if reason is not None
        ]
        out.append(None if not reasons else reasons[0][1] if chains == 1 else f"chain {reasons[0][0]}: {reasons[0][1]}")
    return out
