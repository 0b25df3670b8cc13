"""trajectories stage: cache forward-SDE samples of the invert latents for score training.

`--stats` fits the per-channel min–max scaling on all training latents (`<out>/stats.safetensors`); `--shard i`
turns invert shard i into trajectories shard i: for each latent, `trajectories.draws` times t ~ U(eps, T) with
x_t, its denoising target (eps, std), the intermediate iterate x_τ (τ = tau_fraction·t, on the same path) with
its own target, all from per-(seed, latent id) generators. VP uses its closed-form transitions; the other SDEs
are simulated with Euler–Maruyama. One atomic safetensors file per shard; a killed job just reruns its shard.
`--generated i` does the same for shard i of the latents drawn from the generator (`invert.generated`), which
are all training latents: the held-out loss measures the inverted latents of real images only. With no flag,
stats and every shard run in turn, for running the stage by hand.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from tqdm import tqdm

from sgilo.config import Params, TrajectoriesConfig
from sgilo.io import ShardRows, load_safetensors, save_safetensors, shard_file
from sgilo.latents import LatentScaler, pooled_std, split_held_out
from sgilo.loader import to_dict
from sgilo.sde import SDE, build_sde, training_pairs
from sgilo.seeding import torch_generator
from sgilo.stages._common import entry, log, set_threads, stage_parser, start

FORMAT = "sgilo.trajectories/1"


def main(argv: Sequence[str] | None = None) -> None:
    parser = stage_parser(__doc__)
    parser.add_argument("--invert", required=True, type=Path, help="the invert stage's folder (results/invert)")
    parser.add_argument("--out", required=True, type=Path, help="output folder, e.g. results/trajectories")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--stats", action="store_true", help="only fit the latent scaling")
    which.add_argument("--shard", type=int, help="only write this shard")
    which.add_argument(
        "--generated", type=int, metavar="SHARD", help="only write this shard of the generator's latents"
    )
    args, params = start(parser, argv)
    set_threads(args.threads or params.trajectories.threads)
    shards, generated = params.invert.shards, params.invert.generated_shards
    if args.shard is not None and not 0 <= args.shard < shards:
        parser.error(f"--shard {args.shard}: the invert stage wrote shards 0…{shards - 1}")
    if args.generated is not None and not 0 <= args.generated < generated:
        parser.error(
            f"--generated {args.generated}: the invert stage drew "
            + (f"shards 0…{generated - 1}" if generated else "none (invert.generated is 0)")
        )
    everything = args.shard is None and args.generated is None and not args.stats
    if args.stats or everything:
        fit_stats(params, args.invert, args.out)
    if not args.stats:
        scaler = LatentScaler.from_state_dict(load_safetensors(args.out / "stats.safetensors")[0])
        if everything:
            jobs = [("shards", s) for s in range(shards)] + [("generated", s) for s in range(generated)]
        else:
            jobs = [("shards", args.shard)] if args.shard is not None else [("generated", args.generated)]
        for kind, shard in jobs:
            write_shard(params, scaler, args.invert, shard, args.out, kind)


def fit_stats(params: Params, invert: Path, out: Path) -> None:
    """Scaling from the training latents only: held-out latents must not leak into it. Two passes over the shards,
    one shard in memory at a time (range, then the scaled data's spread), so memory does not grow with the data."""
    inverted = [(ShardRows([shard_file(invert, shard)]), True) for shard in range(params.invert.shards)]
    inverted += [
        (ShardRows([shard_file(invert, shard, "generated")]), False) for shard in range(params.invert.generated_shards)
    ]

    counts: list[int] = []

    def training() -> Iterator[torch.Tensor]:
        counts.clear()
        for rows, real in inverted:
            latents = rows.column("latents")
            if real:
                latents = latents[~split_held_out(rows.column("ids"), params.trajectories.held_out, params.seed)]
            counts.append(len(latents))
            yield latents

    scaler = LatentScaler.fit(training())
    # The score model's skip connection needs the scale of the data it models (after scaling).
    data_std = torch.tensor([pooled_std(scaler.normalize(latents) for latents in training())], dtype=torch.float32)
    save_safetensors({**scaler.state_dict(), "data_std": data_std}, out / "stats.safetensors", {"format": FORMAT})
    log.info("latent scaling fitted on %d training latents", sum(counts))


def write_shard(
    params: Params, scaler: LatentScaler, invert: Path, shard: int, out: Path, kind: str = "shards"
) -> None:
    """kind "shards": an invert shard (image ids); "generated": a shard of generator latents (draw ids, own seeds)."""
    config = params.trajectories
    tensors, _ = load_safetensors(shard_file(invert, shard, kind))
    x0 = scaler.normalize(tensors["latents"])
    sde = build_sde(config.sde, config.beta_min, config.beta_max, config.dt)
    if kind == "shards":
        held_out = split_held_out(tensors["ids"], config.held_out, params.seed)
        seed_keys: tuple[str, ...] = ("trajectories",)
    else:
        held_out = torch.zeros(len(tensors["ids"]), dtype=torch.bool)
        seed_keys = ("trajectories", "generated")
    label = f"trajectories {'shard' if kind == 'shards' else 'generated shard'} {shard}"
    records: dict[str, list[torch.Tensor]] = {
        k: [] for k in ("ids", "held_out", "t", "x_t", "eps", "std", "tau", "x_tau", "eps_tau", "std_tau")
    }
    for i, image_id in enumerate(tqdm(tensors["ids"].tolist(), desc=label, mininterval=5.0)):
        draws = forward_draws(sde, x0[i], config, torch_generator(params.seed, *seed_keys, image_id))
        for key, value in draws.items():
            records[key].append(value)
        records["ids"].append(torch.full((config.draws,), image_id, dtype=torch.int64))
        records["held_out"].append(held_out[i].expand(config.draws))
    dtype = getattr(torch, config.dtype)
    out_tensors = {k: torch.cat(v) for k, v in records.items()}
    for key in ("x_t", "eps", "x_tau", "eps_tau"):
        out_tensors[key] = out_tensors[key].to(dtype)
    metadata = {"format": FORMAT, "shard": str(shard), "trajectories": json.dumps(to_dict(config))}
    save_safetensors(out_tensors, shard_file(out, shard, kind), metadata)


def forward_draws(
    sde: SDE, x0: torch.Tensor, config: TrajectoriesConfig, generator: torch.Generator
) -> dict[str, torch.Tensor]:
    """`draws` samples (t, x_t, target) of one latent, plus x_τ on the same path and its target."""
    x0 = x0.unsqueeze(0).expand(config.draws, *x0.shape)
    t = sde.eps + (sde.T - sde.eps) * torch.rand(config.draws, generator=generator)
    return training_pairs(sde, x0, t, config.tau_fraction, generator, dt=config.dt)


if __name__ == "__main__":
    entry(main)
