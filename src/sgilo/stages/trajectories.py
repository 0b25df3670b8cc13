"""trajectories stage: cache forward-SDE samples of the invert latents for score training.

With no --shard-index, it fits the per-channel min–max scaling on all training latents (`--latents`, the invert
shards, and `--generated-latents`, those drawn from the generator) into the file `--out`. With `--shard-index i`, it
turns one latents file (invert shard i with `--latents`, generated shard i with `--generated-latents`) and the
scaling (`--stats`) into trajectories shard i at `--out`: for each latent, `trajectories.draws` times t ~ U(eps, T)
with x_t, its denoising target (eps, std), the intermediate iterate x_τ (τ = tau_fraction·t, on the same path) with
its own target, all from per-(seed, latent id) generators. VP uses its closed-form transitions; the other SDEs
are simulated with Euler–Maruyama. One atomic safetensors file per shard; a killed job just reruns its shard.
The generator's latents are all training latents: the held-out loss measures the inverted latents of real images only.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from tqdm import tqdm

from sgilo.config import Params, TrajectoriesConfig
from sgilo.io import ShardRows, load_safetensors, save_safetensors
from sgilo.latents import LatentScaler, pooled_std, split_held_out
from sgilo.loader import to_dict
from sgilo.sde import SDE, build_sde, training_pairs
from sgilo.seeding import torch_generator
from sgilo.stages._common import entry, log, set_threads, stage_parser, start

FORMAT = "sgilo.trajectories/1"


def main(argv: Sequence[str] | None = None) -> None:
    parser = stage_parser(__doc__)
    parser.add_argument(
        "--latents", type=Path, nargs="*", default=[], metavar="FILE", help="invert shards (inverted training images)"
    )
    parser.add_argument(
        "--generated-latents", type=Path, nargs="*", default=[], metavar="FILE", help="shards drawn from the generator"
    )
    parser.add_argument("--stats", type=Path, help="the fitted scaling (with --shard-index)")
    parser.add_argument("--shard-index", type=int, metavar="I", help="simulate shard I (one latents file)")
    parser.add_argument("--out", required=True, type=Path, help="the file to write: the scaling or a shard")
    args, params = start(parser, argv)
    set_threads(args.threads or params.trajectories.threads)
    if args.shard_index is None:
        if args.stats is not None:
            parser.error("--stats is read with --shard-index only; without it the stage fits the scaling to --out")
        if not args.latents:
            parser.error("--latents: give the invert shards to fit the scaling on")
        fit_stats(params, args.latents, args.generated_latents, args.out)
        return
    if len(args.latents) + len(args.generated_latents) != 1 or args.stats is None:
        parser.error("--shard-index needs --stats and one file, in --latents or --generated-latents")
    generated = bool(args.generated_latents)
    count = params.invert.generated_shards if generated else params.invert.shards
    if not 0 <= args.shard_index < count:
        parser.error(
            f"--shard-index {args.shard_index}: the invert stage "
            + (
                f"{'drew' if generated else 'wrote'} shards 0…{count - 1}"
                if count
                else "drew none (invert.generated is 0)"
            )
        )
    scaler = LatentScaler.from_state_dict(load_safetensors(args.stats)[0])
    latents = (args.generated_latents or args.latents)[0]
    write_shard(params, scaler, latents, args.shard_index, args.out, "generated" if generated else "shards")


def fit_stats(params: Params, shards: Sequence[Path], generated: Sequence[Path], out: Path) -> None:
    """Scaling from the training latents only (invert `shards`, then `generated` ones, in the order given): held-out
    latents must not leak into it. Two passes over the shards, one shard in memory at a time (range, then the scaled
    data's spread), so memory does not grow with the data. Written to the file `out`."""
    inverted = [(ShardRows([path]), True) for path in shards]
    inverted += [(ShardRows([path]), False) for path in generated]

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
    save_safetensors({**scaler.state_dict(), "data_std": data_std}, out, {"format": FORMAT})
    log.info("latent scaling fitted on %d training latents", sum(counts))


def write_shard(
    params: Params, scaler: LatentScaler, latents: Path, shard: int, out: Path, kind: str = "shards"
) -> None:
    """The trajectories of the latents file `latents` (shard `shard`) to the file `out`. kind "shards": an invert
    shard (image ids); "generated": a shard of generator latents (draw ids, own seeds)."""
    config = params.trajectories
    tensors, _ = load_safetensors(latents)
    x0 = scaler.normalize(tensors["latents"])
    sde = build_sde(**config.sde_arguments())
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
    save_safetensors(out_tensors, out, metadata)


def forward_draws(
    sde: SDE, x0: torch.Tensor, config: TrajectoriesConfig, generator: torch.Generator
) -> dict[str, torch.Tensor]:
    """`draws` samples (t, x_t, target) of one latent, plus x_τ on the same path and its target."""
    x0 = x0.unsqueeze(0).expand(config.draws, *x0.shape)
    t = sde.eps + (sde.T - sde.eps) * torch.rand(config.draws, generator=generator)
    return training_pairs(sde, x0, t, config.tau_fraction, generator, dt=config.dt)


if __name__ == "__main__":
    entry(main)
