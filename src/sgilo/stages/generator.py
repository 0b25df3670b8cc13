"""generator stage: train the demo StyleGAN2 on the downloaded faces, or fetch and convert official weights.

Writes `--generator` (rosinality keys + config + latent_avg, loadable by `load_generator`), `--samples` (PNG),
`--metrics` (JSON) and, when training, `--history` (CSV). Training checkpoints go to `resume/state.pt` beside
`--generator` every `checkpoint_every` steps; a rerun after a kill continues from there and ends with the same
weights as an uninterrupted run. Official weights are downloaded into `--cache` (generator.source: pretrained).
"""

from __future__ import annotations

import csv
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from sgilo.config import Params
from sgilo.data import caption_png, load_images, save_image_grid
from sgilo.fetch import download_file, make_session
from sgilo.gan import GANTrainer, sliced_wasserstein
from sgilo.io import (
    atomic_open,
    discard_checkpoint,
    fingerprint,
    load_torch,
    save_json,
    save_torch,
)
from sgilo.loader import to_dict
from sgilo.seeding import torch_generator
from sgilo.stages._common import log, set_threads, stage_parser, start
from sgilo.stylegan2 import Generator, load_generator, same_architecture, save_generator

HISTORY_FIELDS = ("step", "d_loss", "g_loss", "r1", "swd")


def main(argv: Sequence[str] | None = None) -> None:
    parser = stage_parser(__doc__)
    parser.add_argument("--data", type=Path, help="dataset folder from the download stage (source: train)")
    parser.add_argument(
        "--cache", type=Path, help="folder the official weights are downloaded into (source: pretrained)"
    )
    parser.add_argument("--generator", required=True, type=Path, help="the generator checkpoint to write")
    parser.add_argument("--samples", required=True, type=Path, help="the PNG grid of samples to write")
    parser.add_argument("--metrics", required=True, type=Path, help="the JSON of metrics to write")
    parser.add_argument("--history", type=Path, help="the CSV of training losses to write (source: train)")
    args, params = start(parser, argv)
    set_threads(args.threads or params.generator.threads)
    started = time.perf_counter()
    if params.generator.source == "train":
        if args.data is None or args.history is None:
            parser.error("--data and --history are required when generator.source is 'train'")
        real = load_images(args.data, "train", params.generator.architecture.size)
        generator, metrics = train(
            params,
            real,
            fingerprint({"seed": params.seed, "generator": to_dict(params.generator)}, args.data / "index.csv"),
            resume_path(args.generator),
            args.history,
        )
    else:
        if args.cache is None:
            parser.error(f"--cache is required when generator.source is {params.generator.source!r}")
        real = None  # the sliced Wasserstein check is for the demo's small images
        generator, metrics = fetch_pretrained(params, args.cache)
    finish(params, generator, metrics, real, args, time.perf_counter() - started)


def resume_path(generator: Path) -> Path:
    """The job's own resume checkpoint, beside the generator it will write."""
    return generator.parent / "resume" / "state.pt"


# ------------------------------------------------------------------------------------------------ training
def train(
    params: Params, images: torch.Tensor, fingerprint: str, state_path: Path, history_path: Path
) -> tuple[Generator, dict[str, Any]]:
    config = params.generator
    trainer = GANTrainer(config.architecture, config.train, params.seed)
    first_step, history, resumed_seconds = _resume(trainer, state_path, fingerprint)
    steps, every, swd_every = config.train.steps, config.train.checkpoint_every, config.train.swd_every
    swd_real, _, swd_z = _quality_sets(params, images, trainer.g_ema.style_dim)
    ran, trained_seconds = 0, resumed_seconds
    progress = tqdm(range(first_step, steps), initial=first_step, total=steps, desc="generator", mininterval=5.0)
    for step in progress:
        step_started = time.perf_counter()
        losses = trainer.train_step(step, images[trainer.batch_indices(step, len(images))])
        trained_seconds += time.perf_counter() - step_started
        ran += 1
        # the curve's checks are not training time: a user compares seconds of training across settings
        due = swd_every and ((step + 1) % swd_every == 0 or step + 1 == steps)
        swd = _swd(trainer.g_ema, swd_real, swd_z) if due else math.nan
        history.append({"step": step, **losses, "swd": swd, "seconds": trained_seconds})
        progress.set_postfix(d=f"{losses['d_loss']:.3f}", g=f"{losses['g_loss']:.3f}", refresh=False)
        if (step + 1) % every == 0 and step + 1 < steps:
            save_torch(
                {"fingerprint": fingerprint, "step": step + 1, "trainer": trainer.state_dict(), "history": history},
                state_path,
            )
    _write_history(history, history_path)
    tail = history[-50:]
    metrics = {
        "steps": steps,
        "resumed_from_step": first_step,
        "train_images_per_s": ran * config.train.batch_size / max(trained_seconds - resumed_seconds, 1e-9),
        "train_seconds": trained_seconds,
        # sliced Wasserstein of the EMA generator against training seconds (issue 19's curve; docs/generator.md)
        "swd_curve": [
            {"step": h["step"] + 1, "train_seconds": h["seconds"], "swd": h["swd"]}
            for h in history
            if not math.isnan(h["swd"])
        ],
        "precision": trainer.precision,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "d_loss_last50": _mean(h["d_loss"] for h in tail),
        "g_loss_last50": _mean(h["g_loss"] for h in tail),
    }
    return trainer.g_ema, metrics


def _resume(trainer: GANTrainer, state_path: Path, fingerprint: str) -> tuple[int, list[dict[str, float]], float]:
    """The step to start from, the history so far and its training seconds (0, [], 0.0 without a usable state)."""
    if not state_path.is_file():
        return 0, [], 0.0
    state = load_torch(state_path)
    if state.get("fingerprint") != fingerprint:
        log.info("ignoring %s: it was written for other params or data; training from step 0", state_path)
        return 0, [], 0.0
    trainer.load_state_dict(state["trainer"])
    log.info("resuming from %s at step %d", state_path, state["step"])
    history = list(state["history"])
    return int(state["step"]), history, history[-1]["seconds"]


def _write_history(history: list[dict[str, float]], path: Path) -> None:
    with atomic_open(path) as handle:
        # seconds differ between runs: they go to metrics.json, keeping the history a deterministic output
        writer = csv.DictWriter(handle, fieldnames=HISTORY_FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(history)


def _mean(values: Any) -> float:
    values = [v for v in values if not math.isnan(v)]
    return sum(values) / len(values) if values else float("nan")


# ---------------------------------------------------------------------------------------------- pretrained
def fetch_pretrained(params: Params, cache: Path) -> tuple[Generator, dict[str, Any]]:
    source = params.generator.pretrained
    dest = cache / Path(source.url.split("?")[0]).name
    session = make_session(retries=source.retries)
    download_file(
        source.url, dest, md5=source.md5 or None, sha256=source.sha256 or None, session=session, progress=True
    )
    generator = load_generator(dest)
    expected = vars(params.generator.architecture)
    if not same_architecture(generator.config, expected):
        raise SystemExit(
            f"error: {dest} holds a StyleGAN2 {generator.config}, but generator.architecture in the params file "
            f"says {expected}; set generator.architecture to match the weights"
        )
    return generator, {"source_url": source.url, "source_file": str(dest)}


# -------------------------------------------------------------------------------------------------- outputs
@torch.no_grad()
def finish(
    params: Params, generator: Generator, metrics: dict[str, Any], real: torch.Tensor | None, args, seconds: float
) -> None:
    """Write the generator, its samples and metrics where `args` says."""
    config = params.generator
    generator = generator.eval().requires_grad_(False)
    if not generator.w_avg.abs().sum():
        generator.w_avg.copy_(
            generator.mean_latent(config.latent_avg_samples, torch_generator(params.seed, "generator", "latent_avg"))
        )
    if not generator.gaussian_fitted:
        generator.fit_gaussian(config.latent_avg_samples, torch_generator(params.seed, "generator", "gaussian_fit"))
    count = config.grid_rows**2
    z = torch.randn(count, generator.style_dim, generator=torch_generator(params.seed, "generator", "grid"))
    save_image_grid(generator(z).clamp(-1, 1), args.samples, nrow=config.grid_rows)
    caption_png(args.samples, generator.standin)
    if generator.standin:
        metrics["standin"] = generator.standin
    if real is not None:
        metrics.update(_sample_quality(params, generator, real))
    metrics["seconds"] = seconds
    save_generator(
        generator, args.generator, extra={"sgilo_params": {"seed": params.seed, "generator": to_dict(config)}}
    )
    save_json(metrics, args.metrics)
    discard_checkpoint(resume_path(args.generator))
    log.info("generator written to %s: %s", args.generator, json.dumps(metrics, sort_keys=True))


def _sample_quality(params: Params, generator: Generator, real: torch.Tensor) -> dict[str, float]:
    """Sliced Wasserstein distance of samples to real images, next to the real-vs-real floor."""
    first, second, z = _quality_sets(params, real, generator.style_dim)
    return {
        "swd_fake_vs_real": _swd(generator, first, z),
        "swd_real_vs_real": sliced_wasserstein(second, first),
        "n_swd": len(first),
        "n_train_images": len(real),
    }


def _quality_sets(
    params: Params, real: torch.Tensor, style_dim: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Two disjoint seeded halves of the training images (at most 1,024 each) and as many seeded z."""
    half = min(len(real) // 2, 1024)
    order = torch.randperm(len(real), generator=torch_generator(params.seed, "generator", "swd"))
    z = torch.randn(half, style_dim, generator=torch_generator(params.seed, "generator", "swd_z"))
    return real[order[:half]], real[order[half : 2 * half]], z


@torch.no_grad()
def _swd(generator: Generator, real: torch.Tensor, z: torch.Tensor) -> float:
    fake = torch.cat([generator(chunk).clamp(-1, 1) for chunk in z.split(256)])
    return sliced_wasserstein(fake, real)


if __name__ == "__main__":
    main()
