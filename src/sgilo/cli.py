"""`sgilo`: the command line for practitioners. The pipeline itself runs through Snakemake (see README)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from sgilo.config import ConfigError, load_params, to_dict
from sgilo.data import save_image_grid
from sgilo.io import CheckpointError
from sgilo.seeding import torch_generator
from sgilo.stylegan2 import load_generator, save_generator


def _check_params(args: argparse.Namespace) -> None:
    print(json.dumps(to_dict(load_params(args.params)), indent=2, sort_keys=True))


def _convert(args: argparse.Namespace) -> None:
    generator = load_generator(args.checkpoint)
    save_generator(generator, args.out)
    print(f"wrote {args.out}: StyleGAN2 {generator.config}")


@torch.no_grad()
def _sample(args: argparse.Namespace) -> None:
    generator = load_generator(args.generator)
    z = torch.randn(args.n, generator.style_dim, generator=torch_generator(args.seed, "sample"))
    images = torch.cat([generator(chunk, truncation_psi=args.truncation) for chunk in z.split(16)])
    nrow = args.nrow or max(1, int(args.n**0.5))
    save_image_grid(images.clamp(-1, 1), args.out, nrow=nrow)
    print(f"wrote {args.out}: {args.n} samples, truncation {args.truncation}, seed {args.seed}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sgilo", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    check = commands.add_parser("check-params", help="validate a params file and print it resolved")
    check.add_argument("params", nargs="?", default="params.yaml")
    check.set_defaults(run=_check_params)

    convert = commands.add_parser("convert", help="convert a rosinality .pt or NVIDIA .pkl StyleGAN2 to sgilo's format")
    convert.add_argument("checkpoint", type=Path)
    convert.add_argument("--out", type=Path, required=True)
    convert.set_defaults(run=_convert)

    sample = commands.add_parser("sample", help="write a grid of random samples from a generator")
    sample.add_argument("--generator", type=Path, required=True, help="any checkpoint load_generator reads")
    sample.add_argument("--out", type=Path, required=True, help="PNG to write")
    sample.add_argument("--n", type=int, default=16)
    sample.add_argument("--nrow", type=int, default=0, help="images per row (default: square)")
    sample.add_argument("--truncation", type=float, default=1.0, help="truncation psi (1: none)")
    sample.add_argument("--seed", type=int, default=0)
    sample.set_defaults(run=_sample)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except (ConfigError, CheckpointError) as exc:
        print(f"sgilo: error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
