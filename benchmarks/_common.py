"""What the benchmark scripts share: comma-separated option parsing and a one-line machine description."""

from __future__ import annotations

import argparse
import os
import platform
from collections.abc import Callable, Sequence

import torch

from sgilo.allocator import retain_freed_memory
from sgilo.precision import cpu_has_native_bf16

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


def machine(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, CUDA {torch.version.cuda}"
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {torch.get_num_threads()} threads, "
            f"capability {torch.backends.cpu.get_cpu_capability()}, native bf16: {cpu_has_native_bf16()}, malloc {MALLOC}")
