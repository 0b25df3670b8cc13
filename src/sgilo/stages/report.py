"""report stage: the evaluate stage's per-image records and kept images into Table 1, figures and report.md.

Reads `<evaluate>/<task>/<level>/<method>.parquet` and `.safetensors` for every cell of evaluate.tasks ×
evaluate.methods, and writes `<out>/table1.csv` (one row per cell: means over test images with report.confidence
Student-t intervals; `table1.html`, the same as people read it, for Snakemake's report), `<out>/metrics.json`
(Table 1's means, task -> level -> method, for `dvc metrics`), `<out>/paired.csv` (SGILO − each other method, image by
image, with intervals),
`<out>/figures/curves_<task>.png`, `reconstructions.png` and `posterior.png` (at the first
task's hardest level; the posterior only when sgilo is evaluated), `speed.png`, the data the curves and speed figures
are drawn from as `<out>/plots/curves_<task>.csv` and `<out>/plots/speed.csv` (for `dvc plots`), and `<out>/report.md`.
With --score and --generator it also decodes report.fid_samples unconditional samples of the latent prior
(`prior_samples.png`) and, when pytorch-fid's Inception weights are on disk, their FID against as many training
images (`<out>/prior.json`; without the weights FID is reported missing, with the reason). With --theory, each theory
rule's figure (the PNG beside its JSON) goes into report.md under the verdict line its JSON holds (`note`).
"""

from __future__ import annotations

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


def main(argv: Sequence[str] | None = None) -> None:
    parser = stage_parser(__doc__)
    parser.add_argument(
        "--evaluate", required=True, type=Path, help="the evaluate stage's folder, e.g. results/evaluate"
    )
    parser.add_argument("--out", required=True, type=Path, help="output folder, e.g. results")
    parser.add_argument("--score", type=Path, help="the score stage's model.pt: adds the prior's samples and FID")
    parser.add_argument("--generator", type=Path, help="generator checkpoint (with --score)")
    parser.add_argument("--data", type=Path, help="dataset folder: the FID's reference images (with --score)")
    parser.add_argument(
        "--invert-summary", type=Path, help="the invert stage's summary.json: how well the prior's training latents fit"
    )
    parser.add_argument(
        "--theory",
        type=Path,
        nargs="*",
        default=[],
        help="theory rules' results (results/theory/<name>.json, the figure beside it as <name>.png)",
    )
    args, params = start(parser, argv)
    if args.score is not None and (args.generator is None or args.data is None):
        parser.error("--score needs --generator and --data")
    set_threads(args.threads or params.report.threads)
    tasks = [(task_levels.task, task_levels.levels) for task_levels in params.evaluate.tasks]
    records = report.load_records(args.evaluate, report.grid_cells(tasks, params.evaluate.methods))
    table = report.summarize(records, params.report.confidence)
    # Stand-in weights (sgilo.smoke) are named on every table and figure made with them.
    standin = load_generator(args.generator).standin if args.generator is not None else ""
    report.write_table(table, args.out / "table1.csv", standin)
    report.write_html_table(table, args.out / "table1.html", standin)
    save_json(report.metrics_summary(table), args.out / "metrics.json")
    log.info("table1.csv: %d cells from %d records", len(table), len(records))
    paired = report.paired_differences(records, "sgilo", "mse", params.report.confidence)
    report.write_table(paired, args.out / "paired.csv", standin)
    figures, notes, plot_data = draw_figures(params, table, args.evaluate, args.out / "figures")
    for name, frame in plot_data.items():
        report.write_table(frame, args.out / "plots" / f"{name}.csv", standin)
    if args.score is not None:
        figures["prior_samples"], notes["prior_samples"] = prior_section(params, args, args.out)
    for path in figures.values():
        caption_png(path, standin)
    notes["standin"] = standin
    for path in args.theory:
        key = f"theory_{path.stem}"
        figures[key], notes[key] = path.with_suffix(".png"), json.loads(path.read_text())["note"]
    figures = {key: os.path.relpath(path, args.out) for key, path in figures.items()}  # links relative to report.md
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
    report.write_markdown(table, figures, notes, args.out / "report.md")
    log.info("wrote %s with %d figures", args.out / "report.md", len(figures))


def draw_figures(
    params: Params, table: pd.DataFrame, evaluate: Path, folder: Path
) -> tuple[dict[str, Path], dict[str, str], dict[str, pd.DataFrame]]:
    """Every figure in `folder`; returns {key: path}, {key: a sentence computed from the numbers} and, for the curves
    and speed figures, {key: the frame the figure was drawn from}."""
    paths = {f"curves_{t.task}": folder / f"curves_{t.task}.png" for t in params.evaluate.tasks}
    notes = {}
    data = {f"curves_{t.task}": report.curve_data(table, t.task) for t in params.evaluate.tasks}
    for t in params.evaluate.tasks:
        report.plot_curves(data[f"curves_{t.task}"], paths[f"curves_{t.task}"])
        notes[f"curves_{t.task}"] = report.describe_curves(table, t.task)
    # The image figures show one cell level: the first task's hardest, where the methods differ most.
    first = params.evaluate.tasks[0]
    images = report.load_figure_data(
        evaluate, first.task, hardest_level(first.task, first.levels), params.evaluate.methods
    )
    paths["reconstructions"] = folder / "reconstructions.png"
    report.plot_reconstructions(images, paths["reconstructions"])
    notes["reconstructions"] = report.describe_reconstructions(images)
    if "sgilo" in params.evaluate.methods:
        paths["posterior"] = folder / "posterior.png"
        report.plot_posterior(images, paths["posterior"])
        notes["posterior"] = report.describe_posterior(images)
    else:
        log.info("posterior.png skipped: sgilo is not among evaluate.methods")
    paths["speed"], data["speed"] = folder / "speed.png", report.speed_data(table)
    report.plot_speed(data["speed"], paths["speed"])
    notes["speed"] = report.describe_speed(table)
    return paths, notes, data


FIGURE_SAMPLES = 16  # prior samples drawn for the figure alone (no FID)


def prior_section(params: Params, args, out: Path) -> tuple[Path, str]:
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
    path = out / "figures" / "prior_samples.png"
    shown = images[:64]
    save_image_grid(shown, path, nrow=max(1, int(math.sqrt(len(shown)))))
    result: dict = {"samples": count, "fid": None, "fid_note": fid_note}
    if with_fid:
        train_ids = sorted(read_index(args.data).query("split == 'train'")["id"].tolist())[:count]
        reference = (load_images(args.data, "train", generator.size, train_ids) + 1) / 2
        result["fid"] = frechet_distance((images + 1) / 2, reference, device)
    save_json(result, out / "prior.json")
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
