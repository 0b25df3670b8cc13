"""What bf16 autocast costs or gains on this machine, and the machine's fp32 GEMM rate.

For each kernel (a large square matmul, the 512×512 matmul of the issue's report, and a 3×3 convolution forward
+ backward of the demo generator's shape), the median time in fp32 and under bf16 autocast, their ratio, and the
FLOP rate. The large fp32 GEMM's rate is the yardstick the 1024² generator benchmark is compared with
(docs/benchmarks.md). The first line says what `precision: auto` resolves to here (sgilo.precision).

    python benchmarks/precision.py                 # CPU
    python benchmarks/precision.py --device cuda
    python benchmarks/precision.py --smoke         # tiny shapes: checks that the script runs

Prints a Markdown table: copy it into docs/benchmarks.md with the machine and the command.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable

import torch

from sgilo.precision import native_bf16, resolve, timed

from _common import add_smoke, machine, smoke_run


def kernels(device: torch.device, smoke: bool) -> dict[str, tuple[Callable[[], None], float, bool]]:
    """name → (a call to time, its FLOPs, whether to time it under bf16 too). The large GEMM is the fp32 yardstick
    only: without native bf16 one such call takes minutes under autocast."""
    generator = torch.Generator().manual_seed(0)
    big, small = (128, 64) if smoke else (3072, 512)
    batch, channels, side = (2, 8, 8) if smoke else (16, 64, 32)

    def matmul(n: int, bf16: bool) -> tuple[Callable[[], None], float, bool]:
        a, b = (torch.randn(n, n, generator=generator).to(device) for _ in range(2))
        return (lambda: torch.mm(a, b)), 2.0 * n**3, bf16

    x = torch.randn(batch, channels, side, side, generator=generator).to(device).requires_grad_(True)
    weight = torch.randn(channels, channels, 3, 3, generator=generator).to(device).requires_grad_(True)

    def conv() -> None:
        torch.nn.functional.conv2d(x, weight, padding=1).sum().backward()

    conv_flops = 3 * 2.0 * batch * channels * channels * 9 * side * side  # forward, and the two backward convolutions
    return {
        f"matmul {big}²": matmul(big, native_bf16(device)),
        f"matmul {small}²": matmul(small, True),
        f"conv 3×3 fwd+bwd {batch}×{channels}×{side}²": (conv, conv_flops, True),
    }


def median_seconds(call: Callable[[], None], precision: str, device: torch.device, repeats: int) -> float:
    return statistics.median(timed(call, precision, device, repeats))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--repeats", type=int, default=5)
    add_smoke(parser)
    args = parser.parse_args()
    smoke_run(args, repeats=1)  # and kernels() takes its small shapes
    device = torch.device(args.device)
    print(
        f"{machine(device)}; native bf16: {native_bf16(device)}, so precision auto → {resolve('auto', device)}; torch {torch.__version__}\n"
    )
    print("| kernel | fp32 ms | fp32 GFLOP/s | bf16 autocast ms | bf16 GFLOP/s | bf16 / fp32 time |")
    print("|---|---|---|---|---|---|")
    for name, (call, flops, with_bf16) in kernels(device, args.smoke).items():
        fp32 = median_seconds(call, "fp32", device, args.repeats)
        if not with_bf16:
            print(f"| {name} | {fp32 * 1e3:.2f} | {flops / fp32 / 1e9:.1f} | – | – | – |", flush=True)
            continue
        bf16 = median_seconds(call, "bf16", device, args.repeats)
        print(
            f"| {name} | {fp32 * 1e3:.2f} | {flops / fp32 / 1e9:.1f} | {bf16 * 1e3:.2f} | {flops / bf16 / 1e9:.1f} | {bf16 / fp32:.2f}× |",
            flush=True,
        )


if __name__ == "__main__":
    main()
