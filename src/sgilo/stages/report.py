"""report stage: the evaluate stage's per-image records and kept images into Table 1, figures and report.md.

Reads every cell's records (`--records`, parquet) and kept images (`--images`, safetensors), one file each per cell of
evaluate.tasks × evaluate.methods in table order (task by task, level by level, method by method; each file is checked
against its cell), and writes `--table` (table1.csv: one row per cell: means over test images with report.confidence
Student-t intervals; `--table-html`, the same as people read it, for Snakemake's report), `--metrics` (Table 1's
means, task -> level -> method, for `dvc metrics`), `--paired` (SGILO − each other method, image by image, with
intervals), `--curves` (one PNG per task of evaluate.tasks, in order), `--reconstructions` and `--posterior` (at the
first task's hardest level; the posterior only when sgilo is evaluated), `--speed`, the data the curves and speed
figures are drawn from as `--curve-data` (one CSV per task) and `--speed-data` (for `dvc plots`), and `--markdown`
(report.md, linking the figures relative to its folder). With --score, --generator and --data it also decodes
report.fid_samples unconditional samples of the latent prior (`--prior-samples`) and, when pytorch-fid's Inception
weights are on disk, their FID against as many training images (`--prior`, JSON; without the weights FID is reported
missing, with the reason). With --theory (each theory rule's JSON) and --theory-figures (its figure, in the same
order), each figure goes into report.md under the verdict line its JSON holds (`note`).
"""

from __future__ import annotations

import argparse
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import torch

from sgilo import report
from sgilo.config import Params, hardest_level
from sgilo.data import caption_png, load_images, read_index, save_image_grid
from sgilo.io import save_json
from sgilo.metrics import MissingWeightsError, frechet_distance, require_fid_weights
from sgilo.posterior import LatentPrior, decode_latents, sample_latents
from sgilo.stages._common import (
    entry,
    log,
    pick_device,
    set_threads,
    stage_parser,
    start,
)
from sgilo.stylegan2 import load_generator

# The files the stage writes, one flag each: (flag, help). --curves and --curve-data take one file per task.
OUTPUTS = (
    ("--table", "table1.csv"),
    ("--table-html", "table1.html, for Snakemake's report"),
    ("--metrics", "Table 1's means as JSON"),
    ("--paired", "paired differences CSV"),
    ("--reconstructions", "reconstructions PNG"),
    ("--speed", "accuracy-against-time PNG"),
    ("--speed-data", "the speed figure's CSV"),
    ("--markdown", "report.md"),
)


def main(argv: Sequence[str] | None = None) -> None:
    parser = stage_parser(__doc__)
    parser.add_argument("--records", required=True, type=Path, nargs="+", metavar="FILE", help="every cell's parquet")
    parser.add_argument(
        "--images", required=True, type=Path, nargs="+", metavar="FILE", help="every cell's kept images (safetensors)"
    )
    parser.add_argument("--score", type=Path, help="the score stage's model.pt: adds the prior's samples and FID")
    parser.add_argument("--generator", type=Path, help="generator checkpoint (with --score)")
    parser.add_argument("--data", type=Path, help="dataset folder: the FID's reference images (with --score)")
    parser.add_argument(
        "--invert-summary", type=Path, help="the invert stage's summary.json: how well the prior's training latents fit"
    )
    parser.add_argument("--theory", type=Path, nargs="*", default=[], metavar="JSON", help="theory rules' results")
    parser.add_argument(
        "--theory-figures", type=Path, nargs="*", default=[], metavar="PNG", help="their figures, in --theory's order"
    )
    for flag, what in OUTPUTS:
        parser.add_argument(flag, required=True, type=Path, help=f"to write: {what}")
    parser.add_argument("--curves", required=True, type=Path, nargs="+", metavar="PNG", help="to write: one per task")
    parser.add_argument(
        "--curve-data", required=True, type=Path, nargs="+", metavar="CSV", help="to write: one per task"
    )
    parser.add_argument("--posterior", type=Path, help="to write: the posterior PNG (when sgilo is evaluated)")
    parser.add_argument("--prior-samples", type=Path, help="to write: the prior's samples PNG (with --score)")
    parser.add_argument("--prior", type=Path, help="to write: the prior's FID JSON (with --score)")
    args, params = start(parser, argv)
    check_files(parser, args, params)
    set_threads(args.threads or params.report.threads)
    tasks = [(task_levels.task, task_levels.levels) for task_levels in params.evaluate.tasks]
    cells = report.grid_cells(tasks, params.evaluate.methods)
    records = report.load_records(dict(zip(cells, args.records)))
    table = report.summarize(records, params.report.confidence)
    # Stand-in weights (sgilo.smoke) are named on every table and figure made with them.
    standin = load_generator(args.generator).standin if args.generator is not None else ""
    report.write_table(table, args.table, standin)
    report.write_html_table(table, args.table_html, standin)
    save_json(report.metrics_summary(table), args.metrics)
    log.info("%s: %d cells from %d records", args.table, len(table), len(records))
    paired = report.paired_differences(records, "sgilo", "mse", params.report.confidence)
    report.write_table(paired, args.paired, standin)
    figures, notes, plot_data = draw_figures(params, table, dict(zip(cells, args.images)), args)
    data_paths = plot_data_paths(params, args)
    for name, frame in plot_data.items():
        report.write_table(frame, data_paths[name], standin)
    if args.score is not None:
        figures["prior_samples"], notes["prior_samples"] = prior_section(params, args)
    for path in figures.values():
        caption_png(path, standin)
    notes["standin"] = standin
    for path, figure in zip(args.theory, args.theory_figures):
        key = f"theory_{path.stem}"
        figures[key], notes[key] = figure, json.loads(path.read_text())["note"]
    # links relative to report.md
    figures = {key: os.path.relpath(path, args.markdown.parent) for key, path in figures.items()}
    notes["table"] = (
        f"Means over the n test images of each cell, with {params.report.confidence:.0%} Student-t "
        "intervals of the mean in brackets (none below two images)."
    )
    if args.invert_summary is not None:
        inverted = json.loads(args.invert_summary.read_text())
        notes["table"] += (
            f" The prior was trained on {inverted['images']} training images ILO-inverted at a mean PSNR of "
            f"{inverted['psnr_mean']:.2f} dB (minimum {inverted['psnr_min']:.2f} dB)."
        )
    if len(paired):
        notes["paired"] = report.describe_paired(paired)
    report.write_markdown(table, figures, notes, args.markdown)
    log.info("wrote %s with %d figures", args.markdown, len(figures))


def check_files(parser: argparse.ArgumentParser, args: argparse.Namespace, params: Params) -> None:
    """One file per cell and per task, the posterior exactly when sgilo is evaluated, the prior's files with --score:
    anything else stops with the flag to fix."""
    cells = sum(len(t.levels) for t in params.evaluate.tasks) * len(params.evaluate.methods)
    tasks = len(params.evaluate.tasks)
    for flag, files, count, what in (
        ("--records", args.records, cells, "cells of evaluate.tasks × evaluate.methods"),
        ("--images", args.images, cells, "cells of evaluate.tasks × evaluate.methods"),
        ("--curves", args.curves, tasks, "tasks of evaluate.tasks"),
        ("--curve-data", args.curve_data, tasks, "tasks of evaluate.tasks"),
        ("--theory-figures", args.theory_figures, len(args.theory), "files given to --theory"),
    ):
        if len(files) != count:
            parser.error(f"{flag}: {len(files)} file(s) for the {count} {what} of {args.params}")
    if ("sgilo" in params.evaluate.methods) != (args.posterior is not None):
        parser.error("--posterior: give it exactly when sgilo is among evaluate.methods")
    if args.score is not None and None in (args.generator, args.data, args.prior_samples, args.prior):
        parser.error("--score needs --generator, --data, --prior-samples and --prior")


def plot_data_paths(params: Params, args: argparse.Namespace) -> dict[str, Path]:
    """Where the curves' and speed figure's data go, by draw_figures' keys."""
    paths = {f"curves_{t.task}": path for t, path in zip(params.evaluate.tasks, args.curve_data)}
    return paths | {"speed": args.speed_data}


def draw_figures(
    params: Params, table: pd.DataFrame, images: dict[report.Cell, Path], args: argparse.Namespace
) -> tuple[dict[str, Path], dict[str, str], dict[str, pd.DataFrame]]:
    """Every figure, where `args` says; `images`: each cell's kept images. Returns {key: path}, {key: a sentence
    computed from the numbers} and, for the curves and speed figures, {key: the frame the figure was drawn from}."""
    paths = {f"curves_{t.task}": path for t, path in zip(params.evaluate.tasks, args.curves)}
    notes = {}
    data = {f"curves_{t.task}": report.curve_data(table, t.task) for t in params.evaluate.tasks}
    for t in params.evaluate.tasks:
        report.plot_curves(data[f"curves_{t.task}"], paths[f"curves_{t.task}"])
        notes[f"curves_{t.task}"] = report.describe_curves(table, t.task)
    # The image figures show one cell level: the first task's hardest, where the methods differ most.
    first = params.evaluate.tasks[0]
    level = float(hardest_level(first.task, first.levels))
    shown = report.load_figure_data(
        {method: images[(first.task, level, method)] for method in params.evaluate.methods}, first.task, level
    )
    paths["reconstructions"] = args.reconstructions
    report.plot_reconstructions(shown, paths["reconstructions"])
    notes["reconstructions"] = report.describe_reconstructions(shown)
    if "sgilo" in params.evaluate.methods:
        paths["posterior"] = args.posterior
        report.plot_posterior(shown, paths["posterior"])
        notes["posterior"] = report.describe_posterior(shown)
    else:
        log.info("posterior figure skipped: sgilo is not among evaluate.methods")
    paths["speed"], data["speed"] = args.speed, report.speed_data(table)
    report.plot_speed(data["speed"], paths["speed"])
    notes["speed"] = report.describe_speed(table)
    return paths, notes, data


FIGURE_SAMPLES = 16  # prior samples drawn for the figure alone (no FID)


def prior_section(params: Params, args: argparse.Namespace) -> tuple[Path, str]:
    """Unconditional samples of the latent prior, decoded, and their FID when the Inception weights are present."""
    device = pick_device(params.report.device, "report.device")
    prior = LatentPrior.load(args.score, device)
    generator = load_generator(args.generator).to(device)
    # Sampling is the slow part: without the Inception weights there is no FID to feed, so draw only the grid.
    fid_note = "" if params.report.fid_samples >= 2 else "FID not computed: report.fid_samples < 2"
    if not fid_note:
        try:
            require_fid_weights()
        except MissingWeightsError as exc:
            fid_note = f"FID missing: {exc}"
            log.warning("%s", fid_note)
    with_fid = not fid_note
    count = params.report.fid_samples if with_fid else FIGURE_SAMPLES
    latents = sample_latents(prior, count, params.seed, params.score.sample_steps, device)
    images = torch.cat([decode_latents(generator, prior, chunk) for chunk in latents.split(64)]).clamp(-1, 1)
    path = args.prior_samples
    shown = images[:64]
    save_image_grid(shown, path, nrow=max(1, int(math.sqrt(len(shown)))))
    result: dict = {"samples": count, "fid": None, "fid_note": fid_note}
    if with_fid:
        train_ids = sorted(read_index(args.data).query("split == 'train'")["id"].tolist())[:count]
        reference = (load_images(args.data, "train", generator.size, train_ids) + 1) / 2
        result["fid"] = frechet_distance((images + 1) / 2, reference, device)
    save_json(result, args.prior)
    if result["fid"] is not None:
        note = (
            f"{count} samples of the latent score model decoded by the generator (later w+ rows at their training mean); "
            f"FID {result['fid']:.1f} against {len(reference)} training images (small sets bias FID upwards)."
        )
    else:
        note = f"{count} samples of the latent score model decoded by the generator (later w+ rows at their training mean). {result['fid_note']}"
    return path, note


if __name__ == "__main__":
    entry(main)
