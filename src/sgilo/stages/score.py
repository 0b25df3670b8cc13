"""score stage: train the latent score model on the cached trajectories (denoising score matching).

AdamW with linear warm-up and gradient clipping, an EMA of the weights (its decay warmed up as
min(decay, (1 + step)/(10 + step))), bf16 autocast on the GPU as an option. Each epoch ends with the held-out DSM
loss of the EMA model (latents never seen in training) and an atomic checkpoint in `resume/state.pt` beside
`--model`; a killed job resumes from the last finished epoch and reaches the same weights (per-epoch seeded
shuffles). Writes `--model` (EMA weights, model config, latent scaling, SDE), `--history` (CSV, DVC plots),
`--metrics` (JSON), `--loss` (PNG) and `--samples` (PNG: reverse-SDE samples in latent space decoded by the
generator from layer k on).
"""

from __future__ import annotations

import csv
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from sgilo.config import Params
from sgilo.data import caption_png, save_image_grid
from sgilo.figures import new_figure, save_figure
from sgilo.io import (
    ShardRows,
    atomic_open,
    discard_checkpoint,
    fingerprint,
    load_safetensors,
    load_torch,
    save_json,
    save_torch,
)
from sgilo.latents import LatentScaler
from sgilo.loader import to_dict
from sgilo.posterior import LatentPrior, decode_latents, sample_latents
from sgilo.precision import autocast, resolve
from sgilo.score_model import Preconditioned, count_parameters, dsm_loss, preconditioned_score_vit
from sgilo.sde import build_sde
from sgilo.seeding import torch_generator
from sgilo.stages._common import (
    entry,
    log,
    pick_device,
    set_threads,
    stage_parser,
    start,
)
from sgilo.stylegan2 import load_generator

HISTORY_FIELDS = ("epoch", "step", "train_loss", "held_out_loss")
# The files the stage writes: one flag each.
OUTPUTS = {
    "model": "the prior to write (model.pt: EMA weights, config, scaling, SDE)",
    "samples": "PNG of decoded prior samples to write",
    "loss": "PNG of the loss curves to write",
    "history": "CSV of the losses per epoch to write",
    "metrics": "JSON of the training's numbers to write",
}


def main(argv: Sequence[str] | None = None) -> None:
    parser = stage_parser(__doc__)
    parser.add_argument(
        "--trajectories", required=True, type=Path, nargs="+", metavar="FILE", help="the trajectories shards"
    )
    parser.add_argument("--stats", required=True, type=Path, help="the latent scaling (trajectories stage)")
    parser.add_argument(
        "--invert",
        required=True,
        type=Path,
        nargs="+",
        metavar="FILE",
        help="the invert shards (for the w+ of later layers)",
    )
    parser.add_argument("--generator", required=True, type=Path, help="generator checkpoint, to decode samples")
    for output, what in OUTPUTS.items():
        parser.add_argument(f"--{output}", required=True, type=Path, help=what)
    args, params = start(parser, argv)
    set_threads(args.threads or params.score.threads)
    device = pick_device(params.score.device, "score.device")
    precision = resolve(params.score.precision, device, "score.precision")
    data = load_trajectories(args.trajectories, args.stats)
    _, ema, history, seconds = train(
        params,
        data,
        resume_path(args.model),
        device,
        precision,
        fingerprint(
            {
                "seed": params.seed,
                "score": to_dict(params.score),
                "precision": precision,
                "trajectories": to_dict(params.trajectories),
            },
            args.stats,
        ),
    )
    finish(params, args, ema, history, seconds, data, device, precision)


def resume_path(model: Path) -> Path:
    """The job's own resume checkpoint, beside the model it will write."""
    return model.parent / "resume" / "state.pt"


# ---------------------------------------------------------------------------------------------------- data
LATENT_KEYS = ("x_t", "eps", "x_tau", "eps_tau")  # stored in trajectories.dtype, trained on in float32


def load_trajectories(paths: Sequence[Path], stats_path: Path) -> dict[str, Any]:
    """The trajectory shards (in the order given) as one table read a batch at a time (`ShardRows`): memory stays
    that of a batch whatever the number of shards. "train" and "held_out" are its row numbers in each split."""
    store = ShardRows(paths)
    held = store.column("held_out").bool()
    train, held_out = torch.nonzero(~held).squeeze(1), torch.nonzero(held).squeeze(1)
    if len(train) == 0:
        raise SystemExit("error: no training samples: lower trajectories.held_out or raise invert.images")
    stats = load_safetensors(stats_path)[0]
    return {
        "store": store,
        "train": train,
        "held_out": held_out,
        "scaler": LatentScaler.from_state_dict(stats),
        "data_std": float(stats["data_std"]),
        "shape": store.shape("x_t")[1:],
    }


def read_batch(store: ShardRows, rows: torch.Tensor, keys: Sequence[str]) -> dict[str, torch.Tensor]:
    return {key: store.rows(key, rows).float() if key in LATENT_KEYS else store.rows(key, rows) for key in keys}


# ------------------------------------------------------------------------------------------------ training
def build_model(params: Params, shape: tuple[int, ...], data_std: float) -> Preconditioned:
    """Initialised from the params' seed alone, leaving the global RNG as it was; preconditioned for the SDE the
    trajectories were drawn with."""
    traj = params.trajectories
    return preconditioned_score_vit(
        shape,
        to_dict(params.score.model),
        params.seed,
        build_sde(**traj.sde_arguments()),
        data_std,
        keep=(traj.tau_fraction,),
    )


def train(params: Params, data: dict[str, Any], state_path: Path, device: torch.device, precision: str, key: str):
    """`precision`: resolved (sgilo.precision); `key`: the fingerprint a resume state must carry (params, the
    resolved precision and the latent scaling's bytes)."""
    config = params.score
    model = build_model(params, data["shape"], data["data_std"]).to(device)
    ema = build_model(params, data["shape"], data["data_std"]).to(device).requires_grad_(False)
    ema.load_state_dict(model.state_dict())
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    first_epoch, step, history = 0, 0, []
    if state_path.exists():
        state = load_torch(state_path)
        if state.get("fingerprint") == key:
            model.backbone.load_state_dict(state["model"])
            ema.backbone.load_state_dict(state["ema"])
            optimizer.load_state_dict(state["optimizer"])
            first_epoch, step, history = state["epoch"], state["step"], state["history"]
            log.info("resuming after epoch %d", first_epoch)
    count = len(data["train"])
    keys = ("t", "x_t", "eps")
    steps_per_epoch = math.ceil(count / config.batch_size)
    started = time.perf_counter()
    if not history:
        history.append(
            {
                "epoch": 0,
                "step": 0,
                "train_loss": float("nan"),
                "held_out_loss": held_out_loss(params, ema, data, device),
            }
        )
    for epoch in range(first_epoch, config.epochs):
        order = torch.randperm(count, generator=torch_generator(params.seed, "score", "epoch", epoch))
        losses = []
        for batch in tqdm(
            order.split(config.batch_size),
            desc=f"score epoch {epoch + 1}/{config.epochs}",
            total=steps_per_epoch,
            mininterval=5.0,
        ):
            rows = read_batch(data["store"], data["train"][batch], keys)
            logs = _step(
                params, model, ema, optimizer, {k: v.to(device) for k, v in rows.items()}, step, device, precision
            )
            losses.append(logs["loss_t"])
            step += 1
        history.append(
            {
                "epoch": epoch + 1,
                "step": step,
                "train_loss": sum(losses) / len(losses),
                "held_out_loss": held_out_loss(params, ema, data, device),
            }
        )
        log.info(
            "epoch %d: train %.4f, held-out %.4f", epoch + 1, history[-1]["train_loss"], history[-1]["held_out_loss"]
        )
        if epoch + 1 < config.epochs:
            save_torch(
                {
                    "fingerprint": key,
                    "epoch": epoch + 1,
                    "step": step,
                    "history": history,
                    # the backbones' weights: the preconditioning has no state of its own
                    "model": model.backbone.state_dict(),
                    "ema": ema.backbone.state_dict(),
                    "optimizer": optimizer.state_dict(),
                },
                state_path,
            )
    return model, ema, history, time.perf_counter() - started


def _step(
    params: Params,
    model,
    ema,
    optimizer,
    batch: dict[str, torch.Tensor],
    step: int,
    device: torch.device,
    precision: str,
) -> dict[str, float]:
    config = params.score
    for group in optimizer.param_groups:
        group["lr"] = config.lr * min(1.0, (step + 1) / max(1, config.warmup_steps))
    with autocast(precision, device):
        loss, logs = dsm_loss(model, batch["x_t"], batch["t"], batch["eps"])
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if config.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
    optimizer.step()
    decay = min(config.ema_decay, (1 + step) / (10 + step))
    with torch.no_grad():
        for e, p in zip(ema.parameters(), model.parameters()):
            e.lerp_(p, 1 - decay)
    return logs


@torch.no_grad()
def held_out_loss(params: Params, model, data: dict[str, Any], device: torch.device) -> float:
    held = data["held_out"]
    if len(held) == 0:
        return float("nan")
    total, count = 0.0, 0
    for rows in held.split(params.score.batch_size):  # a training batch at a time: memory as in training
        part = {k: v.to(device) for k, v in read_batch(data["store"], rows, ("t", "x_t", "eps")).items()}
        loss, _ = dsm_loss(model, part["x_t"], part["t"], part["eps"])
        total += float(loss) * len(part["t"])
        count += len(part["t"])
    return total / count


# -------------------------------------------------------------------------------------------------- outputs
def finish(
    params: Params,
    args,
    ema: Preconditioned,
    history: list[dict],
    seconds: float,
    data: dict[str, Any],
    device: torch.device,
    precision: str,
) -> None:
    config = params.score
    generator = load_generator(args.generator).to(device)
    # The later layers' w+ for decoding: the mean over the inversions of real images (generated latents left out),
    # summed a shard at a time.
    inverted = ShardRows(args.invert)
    w_sum = sum(inverted.column_part("w_plus", i).double().sum(0, keepdim=True) for i in range(len(args.invert)))
    prior = LatentPrior(
        ema.eval(),
        data["scaler"],
        params.trajectories.sde_arguments(),
        params.invert.layer,
        (w_sum / len(inverted)).float().to(device),
    )
    latents = sample_latents(prior, config.samples, params.seed, config.sample_steps, device)
    images = decode_latents(generator, prior, latents)
    save_image_grid(images.clamp(-1, 1), args.samples, nrow=max(1, int(math.sqrt(config.samples))))
    _write_history(history, args.history)
    _plot(history, args.loss)
    for figure in (args.samples, args.loss):
        caption_png(figure, generator.standin)
    metrics = {
        "held_out_loss_initial": history[0]["held_out_loss"],
        "held_out_loss_final": history[-1]["held_out_loss"],
        "parameters": count_parameters(ema),
        "train_samples": len(data["train"]),
        "held_out_samples": len(data["held_out"]),
        "seconds": seconds,
        "precision": precision,
        "device": str(device),
    }
    prior.save(args.model)
    save_json(metrics, args.metrics)
    discard_checkpoint(resume_path(args.model))


def _write_history(history: list[dict], path: Path) -> None:
    with atomic_open(path) as handle:
        writer = csv.DictWriter(handle, fieldnames=HISTORY_FIELDS)
        writer.writeheader()
        writer.writerows(history)


def _plot(history: list[dict], path: Path) -> None:
    fig = new_figure((5, 3.2))
    ax = fig.add_subplot()
    epochs = [h["epoch"] for h in history]
    ax.plot(epochs[1:], [h["train_loss"] for h in history[1:]], label="train (EMA-free model)")
    ax.plot(epochs, [h["held_out_loss"] for h in history], label="held-out (EMA model)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("DSM loss ‖ε̂ − ε‖²")
    ax.set_yscale("log")
    ax.legend()
    save_figure(fig, path)


if __name__ == "__main__":
    entry(main)
