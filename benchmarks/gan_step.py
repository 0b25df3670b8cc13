"""Where the demo generator's training time goes: one GAN step split into its parts, and the ops that take it.

The generator stage trains `sgilo.gan.GANTrainer` for `generator.train.steps` steps; this times those steps on the
profile's own architecture, batch and precision, on random images of the profile's size (speed does not depend on
them). Each part's time is the median over the timed steps; R1 runs every `r1_every` steps, so its time per step is
its time per call over r1_every. `--ops N` adds the N torch ops with the most self CPU time over the timed steps
(torch.profiler), the figure that says which kernels to make cheaper.

    python benchmarks/gan_step.py                       # the demo profile (params.yaml), 48 timed steps
    python benchmarks/gan_step.py --precision bf16      # the same under bf16 autocast (slow without native bf16)
    python benchmarks/gan_step.py --smoke               # 2 timed steps at toy size: checks that it runs

Prints Markdown tables: copy them into docs/benchmarks.md with the machine and the command.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import defaultdict
from dataclasses import replace

import torch
from torch.profiler import ProfilerActivity, profile

from sgilo.config import ArchitectureConfig, load_params
from sgilo.gan import GANTrainer

from _common import REPO, add_smoke, machine, smoke_run

# GANTrainer's parts of a step (its methods, wrapped to time them), in the order a step runs them.
LABELS = {
    "_discriminator_step": "discriminator step (G forward without grad, D on real and fake, Adam)",
    "_r1_step": "R1 penalty (D double backward, float32)",
    "_generator_step": "generator step (mapping, synthesis, D, backward through both, Adam)",
    "_update_ema": "EMA of the generator's weights",
}
PARTS = tuple(LABELS)


def timed_trainer(trainer: GANTrainer, seconds: dict[str, list[float]]) -> None:
    """Wrap the trainer's parts so that each call's wall time lands in `seconds[part]`."""
    for name in PARTS:
        method = getattr(trainer, name)

        def wrapped(*args, _method=method, _name=name, **kwargs):
            start = time.perf_counter()
            out = _method(*args, **kwargs)
            seconds[_name].append(time.perf_counter() - start)
            return out

        setattr(trainer, name, wrapped)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default=str(REPO / "params.yaml"), help="the profile whose generator is trained")
    parser.add_argument("--steps", type=int, default=48, help="timed steps (a multiple of r1_every gives R1 its share)")
    parser.add_argument("--warmup", type=int, default=4)
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16"], help="default: the profile's")
    parser.add_argument("--ops", type=int, default=15, help="top ops by self CPU time (0: no profile)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    add_smoke(parser)
    args = parser.parse_args()
    smoke_run(args, steps=2, warmup=1, ops=5, toy=True)
    if args.threads:
        torch.set_num_threads(args.threads)
    params = load_params(args.params)
    architecture, train = params.generator.architecture, params.generator.train
    if train is None:
        parser.error(f"{args.params}: generator.source is {params.generator.source!r}; this times training")
    if getattr(args, "toy", False):
        architecture = ArchitectureConfig(size=8, style_dim=16, n_mlp=1, channel_multiplier=1, channel_max=8)
        train = replace(train, batch_size=2, disc_channel_max=8, r1_every=2)
    if args.precision:
        train = replace(train, precision=args.precision)
    trainer = GANTrainer(architecture, train, seed=0)
    images = torch.rand(
        train.batch_size, 3, architecture.size, architecture.size, generator=torch.Generator().manual_seed(0)
    )
    real = images * 2 - 1
    for step in range(args.warmup):
        trainer.train_step(step + 1, real)
    seconds: dict[str, list[float]] = defaultdict(list)
    timed_trainer(trainer, seconds)
    step_times = []
    first = args.warmup + 1
    for step in range(first, first + args.steps):
        start = time.perf_counter()
        trainer.train_step(step, real)
        step_times.append(time.perf_counter() - start)

    step_ms = 1000 * statistics.mean(step_times)
    print(
        f"GAN training step on {machine(torch.device('cpu'))}: {args.params} — generator {architecture.size}², "
        f"style {architecture.style_dim}, ≤ {architecture.channel_max} channels; batch {train.batch_size}, "
        f"precision {trainer.precision}, R1 every {train.r1_every}; {args.steps} timed steps after {args.warmup}\n"
    )
    print(
        f"mean step: {step_ms:.1f} ms ({1000 / step_ms:.2f} steps/s, {train.batch_size * 1000 / step_ms:.1f} images/s)\n"
    )
    print("| part | ms per call (median) | calls per step | ms per step | share of the step |")
    print("|---|---|---|---|---|")
    for name in PARTS:
        calls = seconds[name]
        per_call = 1000 * statistics.median(calls) if calls else float("nan")
        per_step = 1000 * sum(calls) / args.steps
        print(
            f"| {LABELS[name]} | {per_call:.1f} | {len(calls) / args.steps:.3g} | {per_step:.1f} | {per_step / step_ms:.0%} |"
        )

    if args.ops:
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for step in range(first + args.steps, first + 2 * args.steps):
                trainer.train_step(step, real)
        events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
        total = sum(e.self_cpu_time_total for e in events)
        print(f"\nTop {args.ops} ops by self CPU time over {args.steps} more steps (profiled, so a little slower):\n")
        print("| op | calls per step | self ms per step | share |")
        print("|---|---|---|---|")
        for event in events[: args.ops]:
            print(
                f"| {event.key} | {event.count / args.steps:.0f} | {event.self_cpu_time_total / 1000 / args.steps:.1f} | "
                f"{event.self_cpu_time_total / total:.0%} |"
            )


if __name__ == "__main__":
    main()
