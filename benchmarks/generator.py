"""StyleGAN2 synthesis speed: forward + backward images/s by batch size and dtype.

Forward + backward through `G.synthesis` with respect to w+ is the inner loop of CSGM, ILO and SGILO, so this
is the figure that decides inversion throughput. Weights are random (speed does not depend on them).

    python benchmarks/generator.py                                   # GPU if present: 1024² config-f
    python benchmarks/generator.py --device cpu --size 256 --batch 1 8 32
    python benchmarks/generator.py --device cpu --size 1024 --batch 1 --repeats 1
    python benchmarks/generator.py --smoke                           # 16², batch 1, fp32, 1 repeat: checks that it runs

Prints a Markdown table: copy it into docs/benchmarks.md with the machine and the command.
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from sgilo.precision import autocast
from sgilo.stylegan2 import Generator

from _common import add_smoke, machine, smoke_run


def measure(
    generator: Generator, batch: int, dtype: str, device: torch.device, repeats: int, warmup: int
) -> dict[str, float]:
    w_plus = torch.randn(batch, generator.num_ws, generator.style_dim, device=device, requires_grad=True)
    noise = generator.random_noise(batch, torch.Generator(device=device).manual_seed(0))

    def step() -> None:
        with autocast(dtype, device):
            image = generator.synthesis(w_plus, noise)
        image.float().square().mean().backward()
        w_plus.grad = None

    for _ in range(warmup):
        step()
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - start)
    median = sorted(times)[len(times) // 2]
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    return {"images_per_s": batch / median, "ms_per_batch": 1000 * median, "peak_gib": peak}


def _gib(value: float) -> str:
    return "–" if math.isnan(value) else f"{value:.2f}"  # NaN: no GPU peak on the CPU


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--size", type=int, default=1024, help="resolution; channels as config-f (multiplier 2, max 512)"
    )
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--dtype", nargs="+", default=["fp32", "bf16"], choices=("fp32", "bf16"))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    add_smoke(parser)
    args = parser.parse_args()
    smoke_run(
        args, size=16, batch=[1], dtype=["fp32"], repeats=1, warmup=0
    )  # bf16 left out: minutes without native bf16

    device = torch.device(args.device)
    generator = Generator(args.size).to(device).eval().requires_grad_(False)
    name = machine(device)
    print(
        f"StyleGAN2 {args.size}² (config-f channels), synthesis forward+backward w.r.t. w+, torch {torch.__version__}, {name}\n"
    )
    print("| device | size | batch | dtype | images/s | ms/batch | peak GPU GiB |")
    print("|---|---|---|---|---|---|---|")
    for dtype in args.dtype:
        for batch in args.batch:
            r = measure(generator, batch, dtype, device, args.repeats, args.warmup)
            print(
                f"| {device.type} | {args.size} | {batch} | {dtype} | {r['images_per_s']:.2f} | {r['ms_per_batch']:.0f} | {_gib(r['peak_gib'])} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
