"""Typed, validated views of `params.yaml`.

Each top-level section of the params file loads into a frozen dataclass. Loading is strict: an unknown key, a
value of the wrong type or one out of range raises `ConfigError` naming the file, the dotted key and what is
expected, so a typo in a profile fails before any stage starts work.

Every key is required: `params.yaml` (the demo) and each profile give them all, so the values a run uses are the
ones its file shows. The few optional keys say so beside their field (a mirror, checksum pins, a phase's radius, the
section of the dataset or generator source not chosen).

One place per rule: a range lives next to its field as metadata (`bounds`); a rule between one section's own keys is
that dataclass's `__post_init__` (raising `SectionError`, so building a section in code meets it too); only rules
that tie sections together are `_check_across_sections`. The generic loading (`from_dict`, YAML, merging) is
`sgilo.loader`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from sgilo.loader import ConfigError, SectionError, bounds, from_dict, merge, read_yaml, typed
from sgilo.method_table import METHODS, prior_methods


def _require_chosen(section: Any, name: str, switch: str) -> None:
    """A switch key names the subsection that is used (download.dataset, generator.source): that one must be given."""
    chosen = getattr(section, switch)
    if getattr(section, chosen) is None:
        raise SectionError(chosen, f"missing: {name}.{switch} is {chosen!r}, which reads this section")


# ----------------------------------------------------------------------------------------------- download
@dataclass(frozen=True, kw_only=True)
class SynthfacesConfig:
    n_train: int = field(metadata=bounds(1))
    n_test: int = field(metadata=bounds(1))


@dataclass(frozen=True, kw_only=True)
class FFHQConfig:
    metadata_url: str
    metadata_size: int = field(metadata=bounds(0))
    metadata_md5: str
    kind: Literal["thumbnails", "images"]
    index_start: int = field(metadata=bounds(0, 70000))
    index_stop: int = field(metadata=bounds(1, 70000))
    workers: int = field(metadata=bounds(1, 128))
    retries: int = field(metadata=bounds(0, 100))
    timeout_s: float = field(metadata=bounds(0.1))
    # Optional. Empty: fetch each file from its `file_url` in the metadata; else `<mirror_url>/<file_path>`.
    mirror_url: str = ""


@dataclass(frozen=True, kw_only=True)
class DownloadConfig:
    """The dataset, and the section of the one `dataset` names (the other may be left out)."""

    dataset: Literal["synthfaces", "ffhq"]
    resolution: int = field(metadata=bounds(32, 1024, power_of_two=True))
    synthfaces: SynthfacesConfig | None = None
    ffhq: FFHQConfig | None = None

    def __post_init__(self) -> None:
        _require_chosen(self, "download", "dataset")


# ---------------------------------------------------------------------------------------------- generator
@dataclass(frozen=True, kw_only=True)
class ArchitectureConfig:
    """StyleGAN2 hyper-parameters; rosinality's config-f is size 1024, 512, 8, 2, 512."""

    size: int = field(metadata=bounds(4, 1024, power_of_two=True))
    style_dim: int = field(metadata=bounds(1))
    n_mlp: int = field(metadata=bounds(1))
    channel_multiplier: int = field(metadata=bounds(1))
    channel_max: int = field(metadata=bounds(1))


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """GAN training as in StyleGAN2: non-saturating logistic loss, lazy R1, EMA generator."""

    steps: int = field(metadata=bounds(1))
    batch_size: int = field(metadata=bounds(1))
    lr: float = field(metadata=bounds(0.0))
    r1_gamma: float = field(metadata=bounds(0.0))
    r1_every: int = field(metadata=bounds(1))
    ema_half_life_images: float = field(metadata=bounds(0.0))
    mixing_prob: float = field(metadata=bounds(0.0, 1.0))
    checkpoint_every: int = field(metadata=bounds(1))
    disc_channel_max: int = field(metadata=bounds(1))
    swd_every: int = field(metadata=bounds(0))  # steps between the EMA generator's sliced Wasserstein checks; 0: none
    precision: Literal["auto", "fp32", "bf16"]  # sgilo.precision: auto is bf16 only where the CPU has it natively


@dataclass(frozen=True, kw_only=True)
class PretrainedConfig:
    """Where official weights come from when `generator.source` is `pretrained`."""

    url: str
    retries: int = field(metadata=bounds(0, 100))
    # Optional pins: the file is checked against each one given.
    sha256: str = ""
    md5: str = ""


@dataclass(frozen=True, kw_only=True)
class GeneratorConfig:
    """The StyleGAN2, and the section of its `source` (the other may be left out)."""

    source: Literal["train", "pretrained"]
    architecture: ArchitectureConfig
    latent_avg_samples: int = field(metadata=bounds(1))
    grid_rows: int = field(metadata=bounds(1, 64))
    threads: int = field(metadata=bounds(0))
    train: TrainConfig | None = None
    pretrained: PretrainedConfig | None = None

    def __post_init__(self) -> None:
        _require_chosen(self, "generator", "source")


# ------------------------------------------------------------------------------------------------- invert
@dataclass(frozen=True, kw_only=True)
class PhaseConfig:
    """One ILO phase: optimise the input of generator block `layer` (0 = the w+ latent, i.e. CSGM)."""

    layer: int = field(metadata=bounds(0))
    steps: int = field(metadata=bounds(0))
    lr: float = field(metadata=bounds(0.0))
    # Optional: the l1 radius around the previous layer's range; null or left out: unconstrained.
    radius: float | None = field(default=None, metadata=bounds(0.0))


@dataclass(frozen=True, kw_only=True)
class InvertConfig:
    """ILO inversion of the training images into the layer-`layer` representation the score model learns."""

    layer: int = field(metadata=bounds(1))
    phases: tuple[PhaseConfig, ...]
    geocross: float = field(metadata=bounds(0.0))
    perceptual: float = field(metadata=bounds(0.0))  # LPIPS-VGG weight; > 0 needs its weights on disk
    optimize_noise: bool
    images: int = field(metadata=bounds(1))  # the first `images` training images, in index order
    # Layer-k latents drawn from the generator itself (z ~ N(0, I), its stored noise): extra training data for the
    # prior, from the distribution of the generator's own intermediate layer (the paper's second kind of prior).
    generated: int = field(metadata=bounds(0))
    generated_shard_size: int = field(metadata=bounds(1))  # one cheap forward pass each: larger than shard_size
    shard_size: int = field(metadata=bounds(1))
    batch_size: int = field(metadata=bounds(1))
    precision: Literal["auto", "fp32", "tf32", "bf16"]
    device: Literal["auto", "cpu", "cuda"]
    threads: int = field(metadata=bounds(0))

    @property
    def shards(self) -> int:
        return -(-self.images // self.shard_size)

    @property
    def generated_shards(self) -> int:
        return -(-self.generated // self.generated_shard_size)

    def __post_init__(self) -> None:
        layers = [phase.layer for phase in self.phases]
        if not layers or layers != sorted(layers) or layers[-1] != self.layer:
            raise SectionError("phases", f"phase layers must rise and end at invert.layer ({self.layer}), got {layers}")


# ------------------------------------------------------------------------------------------- trajectories
@dataclass(frozen=True, kw_only=True)
class TrajectoriesConfig:
    """Forward-SDE samples of the (normalised) invert latents, cached for score training."""

    sde: Literal["vp", "linear", "catmap", "lotka_volterra"]  # vp: closed form; others: Euler–Maruyama
    beta_min: float = field(metadata=bounds(0.0))
    beta_max: float = field(metadata=bounds(0.0))
    draws: int = field(metadata=bounds(1))  # samples of t per latent
    dt: float = field(metadata=bounds(1e-5, 1.0))  # Euler–Maruyama step of the simulated SDEs
    tau_fraction: float = field(metadata=bounds(0.01, 1.0))  # keep x_τ at τ = tau_fraction·t
    held_out: float = field(metadata=bounds(0.0, 0.9))  # fraction of latents kept for the held-out loss
    dtype: Literal["float32", "float16", "bfloat16"]
    threads: int = field(metadata=bounds(0))

    def sde_arguments(self, name: str | None = None) -> dict[str, Any]:
        """`sgilo.sde.build_sde`'s arguments for this section's SDE, or for the SDE `name` on the same schedule and step
        (theory_igo's other forward processes); also what a prior checkpoint stores as its SDE."""
        return {"name": name or self.sde, "beta_min": self.beta_min, "beta_max": self.beta_max, "dt": self.dt}

    def __post_init__(self) -> None:
        if self.beta_max < self.beta_min:
            raise SectionError("beta_max", f"({self.beta_max}) must be >= trajectories.beta_min ({self.beta_min})")


# -------------------------------------------------------------------------------------------------- score
@dataclass(frozen=True, kw_only=True)
class ScoreModelConfig:
    """ScoreViT: the latent as tokens (patch size 1), Gaussian Fourier time features; paper: 8, 1024, 1, 4096."""

    width: int = field(metadata=bounds(1))
    depth: int = field(metadata=bounds(1))
    heads: int = field(metadata=bounds(1))
    mlp: int = field(metadata=bounds(1))
    fourier_scale: float = field(metadata=bounds(0.0))
    dropout: float = field(metadata=bounds(0.0, 1.0))
    skip: bool  # ε̂ = c(t)·x + network: a linear restoring force off the data (see docs/score.md)


@dataclass(frozen=True, kw_only=True)
class ScoreConfig:
    """Denoising score matching on the cached trajectories (AdamW, warm-up, clipping, EMA)."""

    model: ScoreModelConfig
    epochs: int = field(metadata=bounds(1))
    batch_size: int = field(metadata=bounds(1))
    lr: float = field(metadata=bounds(0.0))
    weight_decay: float = field(metadata=bounds(0.0))
    warmup_steps: int = field(metadata=bounds(0))
    grad_clip: float = field(metadata=bounds(0.0))
    ema_decay: float = field(metadata=bounds(0.0, 1.0))
    samples: int = field(metadata=bounds(1))  # unconditional samples decoded into the grid
    sample_steps: int = field(metadata=bounds(1))
    precision: Literal["auto", "fp32", "bf16"]
    device: Literal["auto", "cpu", "cuda"]
    threads: int = field(metadata=bounds(0))


# ----------------------------------------------------------------------------------------------- evaluate


@dataclass(frozen=True)
class TaskLevel:
    """What a task's level means: its axis label, and whether a lower level is the harder problem."""

    label: str
    lower_is_harder: bool


TASK_LEVELS = {
    "inpaint": TaskLevel("fraction of pixels kept", True),
    "cs": TaskLevel("measurements m/n", True),
    "denoise": TaskLevel("noise σ", False),
    "sr": TaskLevel("downsampling factor", False),
    "colorize": TaskLevel("level (unused)", True),
}


def hardest_level(task: str, levels) -> float:
    """The level of `task` at which the problem is hardest: the fewest measurements, the most noise, the largest factor."""
    return min(levels) if TASK_LEVELS[task].lower_is_harder else max(levels)


# Trajectory SDEs with a closed-form marginal: SGILO's hot start and GNC's smoothing need one (sgilo.posterior).
CLOSED_FORM_SDES = ("vp",)


@dataclass(frozen=True, kw_only=True)
class TaskLevelsConfig:
    """One task and its measurement levels (inpaint: fraction kept; cs: m/n; denoise: σ; sr: factor)."""

    task: Literal["inpaint", "cs", "denoise", "sr", "colorize"]
    levels: tuple[float, ...]


@dataclass(frozen=True, kw_only=True)
class SGILOConfig:
    """Langevin dynamics at the prior's layer, in the score model's scaled coordinates u (`sgilo.posterior`).

    Each step is one move of step size η = weight·s², s = σ(t0)/a(t0), on the prior smoothed to t0, with the noise that
    SGLD gives that step at `temperature` T: u ← u + weight·(target(u) − u) + sqrt(2ηT)·ξ (target: the hot start, or
    Tweedie's denoiser, for which weight·(D(u) − u) = η·∇log p_t0(u)). The data term is the paper's Adam step at `lr`
    (data_step adam), or the same Langevin step on the Gaussian log-likelihood of std `measurement_std` (langevin): then,
    with hot_steps 0, the chains sample the tempered posterior [p(y | u)·p_t0(u)]^(1/T).
    """

    steps: int = field(metadata=bounds(1))  # replaces ILO's last phase (the earlier phases are the warm start)
    lr: float = field(metadata=bounds(0.0))  # adam: its lr on the measurement loss (constant: a sampler)
    weight: float = field(metadata=bounds(0.0))  # λ: the step η = λ·s² (the SGILO code's "temperature" 0.1)
    temperature: float = field(metadata=bounds(0.0))  # T of the Langevin noise sqrt(2ηT); 0: no noise
    t0: float = field(metadata=bounds(1e-3, 1.0))  # hot start: perturb to t0 along the forward SDE …
    hot_steps: int = field(metadata=bounds(0))  # … and run this many reverse-SDE steps back (0: one Tweedie step)
    data_step: Literal["adam", "langevin"]
    measurement_std: float = field(metadata=bounds(0.0))  # langevin: σ_y of the likelihood (> 0 needed)
    chains: int = field(metadata=bounds(1))  # posterior samples per measurement, in one batch
    # per_chain: every chain runs its own ILO warm start from its own seed (dispersed starts, as multi-chain MCMC
    # wants: chains can land in different modes); shared: one warm start per measurement, chains branch at layer k.
    warm_start: Literal["per_chain", "shared"]

    def __post_init__(self) -> None:
        if self.data_step == "langevin" and self.measurement_std <= 0:
            raise ValueError("sgilo data_step langevin needs measurement_std > 0: the σ_y of the likelihood it samples")


@dataclass(frozen=True, kw_only=True)
class GNCConfig:
    """The GNC flow: the prior's smoothing annealed from t_max to t_min, z ← z + λ·(D(z, σ_i) − z) after each data step."""

    steps: int = field(metadata=bounds(1))
    lr: float = field(metadata=bounds(0.0))
    weight: float = field(metadata=bounds(0.0, 1.0))  # λ = 1 is Kobler & Pock's full σ²-preconditioned step
    t_max: float = field(metadata=bounds(1e-3, 1.0))  # large smoothing: a convex energy
    t_min: float = field(metadata=bounds(1e-3, 1.0))

    def __post_init__(self) -> None:
        if self.t_min > self.t_max:
            raise SectionError("t_min", f"({self.t_min}) must be <= t_max ({self.t_max})")


@dataclass(frozen=True, kw_only=True)
class TuneConfig:
    """Per task, level and method, the key hyper-parameter is chosen on separate validation images (lowest MSE)."""

    validation: int = field(metadata=bounds(1))  # images before the test images in the test split (paper: 8)
    ilo_radius_scale: tuple[float, ...]  # × every invert.phases radius
    sgilo_weight: tuple[float, ...]
    gnc_weight: tuple[float, ...]


@dataclass(frozen=True, kw_only=True)
class EvaluateConfig:
    """Tasks × levels × methods on held-out test images. ILO's schedule (and SGILO/GNC's warm start) is invert.phases."""

    tasks: tuple[TaskLevelsConfig, ...]
    methods: tuple[str, ...]  # rows of sgilo.method_table
    images: int = field(metadata=bounds(1))  # test images, after the validation ones
    noise_std: float = field(metadata=bounds(0.0))  # extra Gaussian measurement noise, every task
    mask: Literal["random", "center", "box"]
    cs_kind: Literal["auto", "gaussian", "structured"]
    sr_filter: Literal["area", "bicubic"]
    batch_size: int = field(metadata=bounds(1))  # images per batch (SGILO: × chains)
    sgilo: SGILOConfig
    gnc: GNCConfig
    tune: TuneConfig
    figure_images: int = field(metadata=bounds(0))  # reconstructions kept per shard for the report's figures
    precision: Literal["auto", "fp32", "tf32", "bf16"]
    device: Literal["auto", "cpu", "cuda"]
    threads: int = field(metadata=bounds(0))

    def __post_init__(self) -> None:
        for i, entry in enumerate(self.tasks):
            where = f"tasks[{i}].levels"
            if not entry.levels:
                raise SectionError(where, f"give at least one level for task {entry.task!r}")
            if entry.task in ("inpaint", "cs") and not all(0 < level <= 1 for level in entry.levels):
                raise SectionError(where, f"{entry.task} levels are fractions in (0, 1], got {list(entry.levels)}")
            if entry.task == "denoise" and not all(level >= 0 for level in entry.levels):
                raise SectionError(
                    where, f"denoise levels are noise σ >= 0 on the [0, 1] scale, got {list(entry.levels)}"
                )
        tasks = [entry.task for entry in self.tasks]
        if len(set(tasks)) != len(tasks):
            raise SectionError("tasks", f"each task once (list its levels together), got {tasks}")
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise SectionError("methods", f"unknown method {unknown[0]!r}; expected some of {', '.join(METHODS)}")
        for method in self.methods:
            candidates = METHODS[method].candidates
            if candidates is not None and not hasattr(self.tune, candidates):
                raise SectionError("methods", f"{method} tunes from evaluate.tune.{candidates}, which the params lack")


@dataclass(frozen=True, kw_only=True)
class ReportConfig:
    """Aggregation into results/table1.csv and the figures."""

    confidence: float = field(metadata=bounds(0.5, 0.999))  # Student-t intervals over test images
    fid_samples: int = field(metadata=bounds(0))  # unconditional prior samples for FID (needs Inception weights)
    device: Literal["auto", "cpu", "cuda"]
    threads: int = field(metadata=bounds(0))


@dataclass(frozen=True, kw_only=True)
class TheoryGNCConfig:
    """Kobler & Pock's Fig. 1: the GNC flow on a smoothed 1-D Gaussian mixture, against gradient descent."""

    weights: tuple[float, ...]  # five components, as in the paper
    means: tuple[float, ...]
    stds: tuple[float, ...]
    domain: tuple[float, float]
    starts: int = field(metadata=bounds(2))  # equally spaced initial positions on the domain
    sigma_min: float = field(metadata=bounds(1e-4))  # the schedules' last σ
    sigma_max: float = field(metadata=bounds(1e-4))  # the largest initial σ_0 tried
    initial_sigmas: int = field(metadata=bounds(2))  # σ_0 values, log-spaced from sigma_min to sigma_max
    steps: tuple[int, ...]  # flow lengths tried (gradient descent: the same)
    gd_lr: float = field(metadata=bounds(0.0))  # about the narrowest component's variance: stable

    def __post_init__(self) -> None:
        if not len(self.weights) == len(self.means) == len(self.stds) >= 1:
            raise SectionError(
                "weights, .means and .stds",
                f"one entry per component each, got {len(self.weights)}, {len(self.means)} and {len(self.stds)}",
            )
        if min(self.weights) <= 0 or abs(sum(self.weights) - 1) > 1e-6 or min(self.stds) <= 0:
            raise SectionError("weights", f"must be positive and sum to 1 (got {sum(self.weights):g}), stds positive")
        if (
            not self.domain[0] < self.domain[1]
            or not self.sigma_min < self.sigma_max
            or not self.steps
            or min(self.steps) < 1
        ):
            raise SectionError(
                "domain, .sigma_min, .sigma_max and .steps",
                "domain must be [low, high] with low < high, sigma_min < sigma_max, and steps positive integers",
            )


@dataclass(frozen=True, kw_only=True)
class LangevinArchitectureConfig:
    depth: int = field(metadata=bounds(1))
    latents: tuple[int, ...]  # latent sizes k run at this depth


@dataclass(frozen=True, kw_only=True)
class TheoryLangevinConfig:
    """The SGILO paper's Theorem 3.1: SGLD inverting random expansive ReLU generators, against GD with/without flips."""

    architectures: tuple[LangevinArchitectureConfig, ...]
    expansion: float = field(metadata=bounds(1.0))  # n_i = ⌈expansion · n_(i−1)⌉
    measurements_per_latent: float = field(metadata=bounds(0.0))  # m = ⌈· k⌉ rows of A
    noise: float = field(metadata=bounds(0.0))  # std of ‖e‖ in y = A G(z*) + e
    chains: int = field(metadata=bounds(1))  # per method and start
    steps: int = field(metadata=bounds(1))
    step_size: float = field(metadata=bounds(1e-6))  # η, in units where the Hessian at z* is about I
    beta_per_latent: float = field(metadata=bounds(1e-6))  # β = this · k: a stationary spread near 1/√this
    spread_betas_per_latent: tuple[float, ...]  # the β sweep
    spread_architecture: LangevinArchitectureConfig  # its (depth, k)
    success_radius: float = field(metadata=bounds(0.0))  # ‖z − z*‖ ≤ this: reached z* (‖z*‖ = 1)
    spurious_start: float = field(metadata=bounds(0.0))  # norm of the perturbation of −ρ_d z* starts

    def __post_init__(self) -> None:
        for i, arch in enumerate((*self.architectures, self.spread_architecture)):
            name = f"architectures[{i}]" if i < len(self.architectures) else "spread_architecture"
            if not arch.latents or min(arch.latents) < 1:
                raise SectionError(f"{name}.latents", "give at least one latent size, each >= 1")
        spread = self.spread_betas_per_latent
        if len(self.spread_architecture.latents) != 1 or len(spread) < 2 or min(spread) <= 0:
            raise SectionError(
                "spread_architecture.latents and .spread_betas_per_latent",
                "spread_architecture.latents takes one latent size and spread_betas_per_latent at least two positive values",
            )


@dataclass(frozen=True, kw_only=True)
class TheoryIGOConfig:
    """IGO's non-affine forward iterates on demo latents and a 2-D toy set, and the α of its loss on the toy set.

    The SDEs take trajectories.beta_min, .beta_max, .dt and .tau_fraction, as the score stage's trajectories do."""

    sdes: tuple[str, ...]  # the forward processes shown
    times: tuple[float, ...]  # t; each with its x_τ, τ = tau_fraction · t
    latents: int = field(metadata=bounds(1))  # demo latents shown (from invert shard 0)
    modes: int = field(metadata=bounds(1))  # toy set: Gaussians on a ring
    radius: float = field(metadata=bounds(0.0))
    std: float = field(metadata=bounds(0.0))
    points: int = field(metadata=bounds(2))  # toy training points (as many again held out)
    sde: str  # the forward process the α sweep trains on
    alphas: tuple[float, ...]  # α·L(x_t) + (1 − α)·R(x_τ)
    draws: int = field(metadata=bounds(1))  # forward draws of t per training point
    model: ScoreModelConfig
    steps: int = field(metadata=bounds(1))
    batch_size: int = field(metadata=bounds(1))
    lr: float = field(metadata=bounds(0.0))
    samples: int = field(metadata=bounds(2))  # reverse-SDE samples per α for the energy distance
    sample_steps: int = field(metadata=bounds(1))

    def __post_init__(self) -> None:
        for name in self.sdes:
            if name not in ("catmap", "lotka_volterra", "linear"):
                raise SectionError("sdes", f"{name!r} is not a simulated SDE; use catmap, lotka_volterra or linear")
        if self.sde not in ("vp", "catmap", "lotka_volterra", "linear"):
            raise SectionError("sde", f"unknown SDE {self.sde!r}; use vp, catmap, lotka_volterra or linear")
        times_ok = self.times and all(0 < t <= 1 for t in self.times)
        if not times_ok or not self.alphas or not all(0 <= a <= 1 for a in self.alphas):
            raise SectionError(
                "times and .alphas", "times must lie in (0, 1] and alphas in [0, 1], at least one of each"
            )


# -------------------------------------------------------------------------------------------------- params
@dataclass(frozen=True, kw_only=True)
class Params:
    seed: int = field(metadata=bounds(0))
    download: DownloadConfig
    generator: GeneratorConfig
    invert: InvertConfig
    trajectories: TrajectoriesConfig
    score: ScoreConfig
    evaluate: EvaluateConfig
    report: ReportConfig
    theory_gnc: TheoryGNCConfig
    theory_langevin: TheoryLangevinConfig
    theory_igo: TheoryIGOConfig


SECTIONS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Params) if f.name != "seed")


def load_params(path: str | Path) -> Params:
    """Read and validate a whole params file."""
    return layered_params([path])[0]


def layered_params(
    files: Sequence[str | Path], overrides: Mapping[str, Any] | None = None
) -> tuple[Params, dict[str, Any]]:
    """A profile (the first file), the other files laid over it in order, then `overrides`: Snakemake's `--configfile`
    and `--config`. Each layer is validated as it is added, so an error names the file (or `--config`) that brought
    the bad key. Returns the params and the merged plain data they were built from."""
    first, *rest = files
    raw = read_yaml(first)
    params = _validated(raw, str(first))
    for path in rest:
        raw = merge(raw, read_yaml(path))
        params = _validated(raw, str(path))
    if overrides:
        raw = merge(raw, typed(dict(overrides)))
        params = _validated(raw, "--config")
    return params, raw


def write_layered(raw: Mapping[str, Any], folder: str | Path) -> Path:
    """The merged params as one file, named by its content (so that concurrent and cluster-side parses of the same
    command line agree on it and never rewrite it): what the stages read when layers or overrides were given."""
    text = yaml.safe_dump(dict(raw), sort_keys=False)
    dest = Path(folder) / f"params-{hashlib.sha256(text.encode()).hexdigest()[:12]}.yaml"
    if not dest.is_file():
        dest.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=dest.parent, suffix=".tmp", delete=False) as handle:
            handle.write(text)
        os.replace(handle.name, dest)
    return dest


def _validated(raw: dict[str, Any], source: str) -> Params:
    params = from_dict(Params, raw, source=source, retired=RETIRED)
    _check_across_sections(params, source)
    return params


def _check_across_sections(params: Params, source: str) -> None:
    """Rules that tie keys of different sections together; each message names the keys to change. (A rule between one
    section's own keys is that dataclass's __post_init__.)"""
    blocks = params.generator.architecture.size.bit_length() - 2  # blocks at 4², 8², …, size²
    invert = params.invert
    if not invert.layer < blocks:
        raise ConfigError(
            f"{source}: invert.layer: a {params.generator.architecture.size}² generator has blocks 0…{blocks - 1}; the layer must be in [1, {blocks - 1}]"
        )
    if params.download.dataset == "synthfaces" and invert.images > params.download.synthfaces.n_train:
        raise ConfigError(
            f"{source}: invert.images ({invert.images}) exceeds download.synthfaces.n_train ({params.download.synthfaces.n_train})"
        )
    evaluate = params.evaluate
    needed = evaluate.images + evaluate.tune.validation
    if params.download.dataset == "synthfaces" and needed > params.download.synthfaces.n_test:
        raise ConfigError(
            f"{source}: evaluate.images + evaluate.tune.validation ({needed}) exceeds download.synthfaces.n_test "
            f"({params.download.synthfaces.n_test}); lower them or raise n_test"
        )
    size = params.generator.architecture.size
    for i, entry in enumerate(evaluate.tasks):
        if entry.task != "sr":
            continue
        bad = [level for level in entry.levels if level < 1 or not float(level).is_integer() or size % int(level)]
        if bad:
            raise ConfigError(
                f"{source}: evaluate.tasks[{i}].levels: sr levels are integer downsampling factors >= 1 that divide "
                f"generator.architecture.size ({size}); {bad} do not"
            )
    with_prior = [m for m in evaluate.methods if m in prior_methods()]
    if with_prior and params.trajectories.sde not in CLOSED_FORM_SDES:
        raise ConfigError(
            f"{source}: trajectories.sde is {params.trajectories.sde!r}, but evaluate.methods has {', '.join(with_prior)}, "
            f"which need an SDE with a closed-form marginal ({', '.join(CLOSED_FORM_SDES)}); set trajectories.sde to vp "
            "or drop those methods (the non-affine drifts are for the IGO theory experiments)"
        )


# Keys that profiles used to have, with what replaced them: an old profile fails with the fix, not a bare "unknown key".
RETIRED = {
    "evaluate.sgilo.noise": "the Langevin noise follows from the step and evaluate.sgilo.temperature T, "
    "noise = σ(t0)/a(t0)·sqrt(2·weight·T); the old noise 0.01 at weight 0.1 and t0 0.01 is T = 0.25",
    "score.igo": "the score stage no longer trains IGO's intermediate generator (sampling and reconstruction never used it); "
    "IGO's α is measured by the theory_igo stage (docs/theory.md)",
    "score.igo_alpha": "see score.igo: IGO's α is measured by the theory_igo stage (theory_igo.alphas)",
    "generator.train.threads": "moved to generator.threads (the generator stage's CPU threads, for either source): "
    "move the key up one level",
    "invert.stages": "renamed invert.phases (ILO's layer phases; 'stage' now means only a pipeline stage): rename the key, its entries stay the same",
}
