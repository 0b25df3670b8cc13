"""The five reconstruction methods behind one call, as the evaluate stage and `sgilo reconstruct` use them.

csgm: the Gaussianised w+ alone, for as many steps as ILO's whole schedule; ilo: ILO's schedule with its l1
radii (times a tuned scale); ilo-unconstrained: the same without radii; sgilo and gnc: ILO's schedule up to the
prior's layer, then the prior (`sgilo.posterior`). Every method sees the same measurement y and the same seeds.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import ClassVar

from torch import Tensor

from sgilo.config import GNCConfig, SGILOConfig
from sgilo.inversion import LayerPhase, Options, Perceptual, image_shaped, invert
from sgilo.method_table import spec
from sgilo.posterior import LatentPrior, Posterior, gnc, score_guided_ilo, warm_phases


@dataclass
class Reconstruction:
    image: Tensor  # (B, 3, size, size) in [0, 1]: the estimate that is scored (SGILO: the posterior mean)
    loss: Tensor  # (B,) measurement MSE of `image`'s chain(s), averaged over chains
    steps: int  # optimisation steps per chain
    phases: list[LayerPhase]  # the schedule run (SGILO, GNC: the warm start, then the prior's phase)
    latent: Tensor | None  # ILO: (B, C + 3, H, W) at the last phase's layer; SGILO, GNC: (B, chains, …); CSGM: None
    w_plus: Tensor  # (B, num_ws, style_dim); SGILO, GNC: (B, chains, …)
    chains: int = 1
    samples: Tensor | None = None  # (B, chains, 3, size, size) in [0, 1]: SGILO and GNC
    std: Tensor | None = None  # (B, 3, size, size): per-pixel spread over chains
    failures: list[str | None] = field(default_factory=list)  # per image: None, or why its estimate is not to be used
    data_term: str = "mse"  # what the optimisation fitted y with: "mse", or "mse + w·LPIPS" (image-shaped measurements)


@dataclass
class Setting:
    """What a method may read besides ILO's schedule: its tuned value and the prior methods' configs."""

    radius_scale: float = 1.0
    sgilo: SGILOConfig | None = None  # needed by SGILO (a profile's evaluate.sgilo)
    gnc: GNCConfig | None = None  # needed by GNC (evaluate.gnc)


class Method:
    """One row of `sgilo.method_table`: the schedule it runs from ILO's, and how it reconstructs a batch."""

    name: ClassVar[str]

    def __init__(self, setting: Setting | None = None) -> None:
        self.setting = setting or Setting()

    def schedule(self, phases: Sequence[LayerPhase]) -> list[LayerPhase]:
        """The phases this method optimises (SGILO, GNC: the warm start part of it comes from here)."""
        return list(phases)

    def run_phases(self, phases: Sequence[LayerPhase], prior_layer: int | None) -> list[LayerPhase]:
        """The phases as its Reconstruction records them."""
        return self.schedule(phases)

    def steps(self, phases: Sequence[LayerPhase]) -> int:
        """Optimisation steps per chain, for progress bars."""
        return sum(phase.steps for phase in self.schedule(phases))

    def reconstruct(
        self,
        generator,
        forward: Callable[[Tensor], Tensor],
        y: Tensor,
        seeds: Sequence[int],
        phases: Sequence[LayerPhase],
        options: Options,
        prior: LatentPrior | None,
        perceptual: Perceptual | None,
        progress,
        term: str,
    ) -> Reconstruction:
        schedule = self.schedule(phases)
        result = invert(generator, forward, y, list(seeds), schedule, options, perceptual, progress)
        return Reconstruction(
            image=(result.image.clamp(-1, 1) + 1) / 2,
            loss=result.loss,
            steps=result.steps,
            phases=schedule,
            latent=result.latent,
            w_plus=result.w_plus,
            failures=result.failures,
            data_term=term,
        )


class CSGM(Method):
    name = "csgm"

    def schedule(self, phases: Sequence[LayerPhase]) -> list[LayerPhase]:
        return [LayerPhase(0, sum(phase.steps for phase in phases), None, phases[0].lr)]


class ILO(Method):
    name = "ilo"

    def schedule(self, phases: Sequence[LayerPhase]) -> list[LayerPhase]:
        scale = self.setting.radius_scale
        return [replace(phase, radius=None if phase.radius is None else phase.radius * scale) for phase in phases]


class ILOUnconstrained(Method):
    name = "ilo-unconstrained"

    def schedule(self, phases: Sequence[LayerPhase]) -> list[LayerPhase]:
        return [replace(phase, radius=None) for phase in phases]


class PriorMethod(Method):
    """ILO's schedule up to the prior's layer as the warm start, then `steps` steps of a move with the prior there."""

    def config(self) -> SGILOConfig | GNCConfig:
        raise NotImplementedError

    def chains(self) -> int:
        return 1

    def run_phases(self, phases: Sequence[LayerPhase], prior_layer: int | None) -> list[LayerPhase]:
        config = self.config()
        return [
            *warm_phases(self.schedule(phases), prior_layer),
            LayerPhase(prior_layer, config.steps, None, config.lr),
        ]

    def steps(self, phases: Sequence[LayerPhase]) -> int:
        schedule = self.schedule(phases)
        layer = schedule[-1].layer
        return sum(phase.steps for phase in schedule if phase.layer < layer) + self.config().steps

    def sample(self, generator, forward, y, seeds, prior, phases, options, perceptual, progress) -> Posterior:
        raise NotImplementedError

    def reconstruct(
        self, generator, forward, y, seeds, phases, options, prior, perceptual, progress, term
    ) -> Reconstruction:
        if prior is None:
            raise ValueError(f"method {self.name} needs a score model (the score stage's model.pt)")
        post = self.sample(generator, forward, y, seeds, prior, self.schedule(phases), options, perceptual, progress)
        return Reconstruction(
            image=(post.mean + 1) / 2,
            loss=post.loss.mean(1),
            steps=post.steps,
            phases=self.run_phases(phases, prior.layer),
            latent=post.latents,
            w_plus=post.w_plus,
            chains=self.chains(),
            samples=(post.samples + 1) / 2,
            std=post.std,
            failures=post.failures,
            data_term=term,
        )


class SGILO(PriorMethod):
    name = "sgilo"

    def config(self) -> SGILOConfig:
        return _given(self.setting.sgilo, "sgilo_config")

    def chains(self) -> int:
        return self.config().chains

    def sample(self, generator, forward, y, seeds, prior, phases, options, perceptual, progress) -> Posterior:
        return score_guided_ilo(
            generator, forward, y, seeds, prior, self.config(), phases, options, perceptual, progress
        )


class GNC(PriorMethod):
    name = "gnc"

    def config(self) -> GNCConfig:
        return _given(self.setting.gnc, "gnc_config")

    def sample(self, generator, forward, y, seeds, prior, phases, options, perceptual, progress) -> Posterior:
        return gnc(generator, forward, y, seeds, prior, self.config(), phases, options, perceptual, progress)


def _given(config, name: str):
    # A prior method's settings come from the caller (a profile's evaluate section, the CLI's flags): no default here.
    if config is None:
        raise ValueError(f"this method needs its {name} (e.g. a profile's evaluate.sgilo or evaluate.gnc)")
    return config


METHOD_CLASSES: dict[str, type[Method]] = {cls.name: cls for cls in (CSGM, ILO, ILOUnconstrained, SGILO, GNC)}


def method(name: str, setting: Setting | None = None) -> Method:
    """The method of `sgilo.method_table`'s row `name`, with its setting."""
    spec(name)  # an unknown name: the table's message
    if name not in METHOD_CLASSES:
        raise ValueError(f"method {name!r} is in sgilo.method_table but has no class in sgilo.methods.METHOD_CLASSES")
    return METHOD_CLASSES[name](setting)


def with_tuned(setting: Setting, name: str, key: str, value: float) -> Setting:
    """`setting` with method `name`'s tuned hyper-parameter (`method_table`'s `tuned`, which `key` must be) at `value`."""
    if key != spec(name).tuned:
        raise ValueError(f"method {name} tunes {spec(name).tuned or 'nothing'}, not {key}")
    if hasattr(setting, key):
        return replace(setting, **{key: value})
    return replace(setting, **{name: replace(getattr(setting, name), **{key: value})})


def method_phases(name: str, phases: Sequence[LayerPhase], radius_scale: float = 1.0) -> list[LayerPhase]:
    """The schedule a method runs, from ILO's (invert.phases); SGILO and GNC take its warm start from it."""
    return method(name, Setting(radius_scale=radius_scale)).schedule(phases)


def run_phases(
    name: str,
    phases: Sequence[LayerPhase],
    prior_layer: int | None = None,
    sgilo_config: SGILOConfig | None = None,
    gnc_config: GNCConfig | None = None,
    radius_scale: float = 1.0,
) -> list[LayerPhase]:
    """The phases a method runs, as its Reconstruction records them: `method_phases`; SGILO and GNC: the warm start,
    then the prior's phase at `prior_layer` (its steps and lr from the method's config)."""
    setting = Setting(radius_scale, sgilo_config, gnc_config)
    return method(name, setting).run_phases(phases, prior_layer)


def reconstruct(
    name: str,
    generator,
    forward: Callable[[Tensor], Tensor],
    y: Tensor,
    seeds: Sequence[int],
    phases: Sequence[LayerPhase],
    options: Options | None = None,
    *,
    radius_scale: float = 1.0,
    prior: LatentPrior | None = None,
    sgilo_config: SGILOConfig | None = None,
    gnc_config: GNCConfig | None = None,
    perceptual: Perceptual | None = None,
    progress: Callable[[int], None] | None = None,
) -> Reconstruction:
    """Reconstruct a batch of measurements y = forward(x) (any operator on B images in [0, 1], e.g. a
    `build_operator(…).physics.A`); seeds[i] seeds image i's optimisation. SGILO and GNC need the prior (a score
    stage's model.pt, `LatentPrior.load`)."""
    options = options or Options()
    if options.perceptual > 0 and not image_shaped(y):
        # As in ILO's code, LPIPS compares images: a measurement that is not one (cs, colorize) is fitted by its MSE
        # alone, so one perceptual weight serves a profile's every task.
        options = replace(options, perceptual=0.0)
    term = f"mse + {options.perceptual:g}·LPIPS" if options.perceptual > 0 else "mse"
    setting = Setting(radius_scale, sgilo_config, gnc_config)
    return method(name, setting).reconstruct(
        generator, forward, y, seeds, phases, options, prior, perceptual, progress, term
    )


def total_steps(name: str, phases: Sequence[LayerPhase], sgilo_config: SGILOConfig, gnc_config: GNCConfig) -> int:
    """Optimisation steps per chain, for progress bars."""
    return method(name, Setting(1.0, sgilo_config, gnc_config)).steps(phases)
