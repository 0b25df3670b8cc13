"""Resource model: per rule of a profile, its jobs, arithmetic, time, memory and disk, from its shapes and counts.

Arithmetic and tensor memory are counted, not guessed: each unit of work (an ILO step from layer k, the LPIPS-VGG
term, a score-model training or sampling step, a decoding pass) runs once on PyTorch's `meta` device under
`torch.utils.flop_counter.FlopCounterMode` and a dispatch mode that follows the bytes its tensors hold at once.
Time is that arithmetic at a device's effective rate plus a start-up per job; memory is the process's base, the
weights and optimiser state, and the peak of one step's tensors (on the CPU times the allocator's overhead); disk
follows from the shapes.

The CPU's constants are fitted to `make smoke-ffhq` on the project's 2-core machine (docs/benchmarks.md), which
`sgilo.smoke` prints next to the model after every run; the A100's rate comes from NVIDIA's published StyleGAN2
throughput, and its start-up and host memory are assumptions (see `DEVICES`). `sgilo resources` prints the table.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import cache

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import FlopCounterMode

from sgilo.config import Params
from sgilo.method_table import METHODS

GIB = 2**30


@dataclass(frozen=True)
class Device:
    name: str
    tflops: float  # effective rate of the pipeline's mixed work (convolutions, GEMMs), 1e12 FLOP/s
    startup_s: float  # per job: interpreter, imports, loading the generator and the weights
    base_gib: float  # a stage process before its data: Python, torch, the libraries
    allocator_factor: float  # host RSS per byte of a step's live tensors (the allocator keeps freed blocks)
    source: str


DEVICES = {
    # Least squares over make smoke-ffhq's rules (seconds = jobs × start-up + FLOP / rate) and its 1024² jobs' peak RSS
    # over their live tensors, on 2 AVX2 cores with one thread per job and two jobs at once (docs/benchmarks.md).
    "cpu": Device("cpu", 0.030, 2.0, 0.7, 1.8, "fitted to make smoke-ffhq's jobs on the project's 2-core AVX2 machine"),
    # NVIDIA: 14.57 s per 1,000 1024² images on 8 A100s training StyleGAN2 config-f (stylegan3 docs/configs.md), of
    # which a third is taken for the generator's forward and backward: 0.04 s for its ~0.45 TFLOP here.
    "a100": Device(
        "a100",
        11.0,
        30.0,
        3.0,
        1.0,
        "NVIDIA's published StyleGAN2 config-f throughput on A100s; start-up and host memory assumed, not measured",
    ),
}


@dataclass(frozen=True)
class Work:
    flop: float  # per unit
    peak: float  # bytes: the most that the unit's tensors (activations, gradients, temporaries) hold at once
    weights: float  # bytes of the parameters and buffers involved


@dataclass
class RuleEstimate:
    rule: str
    jobs: int
    flop: float  # all jobs together
    hours: float  # all jobs together, on the device
    ram_gib: float  # peak of one job
    accelerator_gib: float  # peak device memory of one job (weights, optimiser, activations)
    disk_gib: float  # outputs of all jobs
    note: str


class _LiveBytes(TorchDispatchMode):
    """The peak of the bytes held by tensors created inside the mode: each new storage is added when an op makes
    it and taken off when its last tensor is collected."""

    def __init__(self) -> None:
        super().__init__()
        self.live = self.peak = 0
        self.sizes: dict[int, int] = {}

    def _free(self, key: int) -> None:
        self.live -= self.sizes.pop(key, 0)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in tree_flatten(out)[0]:
            if isinstance(tensor, torch.Tensor) and (key := tensor.untyped_storage()._cdata) not in self.sizes:
                self.sizes[key] = tensor.untyped_storage().nbytes()
                self.live += self.sizes[key]
                self.peak = max(self.peak, self.live)
                weakref.finalize(tensor, self._free, key)
        return out


def _count(build: Callable[[], tuple[torch.nn.Module | None, Callable[[], torch.Tensor]]], backward: bool) -> Work:
    """FLOP, peak tensor bytes and weights of one call of `build()`'s function (forward, and backward when asked),
    run on the meta device: nothing is computed or allocated."""
    with torch.device("meta"):
        module, call = build()
        live = _LiveBytes()
        with FlopCounterMode(display=False) as counter, torch.set_grad_enabled(backward), live:
            out = call()
            if backward:
                out.float().sum().backward()
            del out
    weights = (
        sum(t.numel() * t.element_size() for t in [*module.parameters(), *module.buffers()])
        if module is not None
        else 0
    )
    return Work(float(counter.get_total_flops()), float(live.peak), float(weights))


@cache
def generator_step(
    architecture: tuple[tuple[str, int], ...], layer: int, batch: int = 1, backward: bool = True
) -> Work:
    """One ILO step from `layer` (frozen weights): the synthesis from there, forward and backward to the latents
    (`backward` False: the forward pass alone, as when decoding samples)."""
    from sgilo.inversion import decode
    from sgilo.stylegan2 import Generator

    def build():
        generator = Generator(**dict(architecture)).requires_grad_(False)
        w = torch.zeros(batch, generator.num_ws, generator.style_dim, requires_grad=backward)
        channels, height, width = generator.layer_shape(layer) if layer else (0, 0, 0)
        h = (
            torch.zeros(batch, channels + 3, height, width, requires_grad=backward) if layer else None
        )  # features + RGB skip
        return generator, lambda: decode(generator, h, layer, w)

    return _count(build, backward=backward)


@cache
def lpips_step(size: int, batch: int = 1) -> Work:
    """The LPIPS-VGG term of an ILO step: VGG16's features on two images at min(size, LPIPS_SIZE), backward to one."""
    import torchvision

    from sgilo.metrics import LPIPS_SIZE

    side = min(size, LPIPS_SIZE)

    def build():
        features = torchvision.models.vgg16().features[:30].requires_grad_(False)
        x = torch.zeros(batch, 3, side, side, requires_grad=True)
        return features, lambda: features(torch.cat([x, torch.zeros_like(x)]))

    return _count(build, backward=True)


@cache
def score_step(shape: tuple[int, ...], model: tuple[tuple[str, object], ...], batch: int, train: bool) -> Work:
    """A score-model step on `batch` latents: training (forward and backward through the weights) or sampling."""
    from sgilo.score_model import ScoreViT

    def build():
        options = dict(model)
        options.pop("skip", None)
        vit = ScoreViT(shape, **options).requires_grad_(train)
        x, t = torch.zeros(batch, *shape), torch.full((batch,), 0.5)
        return vit, lambda: vit(x, t)

    return _count(build, backward=train)


# ------------------------------------------------------------------------------------------------ the rules
def estimate(params: Params, device: Device) -> list[RuleEstimate]:
    """One estimate per rule of the workflow for `params` on `device`."""
    arch = tuple(sorted(vars(params.generator.architecture).items()))
    size, invert, traj, score, evaluate = (
        params.generator.architecture.size,
        params.invert,
        params.trajectories,
        params.score,
        params.evaluate,
    )
    from sgilo.stylegan2 import Generator

    with torch.device("meta"):
        probe = Generator(**dict(arch))
    channels, height, width = probe.layer_shape(invert.layer)
    latent_shape = (channels + 3, height, width)  # features + RGB skip, as the prior sees them
    latent_numel = math.prod(latent_shape)
    w_numel = probe.num_ws * probe.style_dim
    gen_weights = generator_step(arch, 0).weights

    def ilo(phases, perceptual: bool, batch: int) -> tuple[float, float]:
        """FLOP per image and the largest activation memory of a batch over a schedule."""
        flop, activations = 0.0, 0.0
        for phase in phases:
            unit = generator_step(arch, phase.layer, batch)
            lp = lpips_step(size, batch) if perceptual else Work(0.0, 0.0, 0.0)
            flop += phase.steps * (unit.flop + lp.flop) / batch
            activations = max(activations, unit.peak + lp.peak)
        return flop, activations

    def seconds(flop: float, jobs: int) -> float:
        return flop / (device.tflops * 1e12) + jobs * device.startup_s

    def estimate_row(rule, jobs, flop, disk_bytes, note, weights=0.0, tensors=0.0, host=0.0):
        """weights: parameters, buffers and optimiser state; tensors: the peak of a step's tensors (on the
        accelerator when there is one, where the allocator's overhead is not modelled); host: data the process
        reads into RAM. On the CPU the allocator's overhead multiplies the step's tensors."""
        on_cpu = device.name == "cpu"
        ram = device.base_gib + (host + weights + (device.allocator_factor * tensors if on_cpu else 0.0)) / GIB
        accelerator = 0.0 if on_cpu else (weights + tensors) / GIB
        return RuleEstimate(rule, jobs, flop, seconds(flop, jobs) / 3600, ram, accelerator, disk_bytes / GIB, note)

    rows: list[RuleEstimate] = []
    images = (
        params.download.ffhq.index_stop - params.download.ffhq.index_start
        if params.download.dataset == "ffhq"
        else (params.download.synthfaces.n_train + params.download.synthfaces.n_test)
    )
    png = 3 * params.download.resolution**2 * 0.405  # FFHQ's 1024² PNGs: 89.1 GB for 70,000, 0.405 of the raw bytes
    rows.append(estimate_row("download", 1, 0.0, images * png, f"{images} images"))
    grid = generator_step(arch, 0, params.generator.grid_rows**2, backward=False)  # the sample grid: one forward pass
    rows.append(estimate_row("generator", 1, 0.0, gen_weights, "weights: converted or trained", gen_weights, grid.peak))

    perceptual = invert.perceptual > 0
    flop_image, activations = ilo(invert.phases, perceptual, invert.batch_size)
    lpips_weights = lpips_step(size).weights if perceptual else 0.0
    shard_bytes = invert.shard_size * 4 * (latent_numel + w_numel)
    rows.append(
        estimate_row(
            "invert",
            invert.shards,
            flop_image * invert.images,
            (invert.images + invert.generated) * 4 * (latent_numel + w_numel),
            f"{invert.images} images × {sum(s.steps for s in invert.phases)} steps",
            gen_weights + lpips_weights,
            activations,
            2 * shard_bytes,
        )
    )
    latents = invert.images + invert.generated
    dtype_bytes = torch.empty((), dtype=getattr(torch, traj.dtype)).element_size()
    traj_bytes = latents * traj.draws * (4 * latent_numel * dtype_bytes + 64)
    rows.append(
        estimate_row(
            "trajectories",
            invert.shards + invert.generated_shards + 1,
            0.0,
            traj_bytes,
            f"{latents * traj.draws} draws",
            host=3 * shard_bytes,
        )
    )

    model = tuple(sorted(vars(score.model).items()))
    train = score_step(latent_shape, model, score.batch_size, train=True)
    sample = score_step(latent_shape, model, score.samples, train=False)
    samples_count = latents * traj.draws * (1 - traj.held_out)
    score_flop = score.epochs * samples_count / score.batch_size * train.flop + score.sample_steps * sample.flop
    optimiser = 4 * train.weights  # weights, gradients, Adam's two moments; and the EMA copy
    decode = generator_step(arch, invert.layer, score.samples, backward=False).peak
    rows.append(
        estimate_row(
            "score",
            1,
            score_flop,
            train.weights,
            f"{score.epochs} epochs × {int(samples_count)} samples",
            optimiser + gen_weights,
            max(train.peak, decode),
        )
    )

    cells = [
        (task.task, level, method) for task in evaluate.tasks for level in task.levels for method in evaluate.methods
    ]
    vit_fwd = score_step(latent_shape, model, 1, train=False).flop
    image_tasks = {"inpaint", "denoise", "sr"}

    def per_image(task: str, method: str) -> tuple[float, float]:
        from sgilo.methods import method_phases
        from sgilo.posterior import warm_phases

        uses_lpips = perceptual and task in image_tasks
        schedule = method_phases(method, invert.phases)
        if not METHODS[method].uses_prior:
            return ilo(schedule, uses_lpips, evaluate.batch_size)
        chains = evaluate.sgilo.chains if method == "sgilo" else 1
        config = evaluate.sgilo if method == "sgilo" else evaluate.gnc
        warm_flop, warm_act = ilo(warm_phases(schedule, invert.layer), uses_lpips, evaluate.batch_size * chains)
        last_flop, last_act = ilo(
            [replace(schedule[0], layer=invert.layer, steps=config.steps, radius=None, lr=config.lr)],
            uses_lpips,
            evaluate.batch_size * chains,
        )
        prior_calls = config.steps * (max(1, evaluate.sgilo.hot_steps) if method == "sgilo" else 1)
        return chains * (warm_flop + last_flop + prior_calls * vit_fwd), max(warm_act, last_act)

    tune_jobs = [cell for cell in cells if METHODS[cell[2]].tuned]
    tune_flop = eval_flop = 0.0
    peak = 0.0
    for task, _, method in cells:
        flop, act = per_image(task, method)
        eval_flop += flop * evaluate.images
        peak = max(peak, act)
        if METHODS[method].tuned:
            tune_flop += flop * evaluate.tune.validation * len(getattr(evaluate.tune, METHODS[method].candidates))
    prior_weights = train.weights if any(METHODS[m].uses_prior for m in evaluate.methods) else 0.0
    cell_weights = gen_weights + lpips_weights + prior_weights
    # Each cell keeps figure_images float32 images: truth, measurement, reconstruction, and for sgilo/gnc the
    # chains' samples and their spread.
    kept = min(evaluate.figure_images, evaluate.images) * 3 * size**2 * 4
    figure_bytes = sum(
        kept * (3 + ((evaluate.sgilo.chains if m == "sgilo" else 1) + 1 if METHODS[m].uses_prior else 0))
        for _, _, m in cells
    )
    rows.append(estimate_row("tune", len(tune_jobs), tune_flop, 0.0, f"{len(tune_jobs)} cells", cell_weights, peak))
    rows.append(
        estimate_row(
            "evaluate",
            len(cells),
            eval_flop,
            figure_bytes,
            f"{len(cells)} cells × {evaluate.images} images",
            cell_weights,
            peak,
        )
    )
    report_flop = params.report.fid_samples * (
        params.score.sample_steps * vit_fwd + generator_step(arch, invert.layer).flop / 3
    )
    decode = generator_step(arch, invert.layer, min(64, max(1, params.report.fid_samples)), backward=False).peak
    rows.append(
        estimate_row(
            "report", 1, report_flop, 1e6 * len(cells), "Table 1, figures, FID", gen_weights + prior_weights, decode
        )
    )
    return rows


def slurm_mem_mb(row: RuleEstimate, headroom: float = 1.5) -> int:
    """A SLURM `mem_mb` for a rule: its modelled peak with headroom, rounded up to a whole GiB."""
    return math.ceil(row.ram_gib * headroom) * 1024


def markdown(rows: list[RuleEstimate], device: Device) -> str:
    """The estimate as a Markdown table with a total line (the README's copy is checked against it)."""
    hours = "A100-hours" if device.name == "a100" else f"{device.name}-hours"
    lines = [
        f"| rule | jobs | work | PFLOP | {hours} | host RAM per job (GiB) | accelerator memory per job (GiB) | disk (GiB) | SLURM mem_mb |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row.rule} | {row.jobs} | {row.note} | {row.flop / 1e15:.3g} | {row.hours:.3g} | {row.ram_gib:.1f} | "
            f"{row.accelerator_gib:.1f} | {row.disk_gib:.3g} | {slurm_mem_mb(row)} |"
        )
    lines.append(
        f"| total | {sum(r.jobs for r in rows)} | | {sum(r.flop for r in rows) / 1e15:.3g} | {sum(r.hours for r in rows):.3g} | | | "
        f"{sum(r.disk_gib for r in rows):.3g} | |"
    )
    return "\n".join(lines)
