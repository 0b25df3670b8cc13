"""Forward SDEs and the samplers that reverse them (score_sde style: SDE objects know their own formulas,
samplers take any SDE and any score function).

dx = f(x, t) dt + g(t) dW on t ∈ [eps, T]. The VP-SDE has an affine drift, so p_t(x | x0) is Gaussian in
closed form and training pairs are drawn in one step. The non-affine drifts of IGO (Arnold's cat map,
Lotka–Volterra) have no closed form: `SDE.simulate` runs Euler–Maruyama, lands exactly on each item's t,
keeps intermediate iterates x_τ (IGO uses τ = t/2) and returns the denoising target of the last EM step,
the one Gaussian transition whose score we know.

Shapes: x is (B, ...), times are (B,) tensors, `std` values are (B,). Every random draw comes from the
`torch.Generator` passed in (callers seed it per item through `sgilo.seeding`); draws are made on the
generator's device, so a CPU generator gives the same noise whatever device the tensors live on.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch
from scipy.integrate import solve_ivp
from torch import Tensor

ScoreFn = Callable[[Tensor, Tensor], Tensor]  # score_fn(x, t) -> ∇x log p_t(x), t a (B,) tensor
Progress = Callable[[int, int], None]  # progress(step_done, steps_total)
Noise = Callable[[Tensor], Tensor]  # noise(like) -> standard normal draws shaped like `like`, on its device and dtype

# float32 times like 0.3 make t/dt come out as 30.000001; without the slack that would cost an extra step.
_STEP_COUNT_SLACK = 1e-6


def per_item(values: Tensor, like: Tensor) -> Tensor:
    """View a (B,) tensor as (B, 1, ..., 1) so it broadcasts against a (B, ...) tensor."""
    return values.reshape(values.shape[0], *([1] * (like.ndim - 1)))


def time_vector(t: float | Tensor, like: Tensor) -> Tensor:
    """Times as a (B,) tensor on `like`'s device and dtype; a scalar applies to every item."""
    t = torch.as_tensor(t, dtype=like.dtype, device=like.device)
    return t.expand(like.shape[0]).clone() if t.ndim == 0 else t.reshape(like.shape[0])


def _normal(shape: Sequence[int], generator: torch.Generator, like: Tensor) -> Tensor:
    """Standard normal noise from `generator`, moved to `like`'s device (see the module notes)."""
    noise = torch.randn(tuple(shape), generator=generator, device=generator.device, dtype=like.dtype)
    return noise.to(like.device)


def generator_noise(generator: torch.Generator) -> Noise:
    """A noise source drawing from one `torch.Generator` (the samplers' default)."""
    return lambda like: _normal(like.shape, generator, like)


def em_grid(start: Tensor, end: Tensor, dt: float) -> tuple[Tensor, Tensor]:
    """Per item, the number of Euler–Maruyama steps over [start, end] and their size: ceil(length/dt)
    equal steps, so the last one lands exactly on `end` and no step exceeds dt."""
    steps = torch.ceil((end - start).double() / dt - _STEP_COUNT_SLACK).clamp_min(0).long()
    return steps, (end - start) / steps.clamp_min(1).to(end.dtype)


@dataclass(frozen=True)
class Trajectory:
    """What `SDE.simulate` returns: x_t, the kept iterates and the last EM step's denoising target.

    x_t = m + target_std·target_eps with m = x_prev + f(x_prev)Δ, so the conditional score of that step is
    −target_eps / target_std: the DSM target for a drift with no closed-form marginal.
    """

    x_t: Tensor
    intermediates: dict[float, Tensor]  # fraction → x at fraction·t (exactly on the EM grid)
    target_eps: Tensor  # same shape as x_t
    target_std: Tensor  # (B,)
    intermediate_targets: dict[float, tuple[Tensor, Tensor]] = field(
        default_factory=dict
    )  # fraction → (eps, std) of its last step


class SDE:
    """dx = f(x, t) dt + g(t) dW on [eps, T]. Subclasses give f and g, and the marginal when it is known."""

    T: float = 1.0
    eps: float = 1e-3
    dt: float = 1e-2  # default Euler–Maruyama step of `simulate` (build_sde sets it from the params)

    def drift(self, x: Tensor, t: Tensor) -> Tensor:
        raise NotImplementedError

    def diffusion(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def marginal(self, x0: Tensor, t: float | Tensor) -> tuple[Tensor, Tensor] | None:
        """(mean, std) of p_t(x | x0) when known in closed form, else None (then simulate)."""
        return None

    def prior_sample(self, shape: Sequence[int], generator: torch.Generator) -> Tensor:
        """A draw of p_T; standard normal, which is what the VP family converges to."""
        return torch.randn(tuple(shape), generator=generator, device=generator.device)

    def corrector_alpha(self, t: Tensor) -> Tensor:
        """Scale of the Langevin corrector's step (score_sde: α_i of the discretised chain; 1 in general)."""
        return torch.ones_like(t)

    def simulate(
        self,
        x0: Tensor,
        t: float | Tensor,
        generator: torch.Generator,
        dt: float | None = None,
        keep: Iterable[float] = (0.5,),
    ) -> Trajectory:
        """Euler–Maruyama from 0 to t (per item), keeping x at each fraction in `keep` of its own t.

        The path is cut at the kept times and each piece gets ceil(length/dt) equal steps, so every item
        lands exactly on its kept times and on t, whatever dt; items with fewer steps freeze once done.
        """
        t, dt = time_vector(t, x0), self.dt if dt is None else float(dt)
        keep = tuple(float(k) for k in keep)
        if (t <= 0).any():
            raise ValueError("simulate needs t > 0 for every item (the last step defines the DSM target)")
        if dt <= 0:
            raise ValueError(f"dt must be positive; got {dt}")
        if any(not 0.0 <= k <= 1.0 for k in keep):
            raise ValueError(f"keep fractions must lie in [0, 1]; got {keep}")
        x, start, intermediates, targets = x0, torch.zeros_like(t), {}, {}
        for fraction in sorted(set(keep) | {1.0}):
            end = t * fraction
            x, target_eps, target_std = self._euler_maruyama(x, start, end, generator, dt)
            if fraction in keep:
                intermediates[fraction] = x
                targets[fraction] = (target_eps, target_std)
            start = end
        return Trajectory(x, intermediates, target_eps, target_std, targets)

    def _euler_maruyama(
        self, x: Tensor, start: Tensor, end: Tensor, generator: torch.Generator, dt: float
    ) -> tuple[Tensor, Tensor, Tensor]:
        """EM from start to end (both (B,)); returns x_end and the (eps, std) of each item's last step."""
        steps, h = em_grid(start, end, dt)
        target_eps, target_std = torch.zeros_like(x), torch.zeros_like(start)
        for k in range(int(steps.max())):
            s = start + k * h
            noise = _normal(x.shape, generator, x)
            step_std = self.diffusion(s) * h.sqrt()
            x_next = x + self.drift(x, s) * per_item(h, x) + per_item(step_std, x) * noise
            last = steps - 1 == k
            target_eps = torch.where(per_item(last, x), noise, target_eps)
            target_std = torch.where(last, step_std, target_std)
            x = torch.where(per_item(k < steps, x), x_next, x)  # finished items stay where they landed
        return x, target_eps, target_std

    def sample_marginal(
        self, x0: Tensor, t: float | Tensor, generator: torch.Generator, dt: float | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """(x_t, eps, std) with x_t = mean + std·eps: closed form when known, else the last EM step of
        `simulate` (dt is used only then). Either way −eps/std is the denoising score-matching target."""
        known = self.marginal(x0, t)
        if known is None:
            trajectory = self.simulate(x0, t, generator, dt=dt, keep=())
            return trajectory.x_t, trajectory.target_eps, trajectory.target_std
        mean, std = known
        eps = _normal(x0.shape, generator, x0)
        return mean + per_item(std, x0) * eps, eps, std

    def reverse_drift(self, x: Tensor, t: Tensor, score: Tensor) -> Tensor:
        """Drift of the reverse-time SDE (Anderson 1982), f − g² ∇log p_t, integrated from T down to eps."""
        return self.drift(x, t) - per_item(self.diffusion(t) ** 2, x) * score

    def ode_drift(self, x: Tensor, t: Tensor, score: Tensor) -> Tensor:
        """Probability-flow ODE drift f − ½ g² ∇log p_t: same marginals as the SDE, no noise."""
        return self.drift(x, t) - 0.5 * per_item(self.diffusion(t) ** 2, x) * score


class VPSchedule(SDE):
    """The VP noise schedule β(t) = β_min + t(β_max − β_min), g(t) = sqrt(β(t)), shared by VPSDE and DriftSDE."""

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, N: int = 1000) -> None:
        self.beta_min, self.beta_max, self.N = float(beta_min), float(beta_max), int(N)

    def beta(self, t: Tensor) -> Tensor:
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def diffusion(self, t: Tensor) -> Tensor:
        return self.beta(t).sqrt()

    def corrector_alpha(self, t: Tensor) -> Tensor:
        """1 − β_i of the discrete chain with N steps, as in score_sde's Langevin corrector for the VP-SDE."""
        return 1.0 - self.beta(t) / self.N

    def log_mean_coeff(self, t: Tensor) -> Tensor:
        """log m(t) = −¼t²(β_max − β_min) − ½tβ_min: the VP-SDE's p_t(x | x0) has mean m(t)·x0 and var 1 − m(t)².

        On the schedule rather than VPSDE because a DriftSDE's score model is preconditioned with the VP
        coefficients of the same schedule (`sgilo.score_model.Preconditioned`)."""
        return -0.25 * t**2 * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min


class VPSDE(VPSchedule):
    """Variance-preserving SDE (Song et al. 2021): f = −½β(t)x, g = sqrt(β(t)); p_t(x | x0) is Gaussian."""

    def drift(self, x: Tensor, t: Tensor) -> Tensor:
        return -0.5 * per_item(self.beta(t), x) * x

    def marginal(self, x0: Tensor, t: float | Tensor) -> tuple[Tensor, Tensor]:
        log_mean = self.log_mean_coeff(time_vector(t, x0))
        std = torch.sqrt(-torch.expm1(2.0 * log_mean))  # expm1 keeps std accurate at t ≈ eps
        return per_item(log_mean.exp(), x0) * x0, std


class Drift(Protocol):
    """A drift written in terms of the VP schedule: f(x, t) = drift(x, β(t)), β broadcast as (B, 1, ...)."""

    def __call__(self, x: Tensor, beta: Tensor) -> Tensor: ...


class DriftSDE(VPSchedule):
    """dx = f(x, t) dt + sqrt(β(t)) dW for any `Drift` f: the non-affine forward processes of IGO.

    There is no closed-form marginal, so training pairs come from `simulate`. `prior_sample` is a standard
    normal: exact for `LinearDrift`, only approximate for non-affine drifts, whose p_T is a perturbed
    N(0, I) (the drifts below keep the −½βx contraction, so p_T stays close to it and finite).
    """

    def __init__(self, drift: Drift, beta_min: float = 0.1, beta_max: float = 20.0, N: int = 1000) -> None:
        super().__init__(beta_min, beta_max, N)
        self.drift_fn = drift

    def drift(self, x: Tensor, t: Tensor) -> Tensor:
        return self.drift_fn(x, per_item(self.beta(t), x))


def _on_pairs(x: Tensor, pair_fn: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]) -> Tensor:
    """Apply pair_fn to consecutive coordinates (x0, x1), (x2, x3), … of each flattened item.

    An odd trailing coordinate has no partner and gets 0 (so the full drift is just the linear one there).
    """
    flat = x.reshape(x.shape[0], -1)
    paired = flat.shape[1] // 2 * 2
    pairs = flat[:, :paired].reshape(x.shape[0], -1, 2)
    out_x, out_y = pair_fn(pairs[..., 0], pairs[..., 1])
    out = torch.zeros_like(flat)
    out[:, :paired] = torch.stack((out_x, out_y), dim=-1).reshape(x.shape[0], paired)
    return out.reshape(x.shape)


@dataclass(frozen=True)
class LinearDrift:
    """f = −½β(t)x: DriftSDE(LinearDrift()) is the VP-SDE, simulated instead of solved (a test of `simulate`)."""

    def __call__(self, x: Tensor, beta: Tensor) -> Tensor:
        return -0.5 * beta * x


@dataclass(frozen=True)
class CatMapDrift:
    """Pull each coordinate pair towards its image under Arnold's cat map on the torus of period L.

    f = β(t)·(−½x + strength·d(x)), with d the shortest torus displacement from (x, y) to its cat-map image
    C(x, y) = ((x + y) mod L, (x + 2y) mod L), i.e. d = wrap(C(x, y) − (x, y)) = (wrap(y), wrap(x + y)),
    wrap(u) = ((u + L/2) mod L) − L/2 ∈ [−L/2, L/2). L = 2 makes the torus the [−1, 1) range of min–max
    scaled latents. d is bounded by L/2, so the −½x contraction keeps the process stable (an OU process
    with bounded forcing); scaling by β(t) makes it a time change of one autonomous SDE, like the VP-SDE.
    With the defaults p_T stays close to N(0, I) (std ≈ 1.07 at t = 1 in our runs, 1.02 for the linear drift).
    """

    strength: float = 1.0
    period: float = 2.0

    def wrap(self, u: Tensor) -> Tensor:
        return torch.remainder(u + 0.5 * self.period, self.period) - 0.5 * self.period

    def displacement(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        image_x, image_y = self.wrap(x + y), self.wrap(x + 2 * y)
        return self.wrap(image_x - x), self.wrap(image_y - y)

    def __call__(self, x: Tensor, beta: Tensor) -> Tensor:
        return beta * (-0.5 * x + self.strength * _on_pairs(x, self.displacement))


@dataclass(frozen=True)
class LotkaVolterraDrift:
    """Predator–prey dynamics on coordinate pairs (x = prey, y = predator), kept finite by a soft bound.

    f = β(t)·(−½x + strength·h(u, v)) with u = R·tanh(x/R), v = R·tanh(y/R) (R = `bound`) and
    h = (a·u − b·u·v, d·u·v − c·v). The quadratic terms would blow up on unbounded latents; the tanh
    bound caps |h| at a·R + b·R² (resp. d·R² + c·R) while leaving small latents untouched, so the −½x
    contraction wins far out and the process stays finite. Defaults a = 2/3, b = 4/3, c = d = 1 are the
    textbook cycle; strength 0.25 keeps the origin contracting (−½ + strength·a = −⅓) and p_T near N(0, I)
    (prey std ≈ 1.26, predator ≈ 0.89 at t = 1 in our runs, against 1.02 for the linear drift at dt = 1e-2).
    """

    strength: float = 0.25
    a: float = 2.0 / 3.0
    b: float = 4.0 / 3.0
    c: float = 1.0
    d: float = 1.0
    bound: float = 2.0

    def predator_prey(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        u, v = self.bound * torch.tanh(x / self.bound), self.bound * torch.tanh(y / self.bound)
        return self.a * u - self.b * u * v, self.d * u * v - self.c * v

    def __call__(self, x: Tensor, beta: Tensor) -> Tensor:
        return beta * (-0.5 * x + self.strength * _on_pairs(x, self.predator_prey))


SDE_NAMES = ("vp", "linear", "catmap", "lotka_volterra")


def build_sde(name: str, beta_min: float = 0.1, beta_max: float = 20.0, dt: float = 1e-2) -> SDE:
    """The SDE a params file names: vp (closed form) or a DriftSDE (linear, catmap, lotka_volterra) whose
    `simulate` steps by dt. The non-affine drifts take their documented defaults."""
    drifts = {"linear": LinearDrift, "catmap": CatMapDrift, "lotka_volterra": LotkaVolterraDrift}
    if name == "vp":
        sde: SDE = VPSDE(beta_min, beta_max)
    elif name in drifts:
        sde = DriftSDE(drifts[name](), beta_min, beta_max)
    else:
        raise ValueError(f"unknown SDE {name!r}; expected one of {SDE_NAMES}")
    sde.dt = float(dt)
    return sde


def target_std(sde: SDE, t: float | Tensor, dt: float | None = None, keep: Iterable[float] = (0.5,)) -> Tensor:
    """σ(t) that turns a predicted ε into a score, −ε̂/σ(t), consistently with how the targets were drawn.

    The marginal std when the SDE has one; otherwise the std g(t − Δ)·sqrt(Δ) of the last EM step that
    `simulate(…, dt, keep)` takes to reach t (pass the same dt and keep as when simulating).
    """
    t = t.reshape(-1) if torch.is_tensor(t) else torch.tensor([float(t)])
    known = sde.marginal(torch.ones_like(t), t)
    if known is not None:
        return known[1]
    last_start = t * max((float(k) for k in keep if float(k) < 1.0), default=0.0)
    _, h = em_grid(last_start, t, sde.dt if dt is None else float(dt))
    return sde.diffusion(t - h) * h.sqrt()


def training_pairs(
    sde: SDE, x0: Tensor, t: Tensor, tau_fraction: float, generator: torch.Generator, dt: float | None = None
) -> dict[str, Tensor]:
    """Score-training pairs for a batch, each item at its own t: x_t with its denoising target (eps, std), and the
    intermediate iterate x_τ (τ = tau_fraction·t, on the same path) with its own target, IGO's second term.

    Affine SDEs use their closed-form transitions, x_τ ~ p(x_τ|x0) and then x_t ~ p(x_t|x_τ), with targets relative
    to x0; the others are simulated with Euler–Maruyama (`SDE.simulate`, step dt) and use the last step's target."""
    marginal_t = sde.marginal(x0, t)
    if marginal_t is None:
        path = sde.simulate(x0, t, generator, dt=dt, keep=(tau_fraction,))
        eps_tau, std_tau = path.intermediate_targets[tau_fraction]
        return {
            "t": t,
            "x_t": path.x_t,
            "eps": path.target_eps,
            "std": path.target_std,
            "tau": tau_fraction * t,  # the simulated path lands exactly there
            "x_tau": path.intermediates[tau_fraction],
            "eps_tau": eps_tau,
            "std_tau": std_tau,
        }
    tau = (tau_fraction * t).clamp_min(sde.eps)
    mean_tau, std_tau = sde.marginal(x0, tau)
    eps_tau = torch.randn(x0.shape, generator=generator)
    x_tau = mean_tau + per_item(std_tau, x0) * eps_tau
    mean_t, std_t = marginal_t
    ratio = per_item(sde.marginal(torch.ones_like(t), t)[0] / sde.marginal(torch.ones_like(t), tau)[0], x0)
    bridge = (per_item(std_t, x0).square() - ratio.square() * per_item(std_tau, x0).square()).clamp_min(0).sqrt()
    x_t = ratio * x_tau + bridge * torch.randn(x0.shape, generator=generator)
    eps = (x_t - mean_t) / per_item(std_t, x0)
    return {
        "t": t,
        "x_t": x_t,
        "eps": eps,
        "std": std_t,
        "tau": tau,
        "x_tau": x_tau,
        "eps_tau": eps_tau,
        "std_tau": std_tau,
    }


def _langevin_step(sde: SDE, score_fn: ScoreFn, x: Tensor, t: Tensor, noise_source: Noise, snr: float) -> Tensor:
    """One Langevin corrector step with the step size set by a signal-to-noise ratio (Song et al. 2021).

    As in score_sde the norms are averaged over the batch: a per-item step (snr·|z|/|score|)² explodes for
    items near a mode in low dimensions, where |score| → 0. The step is thus shared by the batch, like the
    generator that draws its noise. A batch whose score is exactly zero takes no step.
    """
    score = score_fn(x, t)
    noise = noise_source(x)
    score_norm = score.reshape(x.shape[0], -1).norm(dim=1).mean()
    noise_norm = noise.reshape(x.shape[0], -1).norm(dim=1).mean()
    if float(score_norm) == 0.0:
        return x
    step = 2.0 * sde.corrector_alpha(t) * (snr * noise_norm / score_norm) ** 2
    return x + per_item(step, x) * score + per_item((2.0 * step).sqrt(), x) * noise


def reverse_sde_sample(
    sde: SDE,
    score_fn: ScoreFn,
    shape: Sequence[int],
    generator: torch.Generator | None,
    steps: int = 500,
    corrector_steps: int = 1,
    snr: float = 0.16,
    x_T: Tensor | None = None,
    t_start: float | None = None,
    progress: Progress | None = None,
    noise: Noise | None = None,
) -> Tensor:
    """Predictor–corrector sampler: Langevin corrector, then an Euler–Maruyama step of the reverse SDE.

    Runs from t_start (default T) down to eps on `steps` equal steps; a t_start < T with x_T = a forward-
    perturbed input is the hot start / SDEdit use; pass corrector_steps=0 there, because the Langevin
    step is set by snr and not by the time step, so at small t it re-samples within the mode and forgets
    x_T. Starts from x_T if given, else a prior draw from `generator`. The steps' noise comes from `noise`
    (default: `generator`), so a caller with its own streams (SGILO's one per chain) runs this same loop. The last
    step returns the mean and draws no noise, as score_sde does. Runs without autograd: a score_fn that needs
    gradients must enable them itself.
    """
    if noise is None:
        if generator is None:
            raise ValueError("reverse_sde_sample needs a generator or a noise source")
        noise = generator_noise(generator)
    t_start = sde.T if t_start is None else float(t_start)
    grid = torch.linspace(t_start, sde.eps, steps + 1).tolist()
    with torch.no_grad():
        if x_T is None:
            if generator is None:
                raise ValueError("a prior draw (no x_T) needs a generator")
            x = sde.prior_sample(shape, generator)
        else:
            x = x_T.clone()
        for k in range(steps):
            t = time_vector(grid[k], x)
            for _ in range(corrector_steps):
                x = _langevin_step(sde, score_fn, x, t, noise, snr)
            h = grid[k] - grid[k + 1]
            x = x - sde.reverse_drift(x, t, score_fn(x, t)) * h
            if k + 1 < steps:
                x = x + per_item(sde.diffusion(t) * math.sqrt(h), x) * noise(x)
            if progress is not None:
                progress(k + 1, steps)
    return x


def probability_flow_sample(
    sde: SDE,
    score_fn: ScoreFn,
    x_T: Tensor,
    t_start: float | None = None,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    method: str = "RK45",
) -> tuple[Tensor, int]:
    """Integrate the probability-flow ODE dx/dt = f − ½g²∇log p_t from t_start (default T) to eps.

    Uses scipy's adaptive `solve_ivp` on the flattened batch (in float64), so its step sizes are shared by
    the batch: an item's result depends on the others only within the tolerances. Returns (x_eps, number
    of score evaluations), the usual cost measure of ODE sampling.
    """
    t_start = sde.T if t_start is None else float(t_start)
    shape, dtype, device = x_T.shape, x_T.dtype, x_T.device

    def rhs(t: float, y: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(y).reshape(shape).to(device=device, dtype=dtype)
        t_vec = time_vector(t, x)
        with torch.no_grad():
            velocity = sde.ode_drift(x, t_vec, score_fn(x, t_vec))
        return velocity.reshape(-1).double().cpu().numpy()

    y0 = x_T.detach().reshape(-1).double().cpu().numpy()
    solution = solve_ivp(rhs, (t_start, sde.eps), y0, method=method, rtol=rtol, atol=atol, t_eval=[sde.eps])
    if not solution.success:
        raise RuntimeError(f"probability-flow ODE failed: {solution.message}")
    x_eps = torch.from_numpy(solution.y[:, -1].copy()).reshape(shape).to(device=device, dtype=dtype)
    return x_eps, int(solution.nfev)
