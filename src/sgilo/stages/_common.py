"""What every stage entry point shares: argument parsing, logging to the rule's log, thread count."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence

import torch

from sgilo.allocator import retain_freed_memory
from sgilo.config import Params, load_params
from sgilo.data import DataError
from sgilo.io import CheckpointError, DiskFullError
from sgilo.loader import ConfigError

log = logging.getLogger("sgilo")


def stage_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml, the demo profile)")
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="CPU threads (Snakemake passes the rule's; default: the stage's params key, 0 there = every core)",
    )
    return parser


def start(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> tuple[argparse.Namespace, Params]:
    """Parse arguments, set up logging to stderr (Snakemake sends it to the rule's log) and load params."""
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr)
    try:
        params = load_params(args.params)
        retain_freed_memory()
    except (ConfigError, ValueError) as exc:
        parser.exit(2, f"error: {exc}\n")
    return args, params


def set_threads(threads: int) -> None:
    """0 means every core this process may use."""
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    torch.set_num_threads(threads or available)
    log.info("CPU threads: %d", torch.get_num_threads())


def pick_device(choice: str, key: str) -> torch.device:
    """`auto` picks the GPU when there is one; `cuda` without one stops with the params key to change."""
    if choice == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"error: {key} is 'cuda' but no CUDA device is visible; set {key} to auto or cpu")
    return torch.device("cuda" if choice != "cpu" and torch.cuda.is_available() else "cpu")


def entry(main: Callable[[], None]) -> None:
    """Run a stage's main; a missing or unreadable input ends with its message (exit 2), not a traceback."""
    try:
        main()
    except (CheckpointError, DataError, DiskFullError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
