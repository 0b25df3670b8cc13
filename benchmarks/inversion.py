"""ILO inversion throughput: image·steps/s by batch size and precision, with the quality each run reached.

Runs `sgilo.inversion.invert` end to end (all ILO phases, l1-ball projections, best-iterate bookkeeping) on a
StyleGAN2 with random weights, inverting the generator's own samples through 50% random-pixel inpainting.
Every row reports the final measurement loss and the PSNR against the true images, so "equal reconstruction
quality" across precisions and batch sizes can be checked, and its speed-up over batch 1 in fp32 (one image
at a time in fp32: the baseline a batched GPU inversion should beat by ≥ 20×).

    python benchmarks/inversion.py                                    # GPU: config-f 1024², fp32/tf32/bf16
    python benchmarks/inversion.py --device cpu                       # the demo profile's 32² generator
    python benchmarks/inversion.py --config config-f --batches 1 --steps 1 --layers 0,1
    python benchmarks/inversion.py --smoke                            # demo 32², batches 1 and 2, 1 step: checks that it runs

Batch b inverts images 0 … b−1 (seeds 0 … b−1), so batch 1's quality is one image's and the others a mean.
Prints a Markdown table: copy it into docs/benchmarks.md with the machine and the command.
"""

from __future__ import annotations

import argparse
import gc
import math
import resource
import time

import torch

from sgilo.inversion import LayerPhase, Options, invert
from sgilo.operators import OperatorSpec, build_operator
from sgilo.stylegan2 import Generator

from _common import DEMO_ARCHITECTURE, add_smoke, ints, machine, names_from, smoke_run

CONFIGS = {
    "demo": DEMO_ARCHITECTURE,
    "config-f": {"size": 1024, "style_dim": 512, "n_mlp": 8, "channel_multiplier": 2, "channel_max": 512},
}
DEFAULT_LAYERS = {"demo": [0, 1, 2], "config-f": [0, 1, 2, 3]}

EXPLICIT = ("fp32", "tf32", "bf16")  # the precisions compared; `auto` resolves to one of them


def radius_for(generator: Generator, layer: int, per_entry: float) -> float | None:
    """An l1 radius of `per_entry` × the entries of the layer's representation (C + 3, H, W).

    Small enough that the ball binds after the first few steps, so the timed steps pay for the projection
    (a sort per image) rather than its early exit; layer 0 (w+) has no ball.
    """
    if layer == 0:
        return None
    channels, height, width = generator.layer_shape(layer)
    return per_entry * (channels + 3) * height * width


def build_generator(config: str, device: torch.device) -> Generator:
    torch.manual_seed(0)
    generator = Generator(**CONFIGS[config])
    generator.fit_gaussian(10_000, torch.Generator().manual_seed(0))  # once here, so no run times it
    return generator.to(device).eval().requires_grad_(False)


@torch.no_grad()
def targets(generator: Generator, batch: int, device: torch.device) -> torch.Tensor:
    """The generator's own samples for seeds 0 … batch−1, in [0, 1]."""
    z = torch.stack(
        [torch.randn(generator.style_dim, generator=torch.Generator().manual_seed(s)) for s in range(batch)]
    )
    image = generator(z.to(device))
    return ((image.clamp(-1, 1) + 1) / 2).float()


def measure(
    generator: Generator, batch: int, precision: str, phases: tuple[LayerPhase, ...], warmup: int, device: torch.device
) -> dict[str, float]:
    seeds = list(range(batch))
    x = targets(generator, batch, device)
    forward = build_operator(OperatorSpec("inpaint", 0.5), tuple(x.shape[1:]), seeds, device).physics.A
    y = forward(x)
    options = Options(precision=precision)
    if warmup > 0:
        invert(
            generator, forward, y, seeds, tuple(LayerPhase(s.layer, warmup, s.radius, s.lr) for s in phases), options
        )
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    result = invert(generator, forward, y, seeds, phases, options)
    _sync(device)
    seconds = time.perf_counter() - start
    mse = ((result.image.clamp(-1, 1) + 1) / 2 - x).square().flatten(1).mean(1)
    steps = sum(s.steps for s in phases)
    return {
        "image_steps_per_s": batch * steps / seconds,
        "s_per_image": seconds / batch,
        "seconds": seconds,
        "peak_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else _rss_gib(),
        "loss": float(result.loss.mean()),
        "psnr": float((10 * torch.log10(1 / mse.clamp_min(1e-10))).mean()),
    }


def _rss_gib() -> float:
    """Peak resident memory of this whole process so far (Linux reports KiB), not of one run."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _speedup(ratio: float) -> str:
    return "–" if math.isnan(ratio) else f"{ratio:.2f}×"  # NaN: the baseline ran out of memory


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", choices=sorted(CONFIGS), help="generator; default demo on CPU, config-f on CUDA")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--batches", type=ints, default=[1, 8, 32], help="comma-separated batch sizes (default 1,8,32)")
    parser.add_argument(
        "--precisions",
        type=names_from(list(EXPLICIT)),
        help="comma-separated, of fp32,tf32,bf16; default fp32 on CPU, all three on CUDA",
    )
    parser.add_argument("--steps", type=int, help="steps per ILO phase; default 10 on CPU, 20 on CUDA")
    parser.add_argument("--layers", type=ints, help="ILO phase layers; default 0,1,2 (demo), 0,1,2,3 (config-f)")
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--radius", type=float, default=0.05, help="l1 radius per entry of a layer's representation")
    parser.add_argument("--warmup", type=int, default=2, help="steps per phase of an untimed run before each timed one")
    add_smoke(parser)
    args = parser.parse_args()
    smoke_run(args, config="demo", batches=[1, 2], precisions=["fp32"], steps=1, layers=[0, 1], warmup=1)

    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    cuda = device.type == "cuda"
    config = args.config or ("config-f" if cuda else "demo")
    precisions = args.precisions or (list(EXPLICIT) if cuda else ["fp32"])
    steps = args.steps if args.steps is not None else (20 if cuda else 10)
    layers = args.layers if args.layers is not None else DEFAULT_LAYERS[config]

    generator = build_generator(config, device)
    phases = tuple(LayerPhase(layer, steps, radius_for(generator, layer, args.radius), args.lr) for layer in layers)
    size = generator.size
    total = steps * len(phases)
    schedule = ", ".join(f"layer {s.layer}" + ("" if s.radius is None else f" (l1 ≤ {s.radius:.0f})") for s in phases)
    print(
        f"ILO inversion, StyleGAN2 {config} {size}² (random weights), 50% random-pixel inpainting, torch {torch.__version__}, {machine(device)}"
    )
    print(
        f"phases: {schedule}; {steps} steps each ({total} in all), lr {args.lr}; warm-up run of {args.warmup} steps/phase excluded"
    )
    memory = "peak GPU GiB" if cuda else "peak RSS GiB (process)"
    print("speed-up: image·steps/s over batch 1 fp32; PSNR of the reconstruction against the true image (dB)\n")
    print(f"| device | config | batch | precision | image·steps/s | s/image | {memory} | loss | PSNR | speed-up |")
    print("|---|---|---|---|---|---|---|---|---|---|")

    # Batch 1 fp32 first: every row's speed-up is against it, so measure it even when not asked for.
    runs = [(b, p) for p in precisions for b in args.batches]
    if (1, "fp32") in runs:
        runs.remove((1, "fp32"))
    runs.insert(0, (1, "fp32"))
    baseline = math.nan
    for batch, precision in runs:
        row = f"| {device.type} | {config} | {batch} | {precision} |"
        try:
            r = measure(generator, batch, precision, phases, args.warmup, device)
        except torch.cuda.OutOfMemoryError:
            r = None  # freed below, once the exception no longer holds the failed run's tensors
        _free(device)
        if r is None:
            print(f"{row} OOM | | | | | |", flush=True)
            continue
        if (batch, precision) == (1, "fp32"):
            baseline = r["image_steps_per_s"]
        print(
            f"{row} {r['image_steps_per_s']:.2f} | {r['s_per_image']:.3f} | {r['peak_gib']:.2f} | {r['loss']:.4f} | {r['psnr']:.2f} |"
            f" {_speedup(r['image_steps_per_s'] / baseline)} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
