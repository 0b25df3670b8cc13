"""invert stage: ILO-invert the training images into the layer-k representation the score model learns.

The first `invert.images` training images (index order) are cut into shards of `invert.shard_size`;
`--shard-index i --out FILE` inverts shard i (one Snakemake job per shard) into one atomic safetensors file holding
the latents (N, C + 3, H, W), w+ (N, num_ws, style_dim), the image ids and per-image final measurement loss and PSNR.
An image whose optimisation went NaN or Inf is left out and named with the reason in the file's metadata
("failures"). Within a shard, finished batches are checkpointed to `partial/<FILE's stem>.pt` beside FILE; a killed
job resumes at the next batch and ends with the same file as an uninterrupted run (each image's result depends only
on its own seed). `--generated-index i --out FILE` writes shard i of the `invert.generated` latents drawn from the
generator itself (same layout, no loss or PSNR): extra training data for the prior from the distribution of the
generator's own layer k. `--shards FILE… --out FILE` gathers the given shards' PSNR into one JSON, a DVC metric.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from pathlib import Path

import torch
from tqdm import tqdm

from sgilo.config import InvertConfig, Params
from sgilo.data import load_images, read_index
from sgilo.inversion import LayerPhase, Options, Perceptual, generator_latents, invert
from sgilo.io import (
    discard_checkpoint,
    fingerprint,
    load_safetensors,
    resume_batches,
    save_json,
    save_safetensors,
    save_torch,
)
from sgilo.loader import to_dict
from sgilo.metrics import MissingWeightsError, image_metrics, lpips_distance
from sgilo.precision import resolve
from sgilo.seeding import item_seed, torch_generator
from sgilo.stages._common import (
    entry,
    log,
    pick_device,
    set_threads,
    stage_parser,
    start,
)
from sgilo.stylegan2 import Generator, load_generator

FORMAT = "sgilo.invert/1"


def main(argv: Sequence[str] | None = None) -> None:
    parser = stage_parser(__doc__)
    parser.add_argument("--data", type=Path, help="dataset folder from the download stage (with --shard-index)")
    parser.add_argument("--generator", type=Path, help="generator checkpoint (with --shard-index or --generated-index)")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--shard-index", type=int, metavar="I", help="invert shard I of the training images")
    which.add_argument("--generated-index", type=int, metavar="I", help="draw shard I of the generator's latents")
    which.add_argument("--shards", type=Path, nargs="+", metavar="FILE", help="gather these invert shards' quality")
    parser.add_argument("--out", required=True, type=Path, help="the file to write (a shard, or the summary JSON)")
    args, params = start(parser, argv)
    config = params.invert
    if args.shard_index is not None and not 0 <= args.shard_index < config.shards:
        parser.error(
            f"--shard-index {args.shard_index}: invert.images={config.images} in shards of {config.shard_size} "
            f"gives shards 0…{config.shards - 1}"
        )
    if args.generated_index is not None and not 0 <= args.generated_index < config.generated_shards:
        parser.error(
            f"--generated-index {args.generated_index}: invert.generated={config.generated} in shards of "
            f"{config.generated_shard_size} gives "
            + (
                f"shards 0…{config.generated_shards - 1}"
                if config.generated_shards
                else "none (set invert.generated > 0)"
            )
        )
    if args.shards is None and args.generator is None:
        parser.error("--generator is required with --shard-index or --generated-index")
    if args.shard_index is not None and args.data is None:
        parser.error("--data is required with --shard-index")
    set_threads(args.threads or config.threads)
    if args.shards is not None:
        summarize(args.shards, args.out)
        return
    device = pick_device(config.device, "invert.device")
    generator = load_generator(args.generator).to(device)
    if args.generated_index is not None:
        generate_shard(params, generator, args.generated_index, args.out)
        return
    try:
        perceptual = lpips_distance("vgg", device) if config.perceptual > 0 else None
    except MissingWeightsError as exc:
        parser.exit(2, f"error: invert.perceptual is {config.perceptual}: {exc}\n")
    invert_shard(params, generator, perceptual, args.data, args.generator, args.shard_index, args.out)


def shard_ids(config: InvertConfig, train_ids: Sequence[int], shard: int) -> list[int]:
    if len(train_ids) < config.images:
        raise ValueError(
            f"invert.images is {config.images} but the data set has only {len(train_ids)} training images; lower invert.images"
        )
    return list(train_ids[shard * config.shard_size : min((shard + 1) * config.shard_size, config.images)])


# ------------------------------------------------------------------------------------------------ one shard
def invert_shard(
    params: Params,
    generator: Generator,
    perceptual: Perceptual | None,
    data: Path,
    generator_path: Path,
    shard: int,
    out: Path,
) -> None:
    """Shard `shard` of the training images, inverted, to the file `out`."""
    config = params.invert
    ids = shard_ids(config, read_index(data).query("split == 'train'")["id"].tolist(), shard)
    partial_path = out.parent / "partial" / f"{out.stem}.pt"  # this job's own resume checkpoint
    device = next(generator.parameters()).device
    precision = resolve(config.precision, device, "invert.precision")
    # What a partial shard must match to be resumed: params, the precision they resolved to, generator weights and
    # the image ids.
    key = fingerprint(
        {"seed": params.seed, "invert": to_dict(params.invert), "precision": precision, "ids": ids}, generator_path
    )
    done = resume_batches(partial_path, key, "the shard")
    batches = [ids[i : i + config.batch_size] for i in range(0, len(ids), config.batch_size)]
    phases = [LayerPhase(**to_dict(s)) for s in config.phases]
    options = Options(
        geocross=config.geocross,
        perceptual=config.perceptual,
        optimize_noise=config.optimize_noise,
        precision=precision,
    )
    steps = sum(s.steps for s in phases)
    progress = tqdm(
        total=len(ids) * steps,
        initial=len(done) * steps,
        desc=f"invert shard {shard}",
        unit="img·step",
        mininterval=5.0,
    )
    for batch in batches[len(done) :]:
        target = load_images(data, "train", generator.size, batch)
        target01 = ((target + 1) / 2).to(device)
        seeds = [item_seed(params.seed, "invert", image_id) for image_id in batch]
        result = invert(
            generator,
            _identity,
            target01,
            seeds,
            phases,
            options,
            perceptual,
            progress=functools.partial(_advance, progress, len(batch)),
        )
        psnr = image_metrics((torch.nan_to_num(result.image).clamp(-1, 1) + 1) / 2, target01, ["psnr"])["psnr"]
        for image_id, reason in zip(batch, result.failures):
            if reason is not None:
                log.warning("shard %d: image %d failed (%s); it is left out of the shard", shard, image_id, reason)
        done.append(
            {
                "ids": torch.tensor(batch),
                "latents": result.latent.cpu(),
                "w_plus": result.w_plus.cpu(),
                "loss": result.loss.cpu(),
                "psnr": psnr.cpu(),
                "failures": list(result.failures),
            }
        )
        save_torch({"fingerprint": key, "batches": done}, partial_path)
    progress.close()
    kept = _write_shard(done, params, shard, out, generator, precision)
    discard_checkpoint(partial_path)
    log.info(
        "shard %d: %d images, %d failed, mean PSNR %.2f dB",
        shard,
        len(ids),
        len(ids) - len(kept["ids"]),
        float(kept["psnr"].mean()),
    )


def _advance(progress: tqdm, images: int, steps: int) -> None:
    progress.update(images * steps)


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def _write_shard(
    done: list[dict], params: Params, shard: int, dest: Path, generator: Generator, precision: str
) -> dict[str, torch.Tensor]:
    """Write the shard's images that did not fail; the failed ones are named, with their reasons, in its metadata
    ("failures": {id: reason}), so that no later stage trains on a diverged latent. Returns the tensors written."""
    failures = [reason for b in done for reason in b.get("failures", [None] * len(b["ids"]))]
    ids = torch.cat([b["ids"] for b in done])
    ok = torch.tensor([reason is None for reason in failures])
    if not bool(ok.any()):
        raise SystemExit(
            f"error: every image of invert shard {shard} failed ({failures[0]}, …); nothing was written to {dest}. "
            "Lower the step sizes (lr) in invert.phases or use invert.precision fp32"
        )
    tensors = {key: torch.cat([b[key] for b in done])[ok].contiguous() for key in done[0] if key != "failures"}
    metadata = {
        "format": FORMAT,
        "shard": str(shard),
        "layer": str(params.invert.layer),
        "generator": json.dumps(generator.config),
        "invert": json.dumps(to_dict(params.invert)),
        "precision": precision,
        "failures": json.dumps({str(int(i)): reason for i, reason in zip(ids, failures) if reason is not None}),
    }
    save_safetensors(tensors, dest, metadata)
    return tensors


# ------------------------------------------------------------------------------------------ generated shard
def generate_shard(params: Params, generator: Generator, shard: int, out: Path) -> None:
    """Shard `shard` of the layer-k latents of the generator's own samples (`generator_latents`) to the file `out`:
    ids shard·generated_shard_size…, z_j from a seed of its own, so a latent does not depend on the shard size.
    Cheap (one forward pass to layer k), so a killed job simply reruns."""
    config = params.invert
    size = config.generated_shard_size
    ids = list(range(shard * size, min((shard + 1) * size, config.generated)))
    device = next(generator.parameters()).device
    z = torch.stack(
        [torch.randn(generator.style_dim, generator=torch_generator(params.seed, "generated", j)) for j in ids]
    ).to(device)
    latents, w_plus = generator_latents(generator, config.layer, z, config.batch_size)
    metadata = {
        "format": FORMAT,
        "shard": str(shard),
        "layer": str(config.layer),
        "generator": json.dumps(generator.config),
        "source": "generator",
    }
    save_safetensors(
        {
            "ids": torch.tensor(ids),
            "latents": latents.float().cpu().contiguous(),
            "w_plus": w_plus.float().cpu().contiguous(),
        },
        out,
        metadata,
    )
    log.info("generated shard %d: %d latents of layer %d", shard, len(ids), config.layer)


# -------------------------------------------------------------------------------------------------- summary
def summarize(shards: Sequence[Path], out: Path) -> None:
    """The invert shards' quality, in the order given, as one JSON file `out`."""
    psnr, loss, failures, precisions = [], [], {}, set()
    for path in shards:
        if not path.exists():
            raise SystemExit(f"error: {path} is missing; run the invert stage for that shard first")
        tensors, metadata = load_safetensors(path)
        psnr.append(tensors["psnr"])
        loss.append(tensors["loss"])
        failures |= json.loads(metadata.get("failures", "{}"))
        precisions.add(metadata.get("precision", "unrecorded"))
    psnr_all, loss_all = torch.cat(psnr), torch.cat(loss)
    save_json(
        {
            "images": len(psnr_all),
            "failed": len(failures),
            "failures": failures,
            "psnr_mean": float(psnr_all.mean()),
            "psnr_min": float(psnr_all.min()),
            "psnr_median": float(psnr_all.median()),
            "loss_mean": float(loss_all.mean()),
            "precision": ", ".join(sorted(precisions)),  # as each shard resolved invert.precision
        },
        out,
    )


if __name__ == "__main__":
    entry(main)
