"""How close a trained latent prior's unconditional samples come to the data it models, in image space.

For each score model given: `--samples` reverse-SDE samples (the score stage's sampler, `--steps` steps), decoded
by the generator from layer k on with the training mean w+, as the score stage's samples.png. References, decoded
the same way: inverted latents of real images (the invert stage's shards, split in two halves) and latents drawn
from the generator with fresh seeds (two sets; not the training draws). Prints the sliced Wasserstein distance
(`sgilo.gan.sliced_wasserstein`, the demo's weight-free sample-quality figure) of every set to the first half of
each reference, so a reference's second set gives the floor; writes a figure with one row of images per set.

    python benchmarks/prior_samples.py --latents results/invert/shards/*.safetensors \\
        --models results/score/model.pt /tmp/old/model.pt \\
        --names "with generated latents" "inversions only" --figure docs/demo-prior-samples.png

    python benchmarks/prior_samples.py --smoke     # an untrained toy prior, a random toy generator: checks that it runs

The generator defaults to a finished pipeline's (results/); the invert shards are given with --latents; every model
must have been trained on that generator's latents. The smoke run needs none: it writes a random 32² generator, 8 of its own
layer-2 latents as the "inverted" shard and an untrained score model to a temporary folder, and draws 4 samples of
3 steps per set.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from sgilo.data import save_image_grid
from sgilo.gan import sliced_wasserstein
from sgilo.inversion import generator_latents
from sgilo.io import load_safetensors, save_safetensors
from sgilo.latents import LatentScaler
from sgilo.posterior import LatentPrior, decode_latents, sample_latents
from sgilo.score_model import Preconditioned, ScoreViT
from sgilo.sde import build_sde
from sgilo.seeding import torch_generator
from sgilo.stylegan2 import Generator, load_generator, save_generator

from _common import add_smoke, machine, smoke_run

SMOKE_LAYER = 2


def smoke_inputs(folder: Path) -> tuple[Path, Path, Path]:
    """A random toy generator, 8 of its own layer-2 latents as the invert stage's shard, and an untrained score model."""
    torch.manual_seed(0)
    generator = Generator(size=32, style_dim=16, n_mlp=2, channel_multiplier=1, channel_max=16)
    save_generator(generator, folder / "generator.pt")
    with torch.no_grad():
        latents, _ = generator_latents(generator, SMOKE_LAYER, torch.randn(8, generator.style_dim))
    save_safetensors({"ids": torch.arange(8), "latents": latents}, folder / "invert-shard.safetensors")
    channels = latents.shape[1]
    sde_config = {"name": "vp", "beta_min": 0.1, "beta_max": 20.0, "dt": 0.01}
    backbone = ScoreViT(tuple(latents.shape[1:]), width=16, depth=1, heads=1, mlp=32)
    prior = LatentPrior(
        Preconditioned(backbone, build_sde(**sde_config), data_std=0.2).eval(),
        LatentScaler(-torch.ones(channels), torch.ones(channels)),
        sde_config,
        SMOKE_LAYER,
        torch.zeros(1, generator.num_ws, generator.style_dim),
    )
    prior.save(folder / "model.pt")
    return folder / "generator.pt", folder / "invert-shard.safetensors", folder / "model.pt"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--generator", type=Path, default=Path("results/generator/generator.pt"))
    parser.add_argument("--latents", type=Path, nargs="+", help="the invert stage's shards (required but with --smoke)")
    parser.add_argument(
        "--models", type=Path, nargs="+", help="score stage model.pt files to compare (required but with --smoke)"
    )
    parser.add_argument("--names", nargs="+", help="one label per model (default: the paths)")
    parser.add_argument(
        "--samples", type=int, default=256, help="images per set (the inverted latents must number twice this)"
    )
    parser.add_argument("--steps", type=int, default=200, help="reverse-SDE steps (the demo's score.sample_steps)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shown", type=int, default=12, help="images per row of the figure")
    parser.add_argument("--figure", type=Path, help="write the figure here (PNG)")
    add_smoke(parser)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sgilo-prior-samples-") as folder:
        if args.smoke:
            generator, latents, model = smoke_inputs(Path(folder))
            smoke_run(
                args,
                generator=generator,
                latents=[latents],
                models=[model],
                names=["untrained toy prior"],
                samples=4,
                steps=3,
                shown=2,
                figure=Path(folder) / "prior.png",
            )
        compare(parser, args)


def compare(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if not args.models or not args.latents:
        parser.error("give --latents and --models (or --smoke)")
    names = args.names or [str(m) for m in args.models]
    if len(names) != len(args.models):
        parser.error("--names needs one label per model")
    torch.set_grad_enabled(False)
    n = args.samples
    generator = load_generator(args.generator)
    priors = [LatentPrior.load(path) for path in args.models]
    layer = priors[0].layer
    if any(p.layer != layer for p in priors):
        parser.error("the models learn different layers")
    decoder = priors[0]  # every model of one invert run has the same mean w+

    inverted = torch.cat([load_safetensors(path)[0]["latents"] for path in args.latents])
    if len(inverted) < 2 * n:
        parser.error(f"{len(inverted)} inverted latents in --latents; --samples may be at most {len(inverted) // 2}")
    order = torch.randperm(len(inverted), generator=torch_generator(args.seed, "prior_samples", "inverted"))
    z = torch.randn(2 * n, generator.style_dim, generator=torch_generator(args.seed, "prior_samples", "generated"))
    drawn, _ = generator_latents(generator, layer, z)
    references = {
        "inverted": (
            decode_latents(generator, decoder, inverted[order[:n]]),
            decode_latents(generator, decoder, inverted[order[n : 2 * n]]),
        ),
        "generated": (decode_latents(generator, decoder, drawn[:n]), decode_latents(generator, decoder, drawn[n:])),
    }
    rows = [
        ("inverted latents (second half)", references["inverted"][1]),
        ("generator latents (second set)", references["generated"][1]),
    ]
    seconds = {}
    for name, prior in zip(names, priors):
        started = time.perf_counter()
        rows.append((name, decode_latents(generator, prior, sample_latents(prior, n, args.seed, args.steps))))
        seconds[name] = time.perf_counter() - started

    print(
        f"machine: {machine(torch.device('cpu'))}; {n} images per set, {args.steps} reverse-SDE steps, seed {args.seed}\n"
    )
    print("| set | SWD to inverted latents | SWD to generator latents | sampling s |")
    print("|---|---|---|---|")
    for name, images in rows:
        swd = [sliced_wasserstein(images.clamp(-1, 1), ref[0].clamp(-1, 1)) for ref in references.values()]
        timing = f"{seconds[name]:.0f}" if name in seconds else "—"
        print(f"| {name} | {swd[0]:.4f} | {swd[1]:.4f} | {timing} |")
    if args.figure:
        grid = torch.cat([images[: args.shown] for _, images in rows])
        save_image_grid(grid.clamp(-1, 1), args.figure, nrow=args.shown)
        print(f"\nfigure: {args.figure} (rows: {'; '.join(name for name, _ in rows)})")


if __name__ == "__main__":
    main()
