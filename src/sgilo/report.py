"""Aggregating the evaluate stage's records into Table 1, its figures and a markdown report.

The evaluate stage writes, per cell (task, level, method), a parquet file (one row per test image: metrics, seconds,
steps, tuned hyper-parameters) and a safetensors file (a few images kept for figures); the caller names both. Here those become a table of means with Student-t intervals over test images, metric-against-level
curves, image grids, an accuracy-against-time plot and `report.md`, whose sentences are computed from the numbers.
The curves and the accuracy-against-time plot are drawn from tidy frames (`curve_data`, `speed_data`) that the report
stage also writes as CSV, and Table 1's means are also given as nested JSON (`metrics_summary`), for DVC's
`plots diff` and `metrics diff`.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.stats
import torch
from matplotlib.figure import Figure

from sgilo.config import TASK_LEVELS, hardest_level
from sgilo.data import DataError
from sgilo.figures import new_figure, save_figure
from sgilo.io import (
    CheckpointError,
    atomic_open,
    load_safetensors,
)
from sgilo.method_table import METHODS

METRICS = ("mse", "psnr", "ssim", "lpips")
RECORD_COLUMNS = (
    "image_id",
    "seed",
    "task",
    "level",
    "method",
    *METRICS,
    "lpips_note",
    "seconds",
    "steps",
    "chains",
    "measurement_loss",
    "hyper",
    "failure",
)
# n: images with metrics; failed: images whose optimisation went NaN or Inf (kept as records, left out of the means)
TABLE_COLUMNS = (
    "task",
    "level",
    "method",
    "n",
    "failed",
    *(f"{m}_{part}" for m in METRICS for part in ("mean", "ci_low", "ci_high")),
    "seconds_per_image",
    "steps",
    "lpips_note",
)
# Methods outside sgilo.method_table (whose colours are fixed) take these in turn.
_OTHER_COLORS = ("tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:orange")
_RERUN = "run the evaluate stage to write it"

Cell = tuple[str, float, str]


# ------------------------------------------------------------------------------------------------- records
def grid_cells(tasks: Iterable[tuple[str, Sequence[float]]], methods: Sequence[str]) -> list[Cell]:
    """Every (task, level, method) in table order: task by task, level by level, methods in the given order."""
    return [(task, float(level), method) for task, levels in tasks for level in levels for method in methods]


def load_records(files: Mapping[Cell, Path]) -> pd.DataFrame:
    """The per-image records of each cell's parquet file, concatenated in the mapping's order; each file is checked
    against its cell."""
    frames = [_read_cell(path, cell) for cell, path in files.items()]
    if not frames:
        raise DataError("no evaluation cells to report on; give evaluate.tasks and evaluate.methods")
    return pd.concat(frames, ignore_index=True)


def _read_cell(path: Path, cell: Cell) -> pd.DataFrame:
    if not path.is_file():
        raise DataError(f"{path}: evaluation records not found; {_RERUN}")
    try:
        frame = pd.read_parquet(path)
    except (OSError, ValueError) as exc:
        raise DataError(
            f"{path}: unreadable parquet file ({type(exc).__name__}: {exc}); delete it and {_RERUN}"
        ) from exc
    missing = [c for c in RECORD_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)}; delete it and {_RERUN}")
    if frame.empty:
        raise DataError(f"{path}: holds no records; check evaluate.images and {_RERUN}")
    task, level, method = cell
    # A file copied or renamed into the wrong folder, or given for another cell, would silently land in another row.
    if not ((frame["task"] == task) & np.isclose(frame["level"], level) & (frame["method"] == method)).all():
        raise DataError(f"{path}: records are not all for task {task!r}, level {level:g}, method {method!r}; {_RERUN}")
    return frame


# ------------------------------------------------------------------------------------------------ summary
def summarize(records: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """One row per (task, level, method) in order of first appearance: means over images with Student-t intervals."""
    rows = [
        _summarize_cell(key, group, confidence)
        for key, group in records.groupby(["task", "level", "method"], sort=False)
    ]
    table = pd.DataFrame(rows, columns=list(TABLE_COLUMNS))
    table.attrs["confidence"] = confidence  # for figure captions; not written to the CSV
    return table


def _summarize_cell(key: tuple, group: pd.DataFrame, confidence: float) -> dict:
    task, level, method = key
    failed = group["failure"].fillna("") != ""
    row = {
        "task": task,
        "level": float(level),
        "method": method,
        "n": int((~failed).sum()),
        "failed": int(failed.sum()),
    }
    for metric in METRICS:
        mean, low, high = mean_interval(group.loc[~failed, metric].to_numpy(dtype=float), confidence)
        row.update({f"{metric}_mean": mean, f"{metric}_ci_low": low, f"{metric}_ci_high": high})
    notes = [note for note in group["lpips_note"].fillna("") if note]
    row.update(
        seconds_per_image=float(group["seconds"].mean()),
        steps=float(group["steps"].mean()),
        lpips_note=notes[0] if notes else "",
    )
    return row


def mean_interval(values: np.ndarray, confidence: float) -> tuple[float, float, float]:
    """(mean, low, high): the Student-t interval of the mean of the non-NaN values; NaN bounds below two values."""
    values = values[~np.isnan(values)]
    if len(values) == 0:
        return math.nan, math.nan, math.nan
    mean = float(values.mean())
    if len(values) < 2:
        return mean, math.nan, math.nan
    half = scipy.stats.t.ppf(0.5 + confidence / 2, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values))
    return mean, mean - half, mean + half


PAIRED_COLUMNS = ("task", "level", "method", "other", "metric", "n", "difference", "ci_low", "ci_high", "wins")


def paired_differences(
    records: pd.DataFrame, method: str = "sgilo", metric: str = "mse", confidence: float = 0.95
) -> pd.DataFrame:
    """`method` − every other method, image by image, per (task, level): every method reconstructs the same
    measurements, so paired differences resolve what the per-method intervals of Table 1 cannot.

    `wins` counts images where `method` has the lower value (for MSE and LPIPS; the higher for PSNR and SSIM).
    Empty when `method` is not evaluated."""
    rows = []
    lower_is_better = metric in ("mse", "lpips")
    for (task, level), group in records.groupby(["task", "level"], sort=False):
        values = group.pivot_table(index="image_id", columns="method", values=metric, sort=False)
        if method not in values:
            continue
        for other in [m for m in dict.fromkeys(group["method"]) if m != method]:
            both = values[[method, other]].dropna()
            difference = (both[method] - both[other]).to_numpy(dtype=float)
            mean, low, high = mean_interval(difference, confidence)
            wins = int((difference < 0).sum() if lower_is_better else (difference > 0).sum())
            rows.append(
                {
                    "task": task,
                    "level": float(level),
                    "method": method,
                    "other": other,
                    "metric": metric,
                    "n": len(difference),
                    "difference": mean,
                    "ci_low": low,
                    "ci_high": high,
                    "wins": wins,
                }
            )
    return pd.DataFrame(rows, columns=list(PAIRED_COLUMNS))


def describe_paired(paired: pd.DataFrame) -> str:
    """One sentence per task at its hardest level: is the method's advantage over each other method resolved?"""
    sentences = []
    for task, rows in paired.groupby("task", sort=False):
        hardest = _at_hardest(rows, task)
        parts = []
        for row in hardest.itertuples():
            below, above = ("better", "worse") if row.metric in ("mse", "lpips") else ("worse", "better")
            verdict = (
                (below if row.ci_high < 0 else above if row.ci_low > 0 else "not resolved")
                if not math.isnan(row.ci_low)
                else "n < 2"
            )
            parts.append(
                f"{row.other} {row.difference:+.4g} [{row.ci_low:+.3g}, {row.ci_high:+.3g}], {row.wins}/{row.n} images, {verdict}"
            )
        first = hardest.iloc[0]
        sentences.append(
            f"{task} at {first['level']:g}, {first['method']} − other ({first['metric'].upper()}): "
            + "; ".join(parts)
            + "."
        )
    return " ".join(sentences)


def write_table(table: pd.DataFrame, path: Path, standin: str = "") -> None:
    """The table as CSV; with stand-in weights (`standin`, sgilo.smoke) a last column `weights` says so on every row."""
    if standin:
        table = table.assign(weights=standin)
    # pandas writes floats as their shortest round-tripping repr: reading the CSV back gives the same numbers.
    with atomic_open(path) as handle:
        table.to_csv(handle, index=False)


# ------------------------------------------------------------------------------------------ figure images
@dataclass(frozen=True)
class FigureData:
    """The kept images of one (task, level) for every method, aligned on the image ids all methods share."""

    task: str
    level: float
    ids: list[int]
    truth: torch.Tensor  # (n, 3, H, W) in [0, 1]
    measurement: torch.Tensor  # the naive reconstruction from y
    methods: dict[str, dict[str, torch.Tensor]]  # method -> reconstruction (+ samples, std for samplers)


def load_figure_data(files: Mapping[str, Path], task: str, level: float) -> FigureData:
    """The kept images of every method at (task, level), from `files` (method -> its cell's safetensors file, in the
    figure's order), on the image ids all of them kept, in the first's order."""
    methods = list(files)
    loaded = {method: _read_images(path, (task, float(level), method)) for method, path in files.items()}
    first = loaded[methods[0]]
    # Methods may keep different images (a cell rerun with another figure_images); a row must show one image throughout.
    shared = set.intersection(*(set(t["ids"].tolist()) for t in loaded.values()))
    ids = [i for i in first["ids"].tolist() if i in shared]
    picked = {method: _pick(tensors, ids) for method, tensors in loaded.items()}
    truth, measurement = picked[methods[0]]["truth"], picked[methods[0]]["measurement"]
    per_method = {
        m: {k: v for k, v in t.items() if k not in ("ids", "truth", "measurement")} for m, t in picked.items()
    }
    return FigureData(task, float(level), ids, truth, measurement, per_method)


def _pick(tensors: dict[str, torch.Tensor], ids: list[int]) -> dict[str, torch.Tensor]:
    order = tensors["ids"].tolist()
    rows = torch.tensor([order.index(i) for i in ids], dtype=torch.long)
    return {key: value[rows] for key, value in tensors.items()}


def _read_images(path: Path, cell: Cell) -> dict[str, torch.Tensor]:
    task, level, method = cell
    if not path.is_file():
        raise DataError(f"{path}: evaluation images not found; {_RERUN}")
    try:
        tensors, metadata = load_safetensors(path)
    except CheckpointError as exc:
        raise DataError(str(exc)) from exc
    # As for the records: a file given for another cell would show another cell's images.
    expected = {"task": task, "level": f"{level:g}", "method": method}
    if any(metadata.get(key, value) != value for key, value in expected.items()):
        raise DataError(
            f"{path}: images are not for task {task!r}, level {level:g}, method {method!r} "
            f"(its metadata: {metadata}); {_RERUN}"
        )
    needed = (
        "ids",
        "truth",
        "measurement",
        "reconstruction",
        *(("samples", "std") if method in METHODS and METHODS[method].uses_prior else ()),
    )
    missing = [key for key in needed if key not in tensors]
    if missing:
        raise DataError(f"{path}: missing tensor(s) {', '.join(missing)}; delete it and {_RERUN}")
    return tensors


# ------------------------------------------------------------------------------------------------ figures
def method_color(method: str, methods: Sequence[str] = ()) -> str:
    if method in METHODS:
        return METHODS[method].color
    others = [m for m in methods if m not in METHODS]
    return _OTHER_COLORS[(others.index(method) if method in others else 0) % len(_OTHER_COLORS)]


def level_label(task: str) -> str:
    return TASK_LEVELS[task].label if task in TASK_LEVELS else "level"


def _at_hardest(rows: pd.DataFrame, task: str) -> pd.DataFrame:
    """The rows of `task` at its hardest level (the direction depends on the task: config.TASK_LEVELS)."""
    return rows[rows["level"] == hardest_level(task, rows["level"])]


CURVE_METRICS = ("mse", "ssim", "lpips")  # the curves figure's panels; LPIPS only where it was measured
CURVE_COLUMNS = ("task", "level", "method", "metric", "n", "mean", "ci_low", "ci_high")
SPEED_COLUMNS = ("task", "level", "method", "seconds_per_image", "mse_mean", "mse_ci_low", "mse_ci_high")


def curve_data(table: pd.DataFrame, task: str) -> pd.DataFrame:
    """What `task`'s curves figure draws, one row per (metric, method, level), methods in table order.

    Tidy (one value per row) so that one file holds every panel and every line for `dvc plots`."""
    rows = table[table["task"] == task]
    metrics = [m for m in CURVE_METRICS if m != "lpips" or rows["lpips_mean"].notna().any()]
    methods = list(dict.fromkeys(rows["method"]))
    rows = rows.assign(order=rows["method"].map(methods.index)).sort_values(["order", "level"], kind="stable")
    panels = [
        rows.assign(metric=m, mean=rows[f"{m}_mean"], ci_low=rows[f"{m}_ci_low"], ci_high=rows[f"{m}_ci_high"])
        for m in metrics
    ]
    curves = pd.concat(panels, ignore_index=True)[list(CURVE_COLUMNS)]
    curves.attrs["confidence"] = table.attrs.get("confidence")
    return curves


def speed_data(table: pd.DataFrame) -> pd.DataFrame:
    """What the accuracy-against-time figure draws: one row per cell."""
    speed = table[list(SPEED_COLUMNS)].reset_index(drop=True)
    speed.attrs["confidence"] = table.attrs.get("confidence")
    return speed


def metrics_summary(table: pd.DataFrame) -> dict:
    """Table 1's means as nested JSON for `dvc metrics show/diff`: task -> level -> method -> {n, failed, mse, psnr,
    ssim, lpips, seconds_per_image}. A metric without a value (LPIPS without its weights) is left out."""
    summary: dict = {}
    for row in table.to_dict("records"):
        values = {"n": int(row["n"]), "failed": int(row["failed"])}
        values |= {m: float(row[f"{m}_mean"]) for m in METRICS if not math.isnan(row[f"{m}_mean"])}
        values["seconds_per_image"] = float(row["seconds_per_image"])
        summary.setdefault(row["task"], {}).setdefault(f"{row['level']:g}", {})[row["method"]] = values
    return summary


def plot_curves(curves: pd.DataFrame, path: Path) -> None:
    """One task's `curve_data`: a panel per metric, the mean against the level, one line per method with its interval
    as a band."""
    task = curves["task"].iloc[0]
    metrics = list(dict.fromkeys(curves["metric"]))
    methods = list(dict.fromkeys(curves["method"]))
    fig = new_figure((4.0 * len(metrics), 3.4))
    for index, metric in enumerate(metrics):
        ax = fig.add_subplot(1, len(metrics), index + 1)
        panel = curves[curves["metric"] == metric]
        for method in methods:
            line = panel[panel["method"] == method].sort_values("level")
            color = method_color(method, methods)
            ax.plot(line["level"], line["mean"], marker="o", color=color, label=method)
            ax.fill_between(line["level"], line["ci_low"], line["ci_high"], color=color, alpha=0.2, linewidth=0)
        ax.set_xscale("log")
        levels = sorted(set(panel["level"]))
        ax.set_xticks(levels, [f"{level:g}" for level in levels], minor=False)
        ax.set_xticks([], minor=True)
        ax.set_xlabel(level_label(task))
        ax.set_ylabel(metric.upper() + (" (lower is better)" if metric != "ssim" else " (higher is better)"))
        if metric == "mse":
            _log_y(ax, panel["mean"], panel["ci_low"], panel["ci_high"])
    fig.axes[0].legend(fontsize="small")
    fig.suptitle(f"{task}: mean over test images, {_interval_words(curves)}")
    save_figure(fig, path)


def plot_speed(speed: pd.DataFrame, path: Path) -> None:
    """`speed_data`: mean MSE against seconds per image, one marker per method and level, with the MSE intervals as
    error bars."""
    fig = new_figure((5.6, 4.2))
    ax = fig.add_subplot(1, 1, 1)
    methods = list(dict.fromkeys(speed["method"]))
    markers = dict(zip(dict.fromkeys(speed["task"]), "osD^vP*"))
    for (task, method), rows in speed.groupby(["task", "method"], sort=False):
        # Error bars may not reach below zero: a Student-t bound <= 0 is drawn to the bottom of the log axis.
        below = (rows["mse_mean"] - rows["mse_ci_low"]).fillna(0).clip(lower=0)
        above = (rows["mse_ci_high"] - rows["mse_mean"]).fillna(0).clip(lower=0)
        ax.errorbar(
            rows["seconds_per_image"],
            rows["mse_mean"],
            yerr=[below, above],
            fmt=markers[task],
            color=method_color(method, methods),
            capsize=2,
            linestyle="none",
            label=f"{method} ({task})",
        )
        for _, row in rows.iterrows():
            ax.annotate(
                f"{row['level']:g}",
                (row["seconds_per_image"], row["mse_mean"]),
                xytext=(4, 3),
                textcoords="offset points",
                fontsize="xx-small",
                color=method_color(method, methods),
            )
    ax.set_xscale("log")
    ax.set_xlabel("seconds per image")
    ax.set_ylabel("MSE")
    _log_y(ax, speed["mse_mean"], speed["mse_ci_low"], speed["mse_ci_high"])
    ax.legend(fontsize="x-small", ncol=2)
    ax.set_title(f"accuracy against time (labels: level; bars: {_interval_words(speed)})", fontsize="medium")
    save_figure(fig, path)


def plot_reconstructions(data: FigureData, path: Path) -> None:
    """Rows: images; columns: measurement, each method's reconstruction (with its MSE), truth."""
    names = list(data.methods)
    columns = [
        ("measurement", data.measurement),
        *((m, data.methods[m]["reconstruction"]) for m in names),
        ("truth", data.truth),
    ]
    fig = new_figure((1.7 * len(columns), 1.8 * max(1, len(data.ids)) + 0.6))
    for row, image_id in enumerate(data.ids):
        for col, (name, images) in enumerate(columns):
            ax = _image_axes(fig, len(data.ids), len(columns), row, col, images[row])
            if row == 0:
                ax.set_title(name, fontsize="small", color=method_color(name, names) if name in names else "black")
            if name in names:
                ax.set_xlabel(f"MSE {float(((images[row] - data.truth[row]) ** 2).mean()):.3g}", fontsize="x-small")
            if col == 0:
                ax.set_ylabel(f"image {image_id}", fontsize="small")
    _empty_note(fig, data)
    fig.suptitle(f"{data.task}, {level_label(data.task)} = {data.level:g}")
    save_figure(fig, path)


def plot_posterior(data: FigureData, path: Path, method: str = "sgilo", max_samples: int = 4) -> None:
    """Per image: measurement, up to `max_samples` posterior samples, their mean, the per-pixel std, truth."""
    tensors = data.methods[method]
    samples = tensors["samples"][:, :max_samples]
    std_maps = tensors["std"].mean(1)  # averaged over colour channels: one uncertainty value per pixel
    count = samples.shape[1]
    columns = 4 + count
    fig = new_figure((1.7 * columns + 0.4, 1.8 * max(1, len(data.ids)) + 0.6))
    std_max = float(std_maps.max()) if std_maps.numel() else 1.0
    for row, image_id in enumerate(data.ids):
        panels = [
            ("measurement", data.measurement[row]),
            *((f"sample {k + 1}", samples[row, k]) for k in range(count)),
            ("mean", tensors["samples"][row].mean(0)),
        ]
        for col, (name, image) in enumerate(panels):
            ax = _image_axes(fig, len(data.ids), columns, row, col, image)
            ax.set_title(name if row == 0 else "", fontsize="small")
            if col == 0:
                ax.set_ylabel(f"image {image_id}", fontsize="small")
        ax = fig.add_subplot(len(data.ids), columns, row * columns + columns - 1)
        shown = ax.imshow(std_maps[row].numpy(), cmap="magma", vmin=0, vmax=std_max or 1.0)
        _bare(ax, "std" if row == 0 else "")
        fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04)
        ax = _image_axes(fig, len(data.ids), columns, row, columns - 1, data.truth[row])
        ax.set_title("truth" if row == 0 else "", fontsize="small")
    _empty_note(fig, data)
    fig.suptitle(
        f"{method} posterior: {data.task}, {level_label(data.task)} = {data.level:g}, "
        f"{tensors['samples'].shape[1]} chains"
    )
    save_figure(fig, path)


def _image_axes(fig: Figure, rows: int, columns: int, row: int, col: int, image: torch.Tensor):
    ax = fig.add_subplot(rows, columns, row * columns + col + 1)
    ax.imshow(image.float().clamp(0, 1).permute(1, 2, 0).numpy())
    _bare(ax, "")
    return ax


def _bare(ax, title: str) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize="small")


def _empty_note(fig: Figure, data: FigureData) -> None:
    if not data.ids:
        fig.text(0.5, 0.5, "no images were kept for figures (evaluate.figure_images = 0?)", ha="center", va="center")


def _log_y(ax, means: pd.Series, lows: pd.Series, highs: pd.Series) -> None:
    """Log y axis framed on the positive values, so a non-positive interval bound cannot stretch it to 1e-300."""
    values = pd.concat([means, lows, highs]).to_numpy(dtype=float)
    values = values[np.isfinite(values) & (values > 0)]
    ax.set_yscale("log", nonpositive="clip")
    if len(values):
        ax.set_ylim(values.min() / 1.5, values.max() * 1.5)


def _interval_words(table: pd.DataFrame) -> str:
    confidence = table.attrs.get("confidence")
    return f"{confidence:.0%} Student-t intervals" if confidence else "Student-t intervals"


# -------------------------------------------------------------------------------------------------- words
def describe_curves(table: pd.DataFrame, task: str) -> str:
    """At the task's hardest level: the method with the lowest mean MSE, and whether its interval clears the runner-up's."""
    rows = table[table["task"] == task]
    level = hardest_level(task, rows["level"])
    ranked = rows[rows["level"] == level].dropna(subset=["mse_mean"]).sort_values("mse_mean")
    where = f"At the hardest level ({level_label(task)} = {level:g})"
    if ranked.empty:
        return f"{where} no method has an MSE."
    best = ranked.iloc[0]
    sentence = f"{where}, {best['method']} has the lowest mean MSE, {_with_interval(best, 'mse')}"
    if len(ranked) == 1:
        return sentence + "; it is the only method evaluated."
    second = ranked.iloc[1]
    if any(math.isnan(v) for v in (best["mse_ci_high"], second["mse_ci_low"])):
        verdict = "with too few images for intervals the ranking is not resolved"
    elif best["mse_ci_high"] < second["mse_ci_low"]:
        verdict = "the intervals do not overlap"
    else:
        verdict = "the intervals overlap, so the difference is not resolved with these images"
    return sentence + f"; runner-up {second['method']}, {_with_interval(second, 'mse')}: {verdict}."


def describe_speed(table: pd.DataFrame) -> str:
    """The fastest and slowest methods, and the time the most accurate one at the hardest level costs there."""
    speed = table.groupby("method", sort=False)["seconds_per_image"].mean().sort_values()
    sentence = (
        f"Averaged over cells, {speed.index[0]} is fastest ({speed.iloc[0]:.3g} s/image) and {speed.index[-1]} "
        f"slowest ({speed.iloc[-1]:.3g} s/image)"
    )
    task = table["task"].iloc[0]
    hardest = _at_hardest(table[table["task"] == task], task).dropna(subset=["mse_mean"])
    if hardest.empty or not hardest["seconds_per_image"].min() > 0:
        return sentence + "."
    best = hardest.sort_values("mse_mean").iloc[0]
    ratio = best["seconds_per_image"] / hardest["seconds_per_image"].min()
    return (
        sentence + f". At {best['task']} {best['level']:g} the lowest-MSE method, {best['method']}, takes "
        f"{ratio:.3g}× the time of the fastest method there."
    )


def describe_reconstructions(data: FigureData) -> str:
    """Each method's MSE averaged over the images shown, lowest first."""
    if not data.ids:
        return "No images were kept for figures."
    errors = {m: float(((t["reconstruction"] - data.truth) ** 2).mean()) for m, t in data.methods.items()}
    ranked = sorted(errors.items(), key=lambda item: item[1])
    listing = ", ".join(f"{m} {e:.3g}" for m, e in ranked)
    return (
        f"On the {len(data.ids)} image(s) shown ({data.task}, {level_label(data.task)} = {data.level:g}), "
        f"mean MSE: {listing}; lowest: {ranked[0][0]}."
    )


def describe_posterior(data: FigureData, method: str = "sgilo") -> str:
    """How large the posterior spread is and whether it marks where the posterior mean is wrong."""
    if not data.ids:
        return "No images were kept for figures."
    tensors = data.methods[method]
    spread = tensors["std"].mean(1).flatten().double()
    error = (tensors["samples"].mean(1) - data.truth).abs().mean(1).flatten().double()
    correlation = float(torch.corrcoef(torch.stack([spread, error]))[0, 1])
    verdict = (
        "the std map says nothing about the error"
        if math.isnan(correlation)
        else "larger spread where the mean is further off"
        if correlation > 0.1
        else "the spread does not track the error"
    )
    return (
        f"Mean per-pixel posterior std {float(spread.mean()):.3g} over {tensors['samples'].shape[1]} chains; "
        f"its pixel-wise correlation with |mean − truth| is r = {correlation:.2f} ({verdict})."
    )


def _with_interval(row: pd.Series, metric: str) -> str:
    mean, low, high = row[f"{metric}_mean"], row[f"{metric}_ci_low"], row[f"{metric}_ci_high"]
    return f"{mean:.3g}" + ("" if math.isnan(low) else f" [{low:.3g}, {high:.3g}]")


# ------------------------------------------------------------------------------------------------ markdown
FIGURE_TITLES = {
    "reconstructions": "Reconstructions",
    "posterior": "Posterior samples and uncertainty",
    "speed": "Accuracy against time",
    "prior_samples": "Unconditional samples of the latent prior",
    "theory_gnc": "Theory: the GNC flow on a smoothed 1-D mixture (Kobler & Pock, Fig. 1)",
    "theory_langevin": "Theory: Langevin inverting random expansive ReLU generators (SGILO, Theorem 3.1)",
    "theory_igo": "Theory: IGO's non-affine forward iterates and the α of its loss",
}


def shown_table(table: pd.DataFrame) -> pd.DataFrame:
    """Table 1 as people read it: one text cell per metric, "mean [low, high]" at 3 significant digits."""
    rows = []
    for _, row in table.iterrows():
        n = str(row["n"]) + (f" ({row['failed']} failed)" if row["failed"] else "")
        rows.append(
            [
                row["task"],
                f"{row['level']:g}",
                row["method"],
                n,
                *(_cell(row, m) for m in METRICS),
                f"{row['seconds_per_image']:.3g}",
                f"{row['steps']:g}",
            ]
        )
    return pd.DataFrame(
        rows, columns=["task", "level", "method", "n", *(m.upper() for m in METRICS), "s/image", "steps"]
    )


def markdown_table(table: pd.DataFrame) -> str:
    shown = shown_table(table)
    lines = ["| " + " | ".join(shown.columns) + " |", "|" + "---|" * len(shown.columns)]
    lines += ["| " + " | ".join(cells) + " |" for cells in shown.itertuples(index=False)]
    return "\n".join(lines)


def write_html_table(table: pd.DataFrame, path: Path, standin: str = "") -> None:
    """`table1.html`: the shown table as a page of its own, for Snakemake's report (which offers a CSV only as a
    download)."""
    caption = (
        f'<p style="color:#b00;font-weight:bold">{html.escape(standin)}: every number comes from random weights.</p>'
        if standin
        else ""
    )
    body = shown_table(table).to_html(index=False, border=0, escape=True)
    with atomic_open(path) as handle:
        handle.write(
            '<!DOCTYPE html><html><head><meta charset="utf-8"><title>Table 1</title><style>'
            "body{font-family:sans-serif;font-size:14px} table{border-collapse:collapse}"
            "th,td{padding:4px 10px;border-bottom:1px solid #ddd;text-align:right} th{background:#f4f4f4}"
            f"</style></head><body>{caption}{body}</body></html>\n"
        )


def _cell(row: pd.Series, metric: str) -> str:
    return "n/a" if math.isnan(row[f"{metric}_mean"]) else _with_interval(row, metric)


def write_markdown(table: pd.DataFrame, figures: dict[str, str], notes: dict[str, str], path: Path) -> None:
    """`report.md`: the table, then each figure (path relative to `path`) with the line `notes[key]` under it.

    `notes["table"]`, when given, goes under the table; LPIPS's reason for being missing is added from the table;
    `notes["standin"]` (stand-in weights) goes first, in bold."""
    parts = ["# Results", ""]
    if notes.get("standin"):
        parts += [f"**{notes['standin']}: every number and figure below comes from random weights.**", ""]
    parts += [markdown_table(table), ""]
    if notes.get("table"):
        parts += [notes["table"], ""]
    if notes.get("paired"):
        parts += ["Paired differences (`paired.csv`): " + notes["paired"], ""]
    for note, rows in table[table["lpips_note"].fillna("") != ""].groupby("lpips_note", sort=False):
        parts += [f"LPIPS n/a for {', '.join(dict.fromkeys(rows['task']))}: {note}", ""]
    for key, figure in figures.items():
        title = FIGURE_TITLES.get(key) or f"Metrics against level: {key.removeprefix('curves_')}"
        parts += [f"## {title}", "", f"![{key}]({figure})", ""]
        if notes.get(key):
            parts += [notes[key], ""]
    with atomic_open(path) as handle:
        handle.write("\n".join(parts))
