"""Speed at the paper's size, in one go: is each inner loop as fast as the arithmetic it does allows?

One run measures, on one device and at one precision, with random weights (speed does not depend on them):
- the machine's rate: a large matrix product (the GEMM every other row is compared with, from the same run);
- the generator: `G.synthesis` forward + backward to w+ at 1024² config-f, batch 1, its FLOPs counted by
  torch's FlopCounterMode: target ≥ 50 % of the GEMM rate;
- ILO steps at 1024² as the FFHQ profile runs them (noise maps optimised, geocross, l1 ball), at layer 0 (the whole
  generator) and layer 3 (the last phase), without and with LPIPS-VGG at 256²: target ≤ 1.2× the generator's
  forward + backward (+ LPIPS's own forward + backward when on);
- batching: ILO steps at layer 0 (the whole generator, noise optimised) at batch 8 against batch 1, images·steps/s,
  at 32² (the demo's generator: target ≥ 3×), 128² and 256² (config-f channels: target ≥ 1×, never slower);
- the score model: the paper-size ViT (72M, 515×16×16 → 256 tokens) forward + backward, and one SGILO Langevin step
  at layer 3 of one chain (profiles/ffhq's SGILO settings: 5-step hot start) with the FLOPs it does.

A step's time is the median interval between the ends of consecutive steps inside `sgilo.inversion.invert`, so a
phase's set-up (mapping to its layer, the final scoring) is not in it.

    python benchmarks/speed.py                      # CPU: fp32, the whole table (docs/benchmarks.md)
    python benchmarks/speed.py --device cuda        # tf32 and bf16, each row's share of that precision's GEMM rate
    python benchmarks/speed.py --smoke              # toy sizes: checks that the script runs

Prints a Markdown table: copy it into docs/benchmarks.md with the machine and the command.
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from sgilo.config import load_params
from sgilo.inversion import LayerPhase, Options, ilo_radii, invert
from sgilo.metrics import lpips_backbone_path, lpips_distance
from sgilo.operators import OperatorSpec, build_operator
from sgilo.posterior import SGLDStep
from sgilo.precision import autocast
from sgilo.stylegan2 import Generator

import posterior as posterior_bench
import score as score_bench
from _common import DEMO_ARCHITECTURE, add_smoke, machine, names_from, smoke_run
from generator import measure as measure_generator

CONFIG_F = {"style_dim": 512, "n_mlp": 8, "channel_multiplier": 2, "channel_max": 512}
FFHQ = Path(__file__).resolve().parents[1] / "profiles" / "ffhq" / "params.yaml"  # its SGILO settings


@dataclass
class Row:
    what: str
    shape: str
    batch: int
    seconds: float  # per step (per call for GEMM and LPIPS)
    flops: float = math.nan  # per step
    ratio: float = math.nan
    ratio_of: str = ""
    target: str = ""
    met: bool | None = None


def median_step(run: Callable[[Callable[[int], None]], object], device: torch.device) -> float:
    """The median time between the ends of consecutive steps of `run(progress)` (the first step is left out)."""
    ends: list[float] = []

    def progress(_: int) -> None:
        _sync(device)
        ends.append(time.perf_counter())

    run(progress)
    intervals = [b - a for a, b in zip(ends, ends[1:])]
    if not intervals:
        raise ValueError("a step time needs at least 2 steps")
    return statistics.median(intervals)


def gemm_rate(size: int, precision: str, device: torch.device, repeats: int) -> float:
    """FLOP/s of a size² matrix product: the best of `repeats` after a warm-up (the machine's rate, not its noise)."""
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    a, b = (torch.randn(size, size, device=device, dtype=dtype) for _ in range(2))
    with autocast("tf32" if precision == "tf32" else "fp32", device):
        a @ b
        best = math.inf
        for _ in range(repeats):
            _sync(device)
            start = time.perf_counter()
            a @ b
            _sync(device)
            best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def count_flops(fn: Callable[[], object]) -> float:
    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def generator_flops(generator: Generator, layer: int, batch: int, device: torch.device) -> float:
    """FLOPs of one forward + backward of G_{≥layer} to its inputs (w+, and h at layer > 0)."""
    w_plus = torch.randn(batch, generator.num_ws, generator.style_dim, device=device, requires_grad=True)
    noise = generator.random_noise(batch, torch.Generator(device=device).manual_seed(0))

    def step() -> None:
        if layer == 0:
            image = generator.synthesis(w_plus, noise)
        else:
            channels, height, width = generator.layer_shape(layer)
            h = torch.randn(batch, channels + 3, height, width, device=device, requires_grad=True)
            image = generator.synthesis_from(layer, h[:, :-3], h[:, -3:], w_plus, noise)
        image.float().square().mean().backward()

    return count_flops(step)


def ilo_step(
    generator: Generator,
    layers: list[int],
    batch: int,
    steps: int,
    precision: str,
    device: torch.device,
    perceptual=None,
) -> list[float]:
    """Seconds per step of each phase at `layers`: ILO on 50 % inpainting of the generator's own samples."""
    seeds = list(range(batch))
    truth = posterior_bench.targets(generator, batch, device)
    forward = build_operator(OperatorSpec("inpaint", 0.5), tuple(truth.shape[1:]), seeds, device).physics.A
    y = forward(truth)
    radii = ilo_radii(generator, layers)
    options = Options(
        precision=precision, optimize_noise=True, perceptual=1.0 if perceptual else 0.0
    )  # as profiles/ffhq
    times = []
    for layer, radius in zip(layers, radii):
        phase = LayerPhase(layer, steps, radius, 0.1)
        times.append(
            median_step(lambda p, ph=phase: invert(generator, forward, y, seeds, [ph], options, perceptual, p), device)
        )
    return times


def lpips_seconds(perceptual, size: int, batch: int, device: torch.device, repeats: int) -> float:
    """LPIPS's own forward + backward on size² images (downsampled to its 256² inside), as ILO's loss calls it."""
    x = torch.rand(batch, 3, size, size, device=device, requires_grad=True)
    reference = torch.rand(batch, 3, size, size, device=device)
    times = []
    for _ in range(repeats + 1):
        _sync(device)
        start = time.perf_counter()
        perceptual(x, reference).sum().backward()
        _sync(device)
        times.append(time.perf_counter() - start)
        x.grad = None
    return statistics.median(times[1:])


def random_lpips(net: str, device: torch.device, home: str):
    """LPIPS through sgilo.metrics' real loading code, from a backbone file of torchvision's layout with random values
    (the published weights cannot be fetched here; speed does not depend on them)."""
    import torchvision

    torch.hub.set_dir(home)
    path = lpips_backbone_path(net)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    builder = {
        "vgg": torchvision.models.vgg16,
        "alex": torchvision.models.alexnet,
        "squeeze": torchvision.models.squeezenet1_1,
    }
    torch.save(builder[net]().state_dict(), path)
    return lpips_distance(net, device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument(
        "--precisions", type=names_from(["fp32", "tf32", "bf16"]), help="default fp32 on CPU, tf32,bf16 on CUDA"
    )
    parser.add_argument("--size", type=int, default=1024, help="the paper-size rows' resolution (config-f channels)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 128, 256], help="the batching rows' sizes")
    parser.add_argument("--batch", type=int, default=8, help="the batching rows' batch (against batch 1)")
    parser.add_argument("--steps", type=int, default=4, help="steps per timed phase (the first is left out)")
    parser.add_argument("--repeats", type=int, default=3, help="generator forward+backward repeats (median)")
    parser.add_argument("--gemm", type=int, help="matrix side of the GEMM rate; default 3072 on CPU, 8192 on CUDA")
    parser.add_argument("--lpips", default="vgg", choices=["vgg", "alex", "squeeze"], help="LPIPS backbone")
    parser.add_argument("--score", default="paper", choices=sorted(score_bench.CONFIGS), help="score model size")
    parser.add_argument("--vit-batch", type=int, default=8, help="the ViT forward+backward row's batch")
    add_smoke(parser)
    args = parser.parse_args()
    smoke_run(
        args,
        size=32,
        batch_sizes=[16],
        batch=2,
        steps=2,
        repeats=1,
        gemm=256,
        lpips="squeeze",
        score="toy",
        vit_batch=2,
    )
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    precisions = args.precisions or (["tf32", "bf16"] if device.type == "cuda" else ["fp32"])
    gemm = args.gemm or (8192 if device.type == "cuda" else 3072)
    print(f"Speed at {args.size}², torch {torch.__version__}, {machine(device)}\n")
    with tempfile.TemporaryDirectory() as home:
        perceptual = random_lpips(args.lpips, device, home)
        for precision in precisions:
            rows = run(args, precision, gemm, perceptual, device)
            print(f"### {device.type}, {precision}\n")
            print_table(rows)


def run(args, precision: str, gemm: int, perceptual, device: torch.device) -> list[Row]:
    started = time.perf_counter()
    rows: list[Row] = []

    def add(row: Row) -> None:
        rows.append(row)
        print(
            f"  [{time.perf_counter() - started:5.0f} s] {row.what} {row.shape} batch {row.batch}: {row.seconds:.3f} s",
            flush=True,
        )

    rate = gemm_rate(gemm, precision, device, repeats=5)
    add(Row(f"GEMM {gemm}²", "", 1, 2 * gemm**3 / rate, 2 * gemm**3))

    big = _generator(args.size, device)
    generator_s = measure_generator(big, 1, precision, device, args.repeats, 1)["ms_per_batch"] / 1000
    flops = generator_flops(big, 0, 1, device)
    add(Row("generator fwd+bwd", f"{args.size}²", 1, generator_s, flops, target="≥ 50 % of GEMM"))
    rows[-1].met = flops / generator_s >= 0.5 * rate

    for lpips_on in (False, True):
        own = lpips_seconds(perceptual, args.size, 1, device, args.repeats) if lpips_on else 0.0
        if lpips_on:
            add(Row(f"LPIPS-{args.lpips} fwd+bwd (256²)", f"{args.size}²", 1, own))
        last = min(3, big.num_blocks - 1)  # the FFHQ profile's last phase
        times = ilo_step(big, [0, last], 1, args.steps, precision, device, perceptual if lpips_on else None)
        for layer, seconds in zip([0, last], times):
            what = f"ILO step, layer {layer}, noise" + (f", LPIPS-{args.lpips}" if lpips_on else "")
            reference = generator_s + own
            add(
                Row(
                    what,
                    f"{args.size}²",
                    1,
                    seconds,
                    ratio=seconds / reference,
                    ratio_of="generator" + (" + LPIPS" if lpips_on else ""),
                    target="≤ 1.2×",
                    met=seconds <= 1.2 * reference,
                )
            )
    del big

    for size in args.batch_sizes:
        # The layer-0 phase (the whole generator), batch 1 and batch b in turn, twice: the two machines' rates drift
        # by ±10 % over minutes, as much as the difference measured.
        generator = _generator(size, device, DEMO_ARCHITECTURE if size == DEMO_ARCHITECTURE["size"] else None)
        seconds: dict[int, list[float]] = {1: [], args.batch: []}
        for _ in range(2):
            for batch in seconds:
                seconds[batch] += ilo_step(generator, [0], batch, args.steps, precision, device)
        for batch, times in seconds.items():
            add(Row("ILO step, layer 0, noise", f"{size}²", batch, statistics.mean(times)))
        speedup = args.batch * statistics.mean(seconds[1]) / statistics.mean(seconds[args.batch])
        floor = 3.0 if size == DEMO_ARCHITECTURE["size"] else 1.0
        rows[-1].ratio, rows[-1].ratio_of = speedup, "batch 1, per image"
        rows[-1].target, rows[-1].met = f"≥ {floor:g}×", speedup >= floor

    score_rows(args, precision, device, add)
    return rows


def score_rows(args, precision: str, device: torch.device, add: Callable[[Row], None]) -> None:
    model = score_bench.build_model(args.score, device)
    shape = model.shape
    x = torch.randn(args.vit_batch, *shape, device=device)
    t = torch.rand(args.vit_batch, device=device)

    def fwd_bwd() -> None:
        with autocast(precision, device):
            out = model(x, t)
        out.float().square().mean().backward()

    fwd_bwd()
    times = []
    for _ in range(args.repeats):
        _sync(device)
        start = time.perf_counter()
        fwd_bwd()
        _sync(device)
        times.append(time.perf_counter() - start)
    model.zero_grad(set_to_none=True)
    parameters = sum(p.numel() for p in model.parameters())
    add(
        Row(
            f"ScoreViT {parameters / 1e6:.0f}M fwd+bwd",
            "×".join(map(str, shape)),
            args.vit_batch,
            statistics.median(times),
            count_flops(fwd_bwd),
        )
    )
    model.zero_grad(set_to_none=True)

    # One SGILO Langevin step at the layer the model was built for: 4 chains of one image, the profile's hot start.
    generator, prior, _ = posterior_bench.build("paper" if args.score == "paper" else "demo", device)
    layer = prior.layer
    chains = 1  # the profile runs 4 per image, in one batch: the batching rows above say what that costs
    sgilo = replace(load_params(FFHQ).evaluate.sgilo, steps=args.steps, chains=chains)
    seeds = list(range(chains))
    truth = posterior_bench.targets(generator, 1, device).repeat(chains, 1, 1, 1)
    forward = build_operator(OperatorSpec("inpaint", 0.5), tuple(truth.shape[1:]), seeds, device).physics.A
    y = forward(truth)
    options = Options(precision=precision, keep="last")
    step = SGLDStep(prior, sgilo, seeds, entries=y[0].numel())
    phase = LayerPhase(layer, args.steps, None, sgilo.lr)
    seconds = median_step(
        lambda p: invert(generator, forward, y, seeds, [phase], options, None, p, latent_step=step), device
    )
    u = torch.randn(chains, *prior.shape, device=device)
    flops = generator_flops(generator, layer, chains, device) + sgilo.hot_steps * count_flops(
        lambda: prior.score(u, torch.full((chains,), 0.005, device=device))
    )
    add(Row(f"SGILO Langevin step, layer {layer}", f"{generator.size}²", chains, seconds, flops))


def _generator(size: int, device: torch.device, architecture: dict | None = None) -> Generator:
    torch.manual_seed(0)
    generator = Generator(**(architecture or {"size": size, **CONFIG_F}))
    generator.fit_gaussian(10_000, torch.Generator().manual_seed(0))
    return generator.to(device).eval().requires_grad_(False)


def print_table(rows: list[Row]) -> None:
    rate = rows[0].flops / rows[0].seconds
    print("| measure | shape | batch | s/step | GFLOP/step | GFLOP/s | share of GEMM | ratio | target | met |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        achieved = r.flops / r.seconds
        cells = [
            r.what,
            r.shape or "–",
            str(r.batch),
            f"{r.seconds:.4g}",
            "–" if math.isnan(r.flops) else f"{r.flops / 1e9:.1f}",
            "–" if math.isnan(achieved) else f"{achieved / 1e9:.1f}",
            "–" if math.isnan(achieved) else f"{achieved / rate:.0%}",
            "–" if math.isnan(r.ratio) else f"{r.ratio:.2f}× {r.ratio_of}",
            r.target or "–",
            "–" if r.met is None else ("yes" if r.met else "**no**"),
        ]
        print("| " + " | ".join(cells) + " |")
    print()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


if __name__ == "__main__":
    main()
