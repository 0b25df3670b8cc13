"""Latent score model speed: ScoreViT training samples/s and sampling latents/s by batch size and precision.

Training rows time one optimiser step of `sgilo.score_model.ScoreViT` as the score stage takes it, minus the
data loading, gradient clipping and EMA: forward + `dsm_loss` + backward + AdamW step, on random (x_t, ε, t) in
the model's latent shape (one batch per row, drawn once). Sampling rows run `sgilo.sde.reverse_sde_sample`
(VP-SDE, one Langevin corrector step per predictor step, so 2 score evaluations per step) and
`sgilo.sde.probability_flow_sample` (scipy RK45, rtol = atol = 1e-5, which copies every evaluation to the CPU
in float64) through `Preconditioned.score`. Weights are random (speed does not depend on them); the model's skip
c(t)·x keeps the samplers stable, and every sampling row starts from the same initial weights and seed.
bf16 is `torch.autocast` around the model only: the sampler's arithmetic stays in float32.

    python benchmarks/score.py                                        # GPU: the FFHQ profile's model (paper size)
    python benchmarks/score.py --device cpu                           # the demo profile's model
    python benchmarks/score.py --config paper --batches 2 --steps 1 --sample-batch 2 --sample-steps 2
    python benchmarks/score.py --smoke                                # toy model, batch 2, 1 step, 2 SDE steps, the ODE

Configs: `demo` is params.yaml's model on its generator's layer-2 latent (its channels + 3 RGB, 8, 8); `paper` is the
SGILO paper's size on the FFHQ profile's layer-3 latent of config-f (512 features + 3 skip channels at 16², ≈72M parameters); `toy` is the
smoke run's. The probability-flow ODE runs for `demo` only unless `--ode` is given (its CPU round trips dominate on a
GPU; the smoke run gives it).
Prints two Markdown tables: copy them into docs/benchmarks.md with the machine and the command.
"""

from __future__ import annotations

import argparse
import gc
import resource
import time
from collections.abc import Callable

import torch
from torch import Tensor

from sgilo.precision import autocast
from sgilo.score_model import Preconditioned, ScoreViT, count_parameters, dsm_loss
from sgilo.sde import VPSDE, probability_flow_sample, reverse_sde_sample
from sgilo.stylegan2 import channel_count

from _common import DEMO, DEMO_ARCHITECTURE, add_smoke, ints, machine, names_from, smoke_run

SKIP_DATA_STD = 0.2
CONFIGS = {
    # params.yaml's model on its layer-2 latent: (channels + 3 RGB, 8, 8)
    "demo": {
        "shape": (
            channel_count(8, DEMO_ARCHITECTURE["channel_multiplier"], DEMO_ARCHITECTURE["channel_max"]) + 3,
            8,
            8,
        ),
        **{key: getattr(DEMO.score.model, key) for key in ("width", "depth", "heads", "mlp")},
    },
    "paper": {"shape": (515, 16, 16), "width": 1024, "depth": 8, "heads": 1, "mlp": 4096},  # FFHQ profile, layer 3
    "toy": {"shape": (7, 4, 4), "width": 16, "depth": 1, "heads": 1, "mlp": 32},  # --smoke's: the code path, in seconds
}


def build_model(config: str, device: torch.device) -> Preconditioned:
    torch.manual_seed(0)
    return Preconditioned(ScoreViT(**CONFIGS[config]), VPSDE(), data_std=SKIP_DATA_STD).to(device)


def measure_training(
    model: Preconditioned, batch: int, precision: str, steps: int, warmup: int, lr: float, device: torch.device
) -> dict[str, float]:
    model.train()
    generator = torch.Generator(device=device).manual_seed(batch)
    shape = (batch, *model.shape)
    x_t = torch.randn(shape, generator=generator, device=device)
    eps = torch.randn(shape, generator=generator, device=device)
    t = 1e-3 + (1 - 1e-3) * torch.rand(batch, generator=generator, device=device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    losses = []

    def step() -> None:
        with autocast(precision, device):
            loss, logs = dsm_loss(model, x_t, t, eps)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(logs["loss_t"])

    for _ in range(warmup):  # also creates AdamW's state, so its memory counts in the peak
        step()
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    seconds = time.perf_counter() - start
    return {
        "samples_per_s": batch * steps / seconds,
        "ms_per_step": 1000 * seconds / steps,
        "peak_gib": _peak_gib(device),
        "loss": losses[-1],
    }


def measure_sampling(
    model: Preconditioned,
    initial: dict[str, Tensor],
    sampler: str,
    batch: int,
    precision: str,
    steps: int,
    device: torch.device,
) -> dict[str, float]:
    model.load_state_dict(initial)  # the training rows moved the weights; every sampling row starts from the same
    model.eval()
    sde, score = model.sde, model.score
    calls = [0]

    def score_fn(x: Tensor, t: Tensor) -> Tensor:
        calls[0] += 1
        with autocast(precision, device):
            return score(x, t).to(x.dtype)

    generator = torch.Generator(device=device).manual_seed(0)
    shape = (batch, *model.shape)
    run: Callable[[], Tensor]
    if sampler == "reverse SDE":

        def run() -> Tensor:
            return reverse_sde_sample(sde, score_fn, shape, generator, steps=steps, corrector_steps=1)
    else:
        x_T = sde.prior_sample(shape, generator).to(device)

        def run() -> Tensor:
            return probability_flow_sample(sde, score_fn, x_T)[0]

    with torch.no_grad():  # one untimed evaluation: kernels, autocast caches, allocator
        score_fn(torch.zeros(shape, device=device), torch.full((batch,), 0.5, device=device))
    calls[0] = 0
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    x = run()
    _sync(device)
    seconds = time.perf_counter() - start
    return {
        "evals": calls[0],
        "seconds": seconds,
        "latents_per_s": batch / seconds,
        "evals_per_s": calls[0] / seconds,
        "std": float(x.float().std()),
        "peak_gib": _peak_gib(device),
    }


def _peak_gib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB; the whole process so far


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _free(model: ScoreViT, device: torch.device) -> None:
    model.zero_grad(set_to_none=True)
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", choices=sorted(CONFIGS), help="model; default demo on CPU, paper on CUDA")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument(
        "--batches", type=ints, help="comma-separated training batch sizes; default 64,128 on CPU, 32,64,128 on CUDA"
    )
    parser.add_argument(
        "--precisions",
        type=names_from(["fp32", "bf16"]),
        help="comma-separated, of fp32,bf16; default fp32 on CPU, both on CUDA",
    )
    parser.add_argument("--steps", type=int, help="timed training steps per row; default 5 on CPU, 20 on CUDA")
    parser.add_argument("--warmup", type=int, default=2, help="untimed training steps before each row's timed ones")
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument(
        "--sample-batch", type=int, help="latents drawn per sampling row; default 16 on CPU, 64 on CUDA"
    )
    parser.add_argument("--sample-steps", type=int, help="reverse-SDE steps; default 100 on CPU, 500 on CUDA")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads; 0 (default) keeps torch's choice")
    parser.add_argument("--ode", action="store_true", help="also time the probability-flow ODE for the paper config")
    add_smoke(parser)
    args = parser.parse_args()
    smoke_run(
        args,
        config="toy",
        batches=[2],
        precisions=["fp32"],
        steps=1,
        warmup=1,
        sample_batch=2,
        sample_steps=2,
        ode=True,
    )

    if args.threads > 0:
        torch.set_num_threads(
            args.threads
        )  # with other jobs on the cores, fewer threads than cores avoids OpenMP stalls
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    cuda = device.type == "cuda"
    config = args.config or ("paper" if cuda else "demo")
    batches = args.batches or ([32, 64, 128] if cuda else [64, 128])
    precisions = args.precisions or (["fp32", "bf16"] if cuda else ["fp32"])
    steps = args.steps if args.steps is not None else (20 if cuda else 5)
    sample_batch = args.sample_batch if args.sample_batch is not None else (64 if cuda else 16)
    sample_steps = args.sample_steps if args.sample_steps is not None else (500 if cuda else 100)
    samplers = ["reverse SDE"] + (["PF ODE"] if config == "demo" or args.ode else [])

    model = build_model(config, device)
    initial = {
        k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()
    }  # off the GPU: not in any peak
    c = CONFIGS[config]
    memory = "peak GPU GiB" if cuda else "peak RSS GiB (process)"
    print(
        f"ScoreViT {config}: latent {'×'.join(map(str, c['shape']))}, width {c['width']}, depth {c['depth']}, {c['heads']} head(s), "
        f"MLP {c['mlp']}, {count_parameters(model) / 1e6:.2f}M parameters (random weights), torch {torch.__version__}, {machine(device)}"
    )
    print(
        f"training: forward + dsm_loss + backward + AdamW (lr {args.lr}), {steps} timed steps after {args.warmup} warm-up steps\n"
    )
    print(f"| device | config | batch | precision | samples/s | ms/step | {memory} | loss |")
    print("|---|---|---|---|---|---|---|---|")
    for precision in precisions:
        for batch in batches:
            row = f"| {device.type} | {config} | {batch} | {precision} |"
            try:
                r = measure_training(model, batch, precision, steps, args.warmup, args.lr, device)
            except torch.cuda.OutOfMemoryError:
                r = None  # freed below, once the exception no longer holds the failed step's tensors
            _free(model, device)
            if r is None:
                print(f"{row} OOM | | | |", flush=True)
                continue
            print(
                f"{row} {r['samples_per_s']:.1f} | {r['ms_per_step']:.1f} | {r['peak_gib']:.2f} | {r['loss']:.4f} |",
                flush=True,
            )

    print(
        f"\nsampling: VP-SDE, batch {sample_batch}; reverse SDE = {sample_steps} Euler–Maruyama steps + 1 Langevin corrector "
        "step each (snr 0.16); PF ODE = RK45, rtol = atol = 1e-5; score evals are batched model calls\n"
    )
    print(
        f"| device | config | sampler | precision | batch | steps | score evals | s | latents/s | score evals/s | sample std | {memory} |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for precision in precisions:
        for sampler in samplers:
            shown = sample_steps if sampler == "reverse SDE" else "adaptive"
            row = f"| {device.type} | {config} | {sampler} | {precision} | {sample_batch} | {shown} |"
            try:
                r = measure_sampling(model, initial, sampler, sample_batch, precision, sample_steps, device)
            except torch.cuda.OutOfMemoryError:
                r = None
            _free(model, device)
            if r is None:
                print(f"{row} OOM | | | | | |", flush=True)
                continue
            print(
                f"{row} {r['evals']} | {r['seconds']:.2f} | {r['latents_per_s']:.2f} | {r['evals_per_s']:.1f} | {r['std']:.3f} |"
                f" {r['peak_gib']:.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
