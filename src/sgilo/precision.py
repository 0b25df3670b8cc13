"""Which arithmetic a stage runs in: `auto` resolves to bf16 only where the hardware has it natively.

bf16 autocast pays on a GPU with bf16 units and on a CPU whose oneDNN has bf16 kernels (AVX512_BF16 or AMX).
Anywhere else PyTorch falls back to slow generic kernels: on an AVX2-only CPU a convolution under bf16 autocast
runs tens of times slower than in fp32 (docs/benchmarks.md). So a default must never assume it: `auto` picks bf16
where it is native and fp32 elsewhere, and an explicit `bf16` where it is not native still runs (it is a valid,
if slow, choice) but says how much slower it is on this machine, measured.

Since `auto` can resolve differently on two machines, a profile whose results must be the same on every CPU
(the demo) pins `fp32`; `auto` is for the GPU profiles. Every stage records the precision it resolved to.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import Callable, Iterator

import torch

PRECISIONS = ("auto", "fp32", "tf32", "bf16")  # tf32: TF32 tensor cores for float32 matmuls and convolutions (CUDA)

log = logging.getLogger("sgilo")


def cpu_has_native_bf16() -> bool:
    """True when this CPU has bf16 instructions that oneDNN uses (AVX512_BF16 or AMX tiles).

    AVX-512 alone is not enough: without AVX512_BF16, bf16 is converted in software."""
    checks = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(bool(check()) for check in checks if check is not None)


def native_bf16(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cpu":
        return cpu_has_native_bf16()
    return False


def describe(device: torch.device) -> str:
    """The hardware facts behind a resolution, for logs and metrics."""
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, native bf16: {native_bf16(device)}"
    return f"CPU capability {torch.backends.cpu.get_cpu_capability()}, native bf16: {native_bf16(device)}"


def resolve(requested: str, device: torch.device, key: str = "precision") -> str:
    """The precision to run: `auto` → bf16 where it is native, else fp32; `tf32` is fp32 off CUDA (there is no
    TF32 elsewhere) and says so; an explicit `bf16` without native support is kept, with a measured warning.

    `key` names the params key (or CLI flag) in the messages."""
    if requested not in PRECISIONS:
        raise ValueError(f"{key} must be one of {PRECISIONS}, got {requested!r}")
    if requested == "auto":
        resolved = "bf16" if native_bf16(device) else "fp32"
        _log_once(logging.INFO, f"{key}: auto → {resolved} ({describe(device)})")
        return resolved
    if requested == "tf32" and device.type != "cuda":
        _log_once(logging.INFO, f"{key}: tf32 exists on CUDA devices only; running fp32 on the {device.type}")
        return "fp32"
    if requested == "bf16" and not native_bf16(device):
        _warn_slow_bf16(key, device.type)
    return requested


@functools.cache
def _log_once(level: int, message: str) -> None:
    # Once per message and process: a stage resolves its precision for every batch.
    log.log(level, message)


@functools.cache
def _warn_slow_bf16(key: str, device_type: str) -> None:
    device = torch.device(device_type)
    measured = ""
    if device.type == "cpu":  # measured on the CPU only: there the fallback is the one that costs tens of times
        measured = (
            f" (measured now: a 3×3 convolution forward+backward is {bf16_slowdown(device):.1f}× slower than in fp32)"
        )
    log.warning(
        "%s is bf16, but %s: bf16 autocast falls back to slow or emulated kernels here%s. Set %s to auto or fp32 "
        "on this machine.",
        key,
        describe(device),
        measured,
        key,
    )


def bf16_slowdown(device: torch.device, repeats: int = 3) -> float:
    """How many times slower a small 3×3 convolution forward+backward runs under bf16 autocast than in fp32 on
    `device`, best of `repeats` each (about a second on a CPU without native bf16)."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(4, 32, 32, 32, generator=generator).to(device).requires_grad_(True)
    weight = torch.randn(32, 32, 3, 3, generator=generator).to(device).requires_grad_(True)

    def conv() -> None:
        torch.nn.functional.conv2d(x, weight, padding=1).sum().backward()

    return min(timed(conv, "bf16", device, repeats)) / max(min(timed(conv, "fp32", device, repeats)), 1e-9)


def timed(call: Callable[[], object], precision: str, device: torch.device, repeats: int) -> list[float]:
    """Seconds of `repeats` calls of `call` in a resolved precision, after one untimed call that warms kernels and
    caches up (CUDA synchronised, so the times are the device's)."""
    times = []
    for _ in range(repeats + 1):
        started = time.perf_counter()
        with autocast(precision, device):
            call()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - started)
    return times[1:]


@contextlib.contextmanager
def autocast(precision: str, device: torch.device) -> Iterator[None]:
    """Run the block in a resolved precision: bf16 autocast, TF32 matmuls on CUDA, or plain fp32."""
    if precision == "auto":
        raise ValueError("autocast needs a resolved precision: call sgilo.precision.resolve first")
    if precision == "bf16":
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
            yield
    elif precision == "tf32" and device.type == "cuda":
        previous = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        try:
            yield
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = previous
    else:
        yield
