"""Reconstruction quality of CSGM, ILO and unconstrained ILO with the demo generator (a table for docs/inversion.md).

Two checks from the inversion issue:
  * in range: images the generator itself made, 50 % random-pixel inpainting, ILO → PSNR;
  * out of range: held-out synthfaces test images, inpainting and compressed sensing at several levels,
    each method with the same total number of steps → mean PSNR / SSIM with 95 % confidence intervals.

    python benchmarks/inversion_quality.py                      # after `make table` (needs the demo generator)
    python benchmarks/inversion_quality.py --images 8 --steps 150   # quicker
    python benchmarks/inversion_quality.py --smoke                  # toy generator, 2 faces, 3 steps, 1 level per task

The smoke run needs no finished pipeline: it writes a random 32² generator and two synthfaces test images to a
temporary folder and reads them as `--generator` and `--data`.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import torch

from sgilo.data import load_images, read_index
from sgilo.inversion import LayerPhase, invert
from sgilo.metrics import image_metrics
from sgilo.operators import OperatorSpec, build_operator
from sgilo.seeding import item_seed, torch_generator
from sgilo.stylegan2 import Generator, load_generator, save_generator
from sgilo.synthfaces import write_synthfaces

from _common import add_smoke, smoke_run

LEVELS = {"inpaint": (0.05, 0.1, 0.25, 0.5), "cs": (0.01, 0.03, 0.1, 0.3)}


def schedules(steps: int, radii: list[float]) -> dict[str, list[LayerPhase]]:
    """Equal budgets: CSGM spends all steps on w+; ILO splits them over layers 0, 1, 2."""
    share = [steps // 3, steps // 3, steps - 2 * (steps // 3)]
    return {
        "csgm": [LayerPhase(0, steps)],
        "ilo": [
            LayerPhase(0, share[0]),
            LayerPhase(1, share[1], radius=radii[0]),
            LayerPhase(2, share[2], radius=radii[1]),
        ],
        "ilo-unconstrained": [LayerPhase(k, n) for k, n in enumerate(share)],
    }


def reconstruct(
    generator, truth01: torch.Tensor, spec: OperatorSpec, phases: list[LayerPhase], seeds: list[int]
) -> dict[str, torch.Tensor]:
    operator = build_operator(spec, tuple(truth01.shape[1:]), seeds)
    result = invert(generator, operator.physics.A, operator.measure(truth01), seeds, phases)
    return image_metrics((result.image.clamp(-1, 1) + 1) / 2, truth01)


def mean_ci(values: torch.Tensor) -> str:
    half = 1.96 * float(values.std()) / math.sqrt(len(values)) if len(values) > 1 else float("nan")
    return f"{float(values.mean()):.2f} ± {half:.2f}"


def smoke_inputs(folder: Path, images: int) -> tuple[str, str]:
    """A random toy generator and `images` rendered test faces at 32², in place of a finished pipeline's."""
    torch.manual_seed(0)
    generator = Generator(size=32, style_dim=16, n_mlp=2, channel_multiplier=1, channel_max=16)
    generator.fit_gaussian(1000, torch.Generator().manual_seed(0))
    save_generator(generator, folder / "generator.pt")
    write_synthfaces(folder / "synthfaces", seed=0, n_train=0, n_test=images, resolution=32, progress=False)
    return str(folder / "generator.pt"), str(folder / "synthfaces")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--generator", default="results/generator/generator.pt")
    parser.add_argument("--data", default="data/synthfaces")
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--steps", type=int, default=300, help="total steps per method")
    parser.add_argument("--radii", default="100,200", help="ILO l1 radii at layers 1 and 2")
    parser.add_argument("--threads", type=int, default=0)
    parser.set_defaults(levels=LEVELS)
    add_smoke(parser)
    args = parser.parse_args()
    smoke_run(args, images=2, steps=3, levels={"inpaint": (0.5,), "cs": (0.01,)})
    with tempfile.TemporaryDirectory(prefix="sgilo-quality-") as folder:
        if args.smoke:
            args.generator, args.data = smoke_inputs(Path(folder), args.images)
        measure(args)


def measure(args: argparse.Namespace) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)
    generator = load_generator(args.generator)
    radii = [float(r) for r in args.radii.split(",")]
    plans = schedules(args.steps, radii)
    print(
        f"# torch {torch.__version__}, CPU threads {torch.get_num_threads()}, generator {generator.size}², "
        f"{args.images} images, {args.steps} steps per method, ILO radii {radii}\n"
    )

    with torch.no_grad():
        z = torch.randn(args.images, generator.style_dim, generator=torch_generator(0, "quality", "in-range"))
        in_range = (generator(z).clamp(-1, 1) + 1) / 2
    seeds = [item_seed(0, "quality", "in-range", i) for i in range(args.images)]
    started = time.perf_counter()
    quality = reconstruct(generator, in_range, OperatorSpec("inpaint", 0.5), plans["ilo"], seeds)
    print(
        f"In range (generator samples), inpaint keep 0.5, ILO: PSNR {mean_ci(quality['psnr'])} dB, "
        f"min {float(quality['psnr'].min()):.2f} dB ({time.perf_counter() - started:.0f} s)\n"
    )

    index = read_index(args.data)
    test_ids = index[index["split"] == "test"]["id"].tolist()[: args.images]
    truth = (load_images(args.data, "test", generator.size, test_ids) + 1) / 2
    print("| task | level | method | PSNR (dB) | SSIM | seconds |")
    print("|---|---|---|---|---|---|")
    for task, levels in args.levels.items():
        for level in levels:
            for method, phases in plans.items():
                seeds = [item_seed(0, "quality", task, i) for i in test_ids]  # same operator for every method
                started = time.perf_counter()
                quality = reconstruct(generator, truth, OperatorSpec(task, level), phases, seeds)
                seconds = time.perf_counter() - started
                print(
                    f"| {task} | {level} | {method} | {mean_ci(quality['psnr'])} | {mean_ci(quality['ssim'])} | {seconds:.0f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
