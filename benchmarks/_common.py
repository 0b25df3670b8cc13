"""What the benchmark scripts share: comma-separated option parsing, a one-line machine description, and `--smoke`."""

from __future__ import annotations

import argparse
import os
import platform
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from sgilo.allocator import retain_freed_memory
from sgilo.config import load_params
from sgilo.precision import cpu_has_native_bf16

REPO = Path(__file__).resolve().parents[1]
# the demo profile as params.yaml gives it today: the scripts' "demo" shapes follow the profile
DEMO = load_params(REPO / "params.yaml")
DEMO_ARCHITECTURE = vars(DEMO.generator.architecture)
MALLOC = retain_freed_memory()  # as the stages run: freed memory is reused (sgilo.allocator)


def ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def names_from(allowed: Sequence[str]) -> Callable[[str], list[str]]:
    """An argparse type for a comma-separated list of names, each one of `allowed`."""

    def parse(text: str) -> list[str]:
        names = [v.strip() for v in text.split(",") if v.strip()]
        for name in names:
            if name not in allowed:
                raise argparse.ArgumentTypeError(f"{name!r} is not one of {', '.join(allowed)}")
        return names

    return parse


def add_smoke(parser: argparse.ArgumentParser) -> None:
    """`--smoke`: the script's own code path at toy sizes, so that CI starts every script (tests/test_benchmarks.py)."""
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="toy sizes and counts, which override those options and are printed first: checks that the script runs",
    )


def smoke_run(args: argparse.Namespace, **toy: object) -> None:
    """With --smoke, set the toy values on `args` and say that the run's numbers mean nothing."""
    if not args.smoke:
        return
    for name, value in toy.items():
        setattr(args, name, value)
    shown = ", ".join(
        f"{name} {','.join(map(str, value)) if isinstance(value, (list, tuple)) else value}"
        for name, value in toy.items()
    )
    print(f"SMOKE RUN ({shown}): checks that the script runs; its numbers mean nothing\n", flush=True)


def machine(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, CUDA {torch.version.cuda}"
    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {torch.get_num_threads()} threads, "
        f"capability {torch.backends.cpu.get_cpu_capability()}, native bf16: {cpu_has_native_bf16()}, malloc {MALLOC}"
    )
