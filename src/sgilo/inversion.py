"""CSGM and ILO: invert a StyleGAN2 through any forward operator, a batch of images at a time.

ILO (Daras et al. 2021) optimises the Gaussianised w+ first (that first phase alone is CSGM, Bora et al.
2017, with PULSE's latent space), then the representation entering block k, k+1, … of the generator, each
phase starting from the best point so far mapped forward and staying within an l1 ball around it.

The layer-k representation here is the pair (features, skip-RGB) that enters block k, stacked along channels:
(C + 3, H, W). ILO's public code keeps only the features and restarts the RGB skip at zero, which changes the
image at every phase switch; carrying the skip makes G_{≥k}(h) exactly the generator, so a prior learned on h
(SGILO) models what the image really is.

Batching: every image has its own seed, latent, noise, l1 centre and best-iterate record; the loss is a sum of
per-image losses and Adam is elementwise, so B images at once follow the same path as B runs of one. For the same
reason an image whose loss or latent turns NaN or infinite cannot spoil the others: it is marked failed, with the
step where it happened (`Result.failures`), and the batch goes on.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from sgilo.precision import autocast, resolve
from sgilo.seeding import torch_generator
from sgilo.stylegan2 import Generator

Perceptual = Callable[[Tensor, Tensor], Tensor]  # (x, y) in [0,1] → per-image distance (B,)


@dataclass(frozen=True)
class LayerPhase:
    """One ILO phase: optimise the input of block `layer` for `steps` steps within an l1 ball of `radius`."""

    layer: int
    steps: int
    radius: float | None = None  # l1 radius around the phase's starting point; None = unconstrained
    lr: float = 0.1


@dataclass(frozen=True)
class Options:
    geocross: float = 0.01  # weight of the geodesic cross-distance between the active w+ rows
    perceptual: float = 0.0  # weight of a perceptual distance (LPIPS) between image-shaped measurements
    optimize_noise: bool = False  # also optimise the noise maps of the active blocks
    sphere: bool = True  # keep each z row (and noise map) on its initial sphere, as PULSE/ILO do
    rampup: float = 0.05  # fraction of a phase spent ramping the lr up …
    rampdown: float = 0.75  # … and down (cosine)
    # auto | fp32 | tf32 | bf16 (sgilo.precision). fp32 here, so that a library call computes the same on every
    # machine; the stages and `sgilo reconstruct` pass what the params or --precision say (default auto).
    precision: str = "fp32"
    keep: str = "best"  # best: the iterate with the lowest measurement loss (ILO); last: the final one (a sampler's)


class LatentStep(Protocol):
    """A move of the layer-`layer` representation after each data step, in place of ILO's l1 projection
    (SGILO's Langevin step, the GNC flow's denoising step); the phase at that layer runs at a constant lr.

    With `takes_data_gradient`, Adam leaves the representation alone and the step makes the data move itself: it gets
    `grad`, the gradient of the batch's summed loss with respect to h (image i's own loss for row i)."""

    layer: int
    takes_data_gradient: bool

    def __call__(self, h: Tensor, step: int, steps: int, grad: Tensor | None = None) -> Tensor: ...


@dataclass
class Result:
    """Per-image best iterates (lowest measurement loss) of an inversion."""

    image: Tensor  # (B, 3, size, size) in [-1, 1]
    latent: Tensor | None  # (B, C + 3, H, W): the representation entering block `layer`; None for layer 0
    w_plus: Tensor  # (B, num_ws, style_dim)
    noise: list[Tensor] | None  # per-image noise maps when optimised, else None (the generator's stored maps)
    loss: Tensor  # (B,) best measurement MSE
    layer: int
    steps: int = 0
    history: list[float] = field(default_factory=list)  # mean measurement MSE per step
    z: Tensor | None = None  # (B, num_ws, style_dim): the Gaussianised latent before its leaky ReLU (to continue from)
    failures: list[str | None] = field(
        default_factory=list
    )  # per image: None, or where its optimisation went non-finite

    def repeat_interleave(self, repeats: int) -> Result:
        """Each image's iterate `repeats` times in a row: the start of several chains from one inversion."""

        def rep(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.repeat_interleave(repeats, 0)

        noise = [rep(n) for n in self.noise] if self.noise is not None else None
        return Result(
            rep(self.image),
            rep(self.latent),
            rep(self.w_plus),
            noise,
            rep(self.loss),
            self.layer,
            self.steps,
            list(self.history),
            rep(self.z),
            [reason for reason in self.failures for _ in range(repeats)],
        )


def csgm_phases(steps: int, lr: float = 0.1) -> tuple[LayerPhase, ...]:
    return (LayerPhase(layer=0, steps=steps, lr=lr),)


# l1 radii by the shape (C + 3, H, W) of the representation they bound. ILO's published ones (Daras et al. 2021, their
# code's max_radius_gen_out) at config-f's layers 1, 2, 3 (profiles/ffhq): what any other generator's are scaled from.
ILO_RADII = {(515, 4, 4): 1000.0, (515, 8, 8): 1000.0, (515, 16, 16): 6000.0}
# A profile's own radii where they are not ILO's scaled: the demo generator's (32 channels; params.yaml), for which
# ILO's per entry would give 68 and 68. They keep, per entry, the 150 and 300 tuned for the earlier 64-channel demo
# generator (docs/inversion.md), rounded. tests/test_inversion.py holds every profile's invert.phases to ilo_radii.
PROFILE_RADII = {(35, 4, 4): 80.0, (35, 8, 8): 160.0}


def ilo_radii(generator: Generator, layers: Sequence[int]) -> list[float | None]:
    """ILO's l1 radius at each of `layers` of `generator`: `sgilo reconstruct`'s default, and the profiles' numbers.

    A shape in PROFILE_RADII or ILO_RADII has its radius; any other has ILO's radius per entry at the same H×W (beyond
    16², at 16²) times its entries, so the ball allows the same deviation per entry. Layer 0 (the w+ latent) has no
    ball, nor has a layer the generator lacks (`invert` refuses that phase by name).
    """
    return [_ilo_radius(generator, layer) for layer in layers]


def _ilo_radius(generator: Generator, layer: int) -> float | None:
    if not 1 <= layer < generator.num_blocks:
        return None
    channels, height, width = generator.layer_shape(layer)
    shape = (channels + 3, height, width)
    if shape in PROFILE_RADII:
        return PROFILE_RADII[shape]
    same_size = [published for published in ILO_RADII if published[1:] == shape[1:]]
    published = same_size[0] if same_size else max(ILO_RADII, key=math.prod)
    return ILO_RADII[published] / math.prod(published) * math.prod(shape)  # ILO's own shapes: ILO's radius exactly


# ------------------------------------------------------------------------------------------ projections
def project_l1_ball(v: Tensor, radius: float | Tensor) -> Tensor:
    """Euclidean projection of each row v[i] (flattened) onto {x: ‖x‖₁ ≤ radius} (Duchi et al. 2008, Fig. 1).

    Sort |v| in decreasing order, find the largest j with u_j > (Σ_{i≤j} u_i − r)/j and soft-threshold at
    θ = (Σ_{i≤ρ} u_i − r)/ρ; rows already inside the ball are returned unchanged.
    """
    flat = v.reshape(v.shape[0], -1)
    radius = torch.as_tensor(radius, dtype=flat.dtype, device=flat.device).expand(flat.shape[0]).reshape(-1, 1)
    magnitude = flat.abs()
    inside = magnitude.sum(1, keepdim=True) <= radius
    if bool(inside.all()):
        return v
    u = magnitude.sort(dim=1, descending=True).values
    cumulative = u.cumsum(1) - radius
    index = torch.arange(1, flat.shape[1] + 1, device=flat.device, dtype=flat.dtype)
    rho = ((u * index) > cumulative).sum(1, keepdim=True).clamp_min(1)  # condition holds for a prefix of j
    theta = cumulative.gather(1, rho - 1) / rho.to(flat.dtype)
    projected = flat.sign() * (magnitude - theta.clamp_min(0)).clamp_min(0)
    return torch.where(inside, flat, projected).reshape(v.shape)


def geocross(z: Tensor) -> Tensor:
    """PULSE's geodesic cross-distance between the rows of each z (B, n, D) → (B,); pushes rows together."""
    if z.shape[1] < 2:
        return z.new_zeros(z.shape[0])
    x, y = z.unsqueeze(1), z.unsqueeze(2)
    chord = ((x - y).square().sum(-1) + 1e-9).sqrt()
    opposite = ((x + y).square().sum(-1) + 1e-9).sqrt()
    angle = 2 * torch.atan2(chord, opposite)
    return (angle.square() * z.shape[-1]).mean((1, 2)) / 8


def lr_at(t: float, lr: float, rampup: float, rampdown: float) -> float:
    """StyleGAN's projector schedule: linear warm-up over `rampup`, cosine decay over the last `rampdown`."""
    ramp = min(1.0, (1.0 - t) / rampdown) if rampdown > 0 else 1.0
    ramp = 0.5 - 0.5 * math.cos(ramp * math.pi)
    return lr * ramp * min(1.0, t / rampup)


def gaussianised_w(generator: Generator, z: Tensor) -> Tensor:
    return F.leaky_relu(z * generator.w_gauss_std + generator.w_gauss_mean, 0.2)


# ------------------------------------------------------------------------------------------- layer split
def first_w_row(layer: int) -> int:
    """The first w+ row that blocks ≥ `layer` read (block 0: rows 0, 1; block b: rows 2b−1 … 2b+1)."""
    return 0 if layer == 0 else 2 * layer - 1


def first_noise(layer: int) -> int:
    return 0 if layer == 0 else 2 * layer - 1


def encode(generator: Generator, layer: int, w_plus: Tensor, noise: Sequence[Tensor | None] | None) -> Tensor:
    """The representation h entering block `layer` (≥ 1) of the image G(w+): features and skip stacked."""
    features, skip = generator.synthesis_features(w_plus, layer, noise)
    return torch.cat([features, skip], 1)


@torch.no_grad()
def generator_latents(generator: Generator, layer: int, z: Tensor, batch_size: int = 64) -> tuple[Tensor, Tensor]:
    """(latents, w+) of the generator's own samples G(z) at layer `layer` (≥ 1): no truncation, the stored noise
    (as inversion uses), w+ the broadcast w."""
    w_plus = generator.mapping(z).unsqueeze(1).expand(-1, generator.num_ws, -1)
    latents = torch.cat(
        [encode(generator, layer, w_plus[i : i + batch_size], None) for i in range(0, len(z), batch_size)]
    )
    return latents, w_plus


def advance(
    generator: Generator, h: Tensor, start: int, stop: int, w_plus: Tensor, noise: Sequence[Tensor | None] | None
) -> Tensor:
    """Map the representation entering block `start` to the one entering block `stop` (start ≤ stop)."""
    if start == stop:
        return h
    if start == 0:
        return encode(generator, stop, w_plus, noise)
    features, skip = generator.synthesis_between(start, stop, h[:, :-3], h[:, -3:], w_plus, noise)
    return torch.cat([features, skip], 1)


def decode(
    generator: Generator, h: Tensor | None, layer: int, w_plus: Tensor, noise: Sequence[Tensor | None] | None = None
) -> Tensor:
    """G_{≥layer}(h): the image (B, 3, size, size) in about [-1, 1]."""
    if layer == 0:
        return generator.synthesis(w_plus, noise)
    return generator.synthesis_from(layer, h[:, :-3], h[:, -3:], w_plus, noise)


# -------------------------------------------------------------------------------------------- inversion
def invert(
    generator: Generator,
    forward: Callable[[Tensor], Tensor],
    y: Tensor,
    seeds: Sequence[int],
    phases: Sequence[LayerPhase],
    options: Options = Options(),
    perceptual: Perceptual | None = None,
    progress: Callable[[int], None] | None = None,
    latent_step: LatentStep | None = None,
    init: Result | None = None,
) -> Result:
    """Invert a batch: find per image the iterate whose image x (in [0,1]) best fits ‖forward(x) − y‖².

    `forward` is any differentiable operator on [0,1] images (e.g. a deepinv physics' `A`); `seeds[i]` seeds
    image i's initial z and noise. CSGM is `phases=csgm_phases(n)`. The generator's weights are frozen.
    `latent_step` (SGILO, GNC: see `sgilo.posterior`) moves the representation of its layer after every step
    of the phases at that layer; pair it with `Options(keep="last")` to return where the chain ends.
    `init` continues from an earlier inversion's result (its z, noise and layer) instead of starting from the seeds;
    the phases must then start at or after its layer.
    """
    _check(generator, y, seeds, phases, options, perceptual)
    options = replace(options, precision=resolve(options.precision, y.device))
    if latent_step is not None and latent_step.layer not in [phase.layer for phase in phases]:
        raise ValueError(
            f"latent_step acts on layer {latent_step.layer}, but no phase runs there (phases: {[s.layer for s in phases]})"
        )
    generator.requires_grad_(False)
    if not generator.gaussian_fitted:
        generator.fit_gaussian(100_000, torch_generator(0, "gaussian_fit"))
    if init is None:
        state = _State.start(generator, seeds, options.optimize_noise, y.device)
        previous_layer = 0
    else:
        state = _State.resume(init, len(seeds), phases[0].layer)
        previous_layer = init.layer
    history: list[float] = []
    for phase in phases:
        state.move_to(generator, previous_layer, phase.layer)
        step = latent_step if latent_step is not None and latent_step.layer == phase.layer else None
        _run_phase(generator, forward, y, state, phase, options, perceptual, history, progress, step)
        previous_layer = phase.layer
    if options.keep == "last":
        z, h, noise = state.z, state.h, state.noise
    else:
        z, h, noise = state.best_z, state.best_h, state.best_noise
    with torch.no_grad():
        image = decode(generator, h, previous_layer, gaussianised_w(generator, z), noise)
        loss = measurement_loss(forward, image, y) if options.keep == "last" else state.best_loss
    return Result(
        image=image.float(),
        latent=None if previous_layer == 0 else h.float(),
        w_plus=gaussianised_w(generator, z).detach(),
        noise=[n.detach() for n in noise] if noise is not None else None,
        loss=loss,
        layer=previous_layer,
        steps=sum(s.steps for s in phases) + (init.steps if init is not None else 0),
        history=history,
        z=z.detach(),
        failures=list(state.failures),
    )


def measurement_loss(forward: Callable[[Tensor], Tensor], image: Tensor, y: Tensor) -> Tensor:
    """Per-image mean squared error in measurement space; `image` in [-1, 1], measured in [0, 1]."""
    residual = forward((image.float() + 1) / 2) - y
    return residual.reshape(residual.shape[0], -1).square().mean(1)


@dataclass
class _State:
    """Current and best iterates; `h`/`best_h` live at the current phase's layer (None at layer 0)."""

    z: Tensor
    noise: list[Tensor] | None
    h: Tensor | None = None
    best_z: Tensor = None  # type: ignore[assignment]
    best_noise: list[Tensor] | None = None
    best_h: Tensor | None = None
    best_loss: Tensor = None  # type: ignore[assignment]
    failures: list[str | None] = field(default_factory=list)

    @classmethod
    def start(cls, generator: Generator, seeds: Sequence[int], optimize_noise: bool, device: torch.device) -> _State:
        zs, noises = [], []
        for seed in seeds:
            rng = torch_generator(seed, "inversion", device="cpu")
            zs.append(torch.randn(generator.num_ws, generator.style_dim, generator=rng))
            if optimize_noise:
                noises.append(generator.random_noise(1, rng))
        z = torch.stack(zs).to(device)
        noise = [torch.cat(maps).to(device) for maps in zip(*noises)] if optimize_noise else None
        best_noise = [n.clone() for n in noise] if noise is not None else None
        inf = torch.full((len(seeds),), math.inf, device=device)
        return cls(
            z=z, noise=noise, best_z=z.clone(), best_noise=best_noise, best_loss=inf, failures=[None] * len(seeds)
        )

    @classmethod
    def resume(cls, result: Result, count: int, first_layer: int) -> _State:
        """Continue from an earlier result, which becomes the best iterate so far."""
        if result.z is None or result.z.shape[0] != count:
            raise ValueError(
                f"init: a result with z for {count} images is needed, got {None if result.z is None else result.z.shape[0]}"
            )
        if first_layer < result.layer:
            raise ValueError(
                f"init ends at layer {result.layer}; the phases cannot start before it (first phase: layer {first_layer})"
            )
        noise = [n.clone() for n in result.noise] if result.noise is not None else None
        latent = result.latent.clone() if result.latent is not None else None
        return cls(
            z=result.z.clone(),
            noise=noise,
            h=latent,
            best_z=result.z.clone(),
            best_noise=[n.clone() for n in noise] if noise is not None else None,
            best_h=latent,
            best_loss=result.loss.clone(),
            failures=list(result.failures) if result.failures else [None] * count,
        )

    @torch.no_grad()
    def flag(self, values: Tensor, what: str) -> None:
        """Mark the images whose `values` (batch first) hold a NaN or Inf as failed, the first time: `what` says where."""
        bad = ~torch.isfinite(values.reshape(values.shape[0], -1)).all(1)
        if bool(bad.any()):
            for i in bad.nonzero().flatten().tolist():
                if self.failures[i] is None:
                    self.failures[i] = what

    @torch.no_grad()
    def move_to(self, generator: Generator, start: int, stop: int) -> None:
        """Begin a phase at layer `stop` from the best iterate so far (mapped forward from layer `start`)."""
        w_plus = gaussianised_w(generator, self.best_z)
        if stop > 0:
            self.best_h = advance(generator, self.best_h, start, stop, w_plus, self.best_noise).float()
            self.h = self.best_h.clone()
        self.z = self.best_z.clone()
        if self.noise is not None:
            self.noise = [n.clone() for n in self.best_noise]

    @torch.no_grad()
    def record(self, loss: Tensor) -> None:
        """Keep, per image, the iterate that `loss` (its measurement MSE) was computed at, if it is the best."""
        better = loss < self.best_loss
        if not bool(better.any()):
            return
        self.best_loss = torch.where(better, loss, self.best_loss)
        self.best_z = _where(better, self.z, self.best_z)
        if self.h is not None:
            self.best_h = _where(better, self.h, self.best_h)
        if self.noise is not None:
            self.best_noise = [_where(better, n, b) for n, b in zip(self.noise, self.best_noise)]


def _where(mask: Tensor, new: Tensor, old: Tensor) -> Tensor:
    return torch.where(mask.reshape(-1, *([1] * (new.ndim - 1))), new.detach(), old)


def _run_phase(
    generator,
    forward,
    y,
    state: _State,
    phase: LayerPhase,
    options: Options,
    perceptual,
    history,
    progress,
    latent_step: LatentStep | None = None,
) -> None:
    rows = first_w_row(phase.layer)
    z_active = state.z[:, rows:].clone().requires_grad_(True)
    variables = [z_active]
    noise_from = first_noise(phase.layer)
    noise_active = [n.requires_grad_(True) for n in state.noise[noise_from:]] if state.noise is not None else []
    variables += noise_active
    centre = None
    own_data_step = latent_step is not None and latent_step.takes_data_gradient
    if phase.layer > 0:
        centre = state.h.clone()
        state.h.requires_grad_(True)
        if not own_data_step:
            variables.append(state.h)
    spheres = [(v, _row_norms(v)) for v in [z_active, *noise_active]] if options.sphere else []
    optimizer = torch.optim.Adam(variables, lr=phase.lr)
    for step in range(phase.steps):
        for group in optimizer.param_groups:
            # A sampler needs a constant step: no cosine ramp-down at the latent step's layer.
            group["lr"] = lr_at(step / phase.steps, phase.lr, options.rampup, 0.0 if latent_step else options.rampdown)
        state.z = torch.cat([state.z[:, :rows].detach(), z_active], 1)
        w_plus = gaussianised_w(generator, state.z)
        with autocast(options.precision, y.device):
            image = decode(generator, state.h, phase.layer, w_plus, state.noise)
        data = measurement_loss(forward, image, y)
        loss = data + options.geocross * geocross(z_active)
        if perceptual is not None and options.perceptual > 0:
            loss = loss + options.perceptual * perceptual(forward((image.float() + 1) / 2).clamp(0, 1), y.clamp(0, 1))
        state.flag(loss.detach(), f"non-finite loss at step {step + 1} of the layer-{phase.layer} phase")
        state.record(data.detach())
        history.append(float(_finite_mean(data.detach())))
        optimizer.zero_grad(set_to_none=True)
        if state.h is not None:
            state.h.grad = None
        loss.sum().backward()
        optimizer.step()
        with torch.no_grad():
            for variable, norms in spheres:
                variable.mul_(norms / _row_norms(variable))
            if centre is not None and phase.radius is not None:
                state.h.copy_(centre + project_l1_ball(state.h - centre, phase.radius))
            if latent_step is not None:
                with autocast(options.precision, y.device):  # the score model runs at the generator's precision
                    grad = state.h.grad if own_data_step else None
                    state.h.copy_(latent_step(state.h.detach(), step, phase.steps, grad))
                state.flag(state.h, f"non-finite latent after the prior's step {step + 1} at layer {phase.layer}")
        if progress is not None:
            progress(1)
    with torch.no_grad():
        state.z = torch.cat([state.z[:, :rows], z_active], 1).detach()
        if state.h is not None:
            state.h = state.h.detach()
        if state.noise is not None:
            state.noise = [n.detach() for n in state.noise]
        # The last update was never scored; score it so a phase's final iterate can be kept.
        image = decode(generator, state.h, phase.layer, gaussianised_w(generator, state.z), state.noise)
        loss = measurement_loss(forward, image, y)
        state.flag(loss, f"non-finite loss after the last step of the layer-{phase.layer} phase")
        state.record(loss)


def _finite_mean(values: Tensor) -> Tensor:
    """The mean over the finite values: a failed image must not turn the whole history into NaN."""
    return values[torch.isfinite(values)].mean()


def _row_norms(v: Tensor) -> Tensor:
    """Norms over everything but the batch and first axes (a z row, or a noise map)."""
    dims = tuple(range(2, v.ndim))
    return (v.detach().square().sum(dims, keepdim=True) + 1e-9).sqrt()


def image_shaped(y: Tensor) -> bool:
    """RGB image measurements (B, 3, H, W): the only kind a perceptual distance (LPIPS) can compare."""
    return y.ndim == 4 and y.shape[1] == 3


def _check(
    generator: Generator, y: Tensor, seeds: Sequence[int], phases: Sequence[LayerPhase], options: Options, perceptual
) -> None:
    if len(seeds) != y.shape[0]:
        raise ValueError(f"one seed per measurement: got {len(seeds)} seeds for a batch of {y.shape[0]}")
    if not phases:
        raise ValueError("phases: at least one phase is needed")
    for phase in phases:
        if not 0 <= phase.layer < generator.num_blocks:
            raise ValueError(
                f"phase layer {phase.layer}: must be in [0, {generator.num_blocks - 1}] for a {generator.size}² generator"
            )
        if phase.steps < 0 or phase.lr <= 0 or (phase.radius is not None and phase.radius <= 0):
            raise ValueError(f"phase {phase}: steps must be >= 0, lr and radius > 0")
    layers = [phase.layer for phase in phases]
    if layers != sorted(layers):
        raise ValueError(f"ILO phases must go forward through the layers, got layers {layers}")
    if options.keep not in ("best", "last"):
        raise ValueError(f"options.keep must be 'best' or 'last', got {options.keep!r}")
    if options.perceptual > 0 and perceptual is None:
        raise ValueError("options.perceptual > 0 needs a perceptual distance (LPIPS); pass one or set the weight to 0")
    if options.perceptual > 0 and not image_shaped(y):
        raise ValueError(
            f"a perceptual loss needs RGB image measurements (B, 3, H, W); got {tuple(y.shape)}: set its weight to 0 for this task"
        )
