"""SGILO speed: seconds per image (all its chains) by chains and precision, at the paper's step counts.

One row reconstructs `--images` measurements (50 % random inpainting of the generator's own samples) with
`sgilo.posterior.score_guided_ilo`: ILO's warm start (layers 0 … k−1) and then `--prior-steps` Langevin steps at layer k
with the hot-start prior move, all chains of all images in one batch. The generator and the score model have
random weights (speed does not depend on them); the score model's scaling is the identity.

    python benchmarks/posterior.py                                     # GPU: config-f 1024², paper-size ScoreViT, layer 3
    python benchmarks/posterior.py --device cpu --config demo          # the demo profile's generator and score model
    python benchmarks/posterior.py --device cpu --config demo --steps 5,5 --prior-steps 5 --chains 2
    python benchmarks/posterior.py --smoke                             # demo, 1 image, 1 step per phase, chains 1 and 2

Defaults on CUDA: steps 300,300,300 (ILO's first three phases, the warm start) + 300 SGLD steps at layer 3 (the
paper: "SGLD ~3 × 300 steps"), chains 1,4, precisions fp32,bf16; the goal is ≤ 20 s per image at 4 chains.
Prints a Markdown table: copy it into docs/benchmarks.md with the machine and the command.
"""

from __future__ import annotations

import argparse
import gc
import resource
import time
from dataclasses import replace

import torch

from sgilo.config import SGILOConfig, load_params
from sgilo.inversion import LayerPhase, Options
from sgilo.latents import LatentScaler
from sgilo.loader import to_dict
from sgilo.operators import OperatorSpec, build_operator
from sgilo.posterior import LatentPrior, score_guided_ilo
from sgilo.score_model import count_parameters, preconditioned_score_vit
from sgilo.sde import build_sde
from sgilo.stylegan2 import Generator

from _common import REPO, add_smoke, ints, machine, names_from, smoke_run

# Each --config is a profile's generator, score model, layer and SDE: the shapes the pipeline runs.
PROFILES = {"demo": REPO / "params.yaml", "paper": REPO / "profiles/ffhq/params.yaml"}


def build(config: str, device: torch.device) -> tuple[Generator, LatentPrior, SGILOConfig]:
    params = load_params(PROFILES[config])
    torch.manual_seed(0)
    generator = Generator(**to_dict(params.generator.architecture))
    generator.fit_gaussian(10_000, torch.Generator().manual_seed(0))
    generator = generator.to(device).eval().requires_grad_(False)
    layer, traj = params.invert.layer, params.trajectories
    channels, height, width = generator.layer_shape(layer)
    shape = (channels + 3, height, width)
    sde_config = traj.sde_arguments()
    model = preconditioned_score_vit(shape, to_dict(params.score.model), 0, build_sde(**sde_config), data_std=0.2)
    model = model.to(device).eval().requires_grad_(False)
    scaler = LatentScaler(-torch.ones(shape[0]), torch.ones(shape[0]))
    prior = LatentPrior(
        model, scaler, sde_config, layer, torch.zeros(1, generator.num_ws, generator.style_dim, device=device)
    )
    return generator, prior, params.evaluate.sgilo


@torch.no_grad()
def targets(generator: Generator, count: int, device: torch.device) -> torch.Tensor:
    z = torch.stack(
        [torch.randn(generator.style_dim, generator=torch.Generator().manual_seed(s)) for s in range(count)]
    )
    return ((generator(z.to(device)).clamp(-1, 1) + 1) / 2).float()


def measure(
    generator: Generator,
    prior: LatentPrior,
    profile_config: SGILOConfig,
    images: int,
    chains: int,
    precision: str,
    steps: list[int],
    prior_steps: int,
    warm_start: str,
    device: torch.device,
) -> dict[str, float]:
    truth = targets(generator, images, device)
    spec = OperatorSpec("inpaint", 0.5)
    seeds = list(range(images))
    y = build_operator(spec, tuple(truth.shape[1:]), seeds, device).measure(truth)
    operator = build_operator(spec, tuple(truth.shape[1:]), seeds, device)
    phases = [LayerPhase(layer, n, None) for layer, n in enumerate(steps)]
    config = replace(profile_config, steps=prior_steps, chains=chains, warm_start=warm_start)
    options = Options(precision=precision)
    warm = [LayerPhase(layer, 1, None) for layer in range(len(steps))]
    score_guided_ilo(generator, operator.physics.A, y, seeds, prior, replace(config, steps=1), warm, options)  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    post = score_guided_ilo(generator, operator.physics.A, y, seeds, prior, config, phases, options)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - started
    peak = (
        torch.cuda.max_memory_allocated(device) / 2**30
        if device.type == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    )
    return {
        "seconds_per_image": seconds / images,
        "steps": post.steps,
        "peak_gib": peak,
        "loss": float(post.loss.mean()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", choices=sorted(PROFILES), help="default: paper on CUDA, demo on CPU")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--images", type=int, default=1, help="measurements per batch (each with all its chains)")
    parser.add_argument("--chains", type=ints, default=[1, 4], help="comma-separated chain counts (default 1,4)")
    parser.add_argument(
        "--precisions", type=names_from(["fp32", "tf32", "bf16"]), help="default fp32,bf16 on CUDA, fp32 on CPU"
    )
    parser.add_argument("--steps", type=ints, default=[300, 300, 300], help="warm-start ILO steps for layers 0 … k−1")
    parser.add_argument("--prior-steps", type=int, default=300, help="SGLD steps at layer k")
    parser.add_argument(
        "--warm-starts",
        type=names_from(["per_chain", "shared"]),
        default=["per_chain", "shared"],
        help="comma-separated: an ILO warm start per chain, or one shared by the chains",
    )
    add_smoke(parser)
    args = parser.parse_args()
    smoke_run(args, config="demo", images=1, chains=[1, 2], precisions=["fp32"], steps=[1, 1], prior_steps=1)
    device = torch.device("cuda" if args.device != "cpu" and torch.cuda.is_available() else "cpu")
    config = args.config or ("paper" if device.type == "cuda" else "demo")
    precisions = args.precisions or (["fp32", "bf16"] if device.type == "cuda" else ["fp32"])
    generator, prior, profile_config = build(config, device)
    if len(args.steps) != prior.layer:
        parser.error(f"--steps: give one count per warm-start layer 0 … {prior.layer - 1}")
    print(
        f"SGILO on {machine(device)}: {config} (generator {generator.size}², score model {count_parameters(prior.model) / 1e6:.1f}M "
        f"parameters on layer {prior.layer} {'×'.join(map(str, prior.shape))}); steps {args.steps} + {args.prior_steps} SGLD; "
        f"{args.images} image(s) per batch\n"
    )
    print("| device | chains | warm start | precision | steps per chain | s per image | peak GiB | measurement MSE |")
    print("|---|---|---|---|---|---|---|---|")
    for chains in args.chains:
        for warm_start in args.warm_starts if chains > 1 else ["shared"]:
            for precision in precisions:
                row = f"| {device.type} | {chains} | {warm_start} | {precision} |"
                try:
                    r = measure(
                        generator,
                        prior,
                        profile_config,
                        args.images,
                        chains,
                        precision,
                        args.steps,
                        args.prior_steps,
                        warm_start,
                        device,
                    )
                except torch.OutOfMemoryError:
                    print(f"{row} OOM | | | |", flush=True)
                else:
                    print(
                        f"{row} {r['steps']} | {r['seconds_per_image']:.2f} | {r['peak_gib']:.2f} | {r['loss']:.5f} |",
                        flush=True,
                    )
                gc.collect()
                if device.type == "cuda":
                    torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
