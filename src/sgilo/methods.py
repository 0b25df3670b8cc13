"""The five reconstruction methods behind one call, as the evaluate stage and `sgilo reconstruct` use them.

csgm: the Gaussianised w+ alone, for as many steps as ILO's whole schedule; ilo: ILO's schedule with its l1
radii (times a tuned scale); ilo-unconstrained: the same without radii; sgilo and gnc: ILO's schedule up to the
prior's layer, then the prior (`sgilo.posterior`). Every method sees the same measurement y and the same seeds.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from torch import Tensor

from sgilo.config import METHOD_NAMES, PRIOR_METHODS, GNCConfig, SGILOConfig
from sgilo.inversion import Options, Perceptual, Stage, image_shaped, invert
from sgilo.posterior import LatentPrior, gnc, sgilo, warm_stages


@dataclass
class Reconstruction:
    image: Tensor  # (B, 3, size, size) in [0, 1]: the estimate that is scored (SGILO: the posterior mean)
    loss: Tensor  # (B,) measurement MSE of `image`'s chain(s), averaged over chains
    steps: int  # optimisation steps per chain
    stages: list[Stage]  # the schedule run (SGILO, GNC: the warm start, then the prior's stage)
    latent: Tensor | None  # ILO: (B, C + 3, H, W) at the last stage's layer; SGILO, GNC: (B, chains, …); CSGM: None
    w_plus: Tensor  # (B, num_ws, style_dim); SGILO, GNC: (B, chains, …)
    chains: int = 1
    samples: Tensor | None = None  # (B, chains, 3, size, size) in [0, 1]: SGILO and GNC
    std: Tensor | None = None  # (B, 3, size, size): per-pixel spread over chains
    failures: list[str | None] = field(default_factory=list)  # per image: None, or why its estimate is not to be used
    data_term: str = "mse"  # what the optimisation fitted y with: "mse", or "mse + w·LPIPS" (image-shaped measurements)


def method_stages(method: str, stages: Sequence[Stage], radius_scale: float = 1.0) -> list[Stage]:
    """The schedule a method runs, from ILO's (invert.stages); SGILO and GNC take its warm start from it."""
    if method not in METHOD_NAMES:
        raise ValueError(f"unknown method {method!r}; expected one of {', '.join(METHOD_NAMES)}")
    if method == "csgm":
        return [Stage(0, sum(stage.steps for stage in stages), None, stages[0].lr)]
    if method == "ilo-unconstrained":
        return [replace(stage, radius=None) for stage in stages]
    if method == "ilo":
        return [replace(stage, radius=None if stage.radius is None else stage.radius * radius_scale) for stage in stages]
    return list(stages)


def run_stages(method: str, stages: Sequence[Stage], prior_layer: int | None = None, sgilo_config: SGILOConfig | None = None,
               gnc_config: GNCConfig | None = None, radius_scale: float = 1.0) -> list[Stage]:
    """The stages a method runs, as its Reconstruction records them: `method_stages`; SGILO and GNC: the warm start,
    then the prior's stage at `prior_layer` (its steps and lr from the method's config)."""
    schedule = method_stages(method, stages, radius_scale)
    if method not in PRIOR_METHODS:
        return schedule
    config = (sgilo_config or SGILOConfig()) if method == "sgilo" else (gnc_config or GNCConfig())
    return [*warm_stages(schedule, prior_layer), Stage(prior_layer, config.steps, None, config.lr)]


def reconstruct(method: str, generator, forward: Callable[[Tensor], Tensor], y: Tensor, seeds: Sequence[int], stages: Sequence[Stage],
                options: Options | None = None, *, radius_scale: float = 1.0, prior: LatentPrior | None = None,
                sgilo_config: SGILOConfig | None = None, gnc_config: GNCConfig | None = None,
                perceptual: Perceptual | None = None, progress: Callable[[int], None] | None = None) -> Reconstruction:
    """Reconstruct a batch of measurements y = forward(x) (any operator on B images in [0, 1], e.g. a
    `build_operator(…).physics.A`); seeds[i] seeds image i's optimisation. SGILO and GNC need the prior (a score
    stage's model.pt, `LatentPrior.load`)."""
    options, sgilo_config, gnc_config = options or Options(), sgilo_config or SGILOConfig(), gnc_config or GNCConfig()
    if options.perceptual > 0 and not image_shaped(y):
        # As in ILO's code, LPIPS compares images: a measurement that is not one (cs, colorize) is fitted by its MSE
        # alone, so one perceptual weight serves a profile's every task.
        options = replace(options, perceptual=0.0)
    term = f"mse + {options.perceptual:g}·LPIPS" if options.perceptual > 0 else "mse"
    schedule = method_stages(method, stages, radius_scale)
    if method in PRIOR_METHODS:
        if prior is None:
            raise ValueError(f"method {method} needs a score model (the score stage's model.pt)")
        chains = sgilo_config.chains if method == "sgilo" else 1
        run = sgilo if method == "sgilo" else gnc
        config = sgilo_config if method == "sgilo" else gnc_config
        post = run(generator, forward, y, seeds, prior, config, schedule, options, perceptual, progress)
        return Reconstruction(image=(post.mean + 1) / 2, loss=post.loss.mean(1), steps=post.steps,
                              stages=run_stages(method, stages, prior.layer, sgilo_config, gnc_config, radius_scale),
                              latent=post.latents, w_plus=post.w_plus, chains=chains, samples=(post.samples + 1) / 2, std=post.std,
                              failures=post.failures, data_term=term)
    result = invert(generator, forward, y, list(seeds), schedule, options, perceptual, progress)
    return Reconstruction(image=(result.image.clamp(-1, 1) + 1) / 2, loss=result.loss, steps=result.steps, stages=schedule,
                          latent=result.latent, w_plus=result.w_plus, failures=result.failures, data_term=term)


def total_steps(method: str, stages: Sequence[Stage], sgilo_config: SGILOConfig, gnc_config: GNCConfig) -> int:
    """Optimisation steps per chain, for progress bars."""
    schedule = method_stages(method, stages)
    if method in PRIOR_METHODS:
        layer = schedule[-1].layer
        extra = sgilo_config.steps if method == "sgilo" else gnc_config.steps
        return sum(stage.steps for stage in schedule if stage.layer < layer) + extra
    return sum(stage.steps for stage in schedule)
