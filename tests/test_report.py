"""report stage: Table 1 statistics against scipy, missing inputs, every output of the stage, figures as PNGs."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.stats
import torch
from PIL import Image

from sgilo import report
from sgilo.data import DataError
from sgilo.io import save_safetensors
from sgilo.stages import report as report_stage

from conftest import cell_file, report_argv, run_stage, write_params

TASKS = {"inpaint": (0.05, 0.25), "cs": (0.03, 0.1)}
METHODS = ("csgm", "ilo", "sgilo")
IMAGES, CHAINS, SIZE = 3, 2, 16
LPIPS_NOTE = "LPIPS weights not found at models/lpips/alex.pth"
# Well separated per-method errors, so the report's sentences have a definite answer to check.
MSE_SCALE = {"csgm": 0.08, "ilo": 0.04, "sgilo": 0.01}


def _records(task: str, level: float, method: str, rng: np.random.Generator) -> pd.DataFrame:
    mse = MSE_SCALE[method] / level * 0.05 * (1 + 0.2 * rng.standard_normal(IMAGES))
    lpips = rng.uniform(0.1, 0.5, IMAGES) if task == "inpaint" else np.full(IMAGES, np.nan)
    return pd.DataFrame(
        {
            "image_id": np.arange(IMAGES, dtype="int64"),
            "seed": np.full(IMAGES, 7, dtype="int64"),
            "task": task,
            "level": float(level),
            "method": method,
            "mse": mse,
            "psnr": -10 * np.log10(mse),
            "ssim": rng.uniform(0.3, 0.9, IMAGES),
            "lpips": lpips,
            "lpips_note": "" if task == "inpaint" else LPIPS_NOTE,
            "seconds": rng.uniform(0.5, 2.0, IMAGES) * (10 if method == "sgilo" else 1),
            "steps": np.full(IMAGES, 60, dtype="int64"),
            "chains": np.full(IMAGES, CHAINS if method == "sgilo" else 1, dtype="int64"),
            "measurement_loss": rng.uniform(0, 1, IMAGES),
            "hyper": json.dumps({"weight": 0.1}),
            "failure": "",
        }
    )


def _images(method: str, generator: torch.Generator) -> dict[str, torch.Tensor]:
    ids = torch.arange(IMAGES, dtype=torch.int64)
    if method == "ilo":
        ids = ids.flip(0)  # another order than the other methods: figures must align images by id
    truth = (ids.float()[:, None, None, None] / IMAGES).expand(IMAGES, 3, SIZE, SIZE).contiguous()
    tensors = {
        "ids": ids,
        "truth": truth,
        "measurement": truth * 0.5,
        "reconstruction": (truth + 0.05 * torch.rand(truth.shape, generator=generator)).clamp(0, 1),
    }
    if method == "sgilo":
        tensors["samples"] = (
            truth[:, None] + 0.1 * torch.rand((IMAGES, CHAINS, 3, SIZE, SIZE), generator=generator)
        ).clamp(0, 1)
        tensors["std"] = tensors["samples"].std(1)
    return tensors


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """Synthetic evaluate outputs for 2 tasks × 2 levels × 3 methods, and a params file naming that grid."""
    root = tmp_path_factory.mktemp("report")
    rng, generator = np.random.default_rng(0), torch.Generator().manual_seed(0)
    for task, levels in TASKS.items():
        for level in levels:
            for method in METHODS:
                path = cell_file(root / "evaluate", task, level, method, ".parquet")
                path.parent.mkdir(parents=True, exist_ok=True)
                _records(task, level, method, rng).to_parquet(path)
                cell = {"task": task, "level": f"{level:g}", "method": method}  # as the evaluate stage writes
                save_safetensors(_images(method, generator), path.with_suffix(".safetensors"), cell)
    _params(root / "params.yaml", METHODS)
    return root


def _params(path: Path, methods: tuple[str, ...]) -> Path:
    evaluate = {
        "tasks": [{"task": t, "levels": list(levels)} for t, levels in TASKS.items()],
        "methods": list(methods),
        "images": IMAGES,
        "tune": {"validation": 1},
    }
    return write_params(path, {"evaluate": evaluate, "report": {"confidence": 0.9, "threads": 1}})


def _cells(methods: tuple[str, ...] = METHODS) -> list[report.Cell]:
    return report.grid_cells(TASKS.items(), methods)


def _files(folder: Path, cells: list[report.Cell], suffix: str = ".parquet") -> dict[report.Cell, Path]:
    return {cell: cell_file(folder, *cell, suffix) for cell in cells}


def test_a_file_given_for_another_cell_is_refused(workspace):
    """The stage pairs the files it is given with the cells in table order: a list in another order is caught."""
    cells = _cells()[:2]
    swapped = dict(zip(cells, reversed(list(_files(workspace / "evaluate", cells).values()))))
    with pytest.raises(DataError, match=r"inpaint/0\.05/ilo\.parquet: records are not all for .*'csgm'"):
        report.load_records(swapped)
    images = {"csgm": cell_file(workspace / "evaluate", "inpaint", 0.05, "ilo", ".safetensors")}
    with pytest.raises(DataError, match=r"images are not for task 'inpaint', level 0\.05, method 'csgm'"):
        report.load_figure_data(images, "inpaint", 0.05)


def test_summary_matches_a_direct_scipy_computation(workspace):
    records = report.load_records(_files(workspace / "evaluate", _cells()))
    table = report.summarize(records, confidence=0.9)
    assert list(table.columns) == list(report.TABLE_COLUMNS)
    assert list(zip(table["task"], table["level"], table["method"])) == _cells()
    for _, row in table.iterrows():
        cell = records[
            (records["task"] == row["task"]) & (records["level"] == row["level"]) & (records["method"] == row["method"])
        ]
        assert row["n"] == IMAGES
        for metric in ("mse", "psnr", "ssim"):
            values = cell[metric].to_numpy()
            low, high = scipy.stats.t.interval(0.9, len(values) - 1, loc=values.mean(), scale=scipy.stats.sem(values))
            assert row[f"{metric}_mean"] == pytest.approx(values.mean())
            assert (row[f"{metric}_ci_low"], row[f"{metric}_ci_high"]) == pytest.approx((low, high))
        assert row["seconds_per_image"] == pytest.approx(cell["seconds"].mean())
        assert row["steps"] == 60
        if row["task"] == "cs":  # LPIPS weights absent: NaN throughout, with the reason
            assert all(math.isnan(row[f"lpips_{part}"]) for part in ("mean", "ci_low", "ci_high"))
            assert row["lpips_note"] == LPIPS_NOTE
        else:
            assert row["lpips_ci_low"] < row["lpips_mean"] < row["lpips_ci_high"] and row["lpips_note"] == ""


def test_one_image_gives_a_mean_without_interval():
    one = _records("inpaint", 0.1, "ilo", np.random.default_rng(1)).iloc[:1]
    row = report.summarize(one).iloc[0]
    assert row["n"] == 1 and row["mse_mean"] == pytest.approx(one["mse"].iloc[0])
    assert all(math.isnan(row[f"{metric}_ci_{side}"]) for metric in report.METRICS for side in ("low", "high"))


def test_failed_images_are_counted_and_left_out_of_the_means():
    records = _records("inpaint", 0.1, "ilo", np.random.default_rng(2))
    records.loc[1, ["mse", "psnr", "ssim", "lpips", "measurement_loss"]] = np.nan
    records.loc[1, "failure"] = "non-finite loss at step 3 of the layer-0 phase"
    row = report.summarize(records).iloc[0]
    assert row["n"] == IMAGES - 1 and row["failed"] == 1
    assert row["mse_mean"] == pytest.approx(records["mse"].iloc[[0, 2]].mean())
    assert row["seconds_per_image"] == pytest.approx(records["seconds"].mean())  # the failed image's time was spent too
    assert f"| {IMAGES - 1} (1 failed) |" in report.markdown_table(report.summarize(records))


def test_a_missing_cell_names_its_file_and_the_stage_to_run(workspace):
    with pytest.raises(DataError, match=r"inpaint/0\.5/gnc\.parquet.*evaluate stage"):
        report.load_records(_files(workspace / "evaluate", [("inpaint", 0.05, "ilo"), ("inpaint", 0.5, "gnc")]))


def test_figure_images_are_aligned_on_image_ids(workspace):
    images = {
        cell[2]: path
        for cell, path in _files(workspace / "evaluate", _cells(), ".safetensors").items()
        if cell[:2] == ("inpaint", 0.05)
    }
    data = report.load_figure_data(images, "inpaint", 0.05)
    assert data.ids == list(range(IMAGES))
    for method in METHODS:  # every row of every method is near its own truth image
        assert (data.methods[method]["reconstruction"] - data.truth).abs().max() < 0.1
    assert data.methods["sgilo"]["samples"].shape == (IMAGES, CHAINS, 3, SIZE, SIZE)


def test_the_stage_writes_the_table_figures_and_report(workspace):
    out = workspace / "results"
    report_stage.main(report_argv(workspace / "params.yaml", workspace / "evaluate", out))
    table = pd.read_csv(out / "table1.csv")
    assert list(table.columns) == list(report.TABLE_COLUMNS)
    assert list(zip(table["task"], table["level"], table["method"])) == _cells()
    assert table.loc[table["task"] == "cs", "lpips_mean"].isna().all()
    figures = [f"curves_{t}.png" for t in TASKS] + ["reconstructions.png", "posterior.png", "speed.png"]
    assert sorted(p.name for p in (out / "figures").iterdir()) == sorted(figures)
    for name in figures:
        with Image.open(out / "figures" / name) as image:
            assert image.format == "PNG" and image.width >= 300 and image.height >= 200
            image.verify()
    markdown = (out / "report.md").read_text()
    assert all(f"(figures/{name})" in markdown for name in figures)
    assert LPIPS_NOTE in markdown and "90% Student-t" in markdown
    # The computed sentences: sgilo has the lowest MSE by a wide margin at both tasks' hardest levels.
    assert (
        "inpaint\n\n![curves_inpaint](figures/curves_inpaint.png)\n\nAt the hardest level (fraction of pixels kept = 0.05), sgilo"
        in markdown
    )
    assert "At the hardest level (measurements m/n = 0.03), sgilo has the lowest mean MSE" in markdown
    assert "mean MSE: " in markdown and "pixel-wise correlation with |mean − truth|" in markdown


def test_the_figures_data_and_metrics_json_are_table1s_numbers(workspace, monkeypatch):
    drawn = {}
    monkeypatch.setattr(report, "plot_curves", lambda curves, path: drawn.setdefault(path.stem, curves))
    monkeypatch.setattr(report, "plot_speed", lambda speed, path: drawn.setdefault(path.stem, speed))
    out = workspace / "dvc"
    report_stage.main(report_argv(workspace / "params.yaml", workspace / "evaluate", out))
    table = pd.read_csv(out / "table1.csv").set_index(["task", "level", "method"])
    for name, frame in drawn.items():  # the files hold what the figures were drawn from, not a second computation
        pd.testing.assert_frame_equal(pd.read_csv(out / "plots" / f"{name}.csv"), frame.reset_index(drop=True))
    curves = pd.read_csv(out / "plots" / "curves_cs.csv")
    assert list(curves.columns) == list(report.CURVE_COLUMNS)
    lines = [method for method in METHODS for _ in TASKS["cs"]]  # a panel per metric, a line per method
    assert curves.groupby("metric", sort=False)["method"].apply(list).to_dict() == {"mse": lines, "ssim": lines}
    assert set(pd.read_csv(out / "plots" / "curves_inpaint.csv")["metric"]) == {
        "mse",
        "ssim",
        "lpips",
    }  # LPIPS where measured
    for row in curves.itertuples():
        assert row.mean == table.loc[("cs", row.level, row.method), f"{row.metric}_mean"]
    speed = pd.read_csv(out / "plots" / "speed.csv")
    pd.testing.assert_frame_equal(speed, table.reset_index()[list(report.SPEED_COLUMNS)])
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["cs"]["0.03"]["sgilo"] == {
        "n": IMAGES,
        "failed": 0,
        "seconds_per_image": table.loc[("cs", 0.03, "sgilo"), "seconds_per_image"],
        **{m: table.loc[("cs", 0.03, "sgilo"), f"{m}_mean"] for m in ("mse", "psnr", "ssim")},
    }
    assert metrics["inpaint"]["0.05"]["ilo"]["lpips"] == table.loc[("inpaint", 0.05, "ilo"), "lpips_mean"]


def test_without_sgilo_the_posterior_figure_is_skipped(workspace, caplog):
    params = _params(workspace / "no_sgilo.yaml", ("csgm", "ilo"))
    out = workspace / "no_sgilo"
    with caplog.at_level("INFO", logger="sgilo"):
        report_stage.main(report_argv(params, workspace / "evaluate", out))
    assert not (out / "figures" / "posterior.png").exists() and (out / "figures" / "speed.png").exists()
    assert "posterior figure skipped" in caplog.text
    with pytest.raises(SystemExit):  # a posterior figure asked for without sgilo, or left out with it
        report_stage.main([*report_argv(params, workspace / "evaluate", out), "--posterior", str(out / "p.png")])
    assert len(pd.read_csv(out / "table1.csv")) == len(_cells(("csgm", "ilo")))


def test_a_missing_input_ends_the_stage_with_its_message(workspace, tmp_path):
    evaluate = tmp_path / "evaluate"
    shutil.copytree(workspace / "evaluate", evaluate)
    (evaluate / "cs" / "0.1" / "ilo.parquet").unlink()
    result = run_stage(
        "report", *report_argv(workspace / "params.yaml", evaluate, tmp_path / "out"), cwd=tmp_path, check=False
    )
    assert result.returncode == 2
    assert "cs/0.1/ilo.parquet" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out" / "table1.csv").exists()


def test_figures_with_no_kept_images_still_render(tmp_path):
    empty = {key: value[:0] for key, value in _images("sgilo", torch.Generator().manual_seed(1)).items()}
    for method in ("ilo", "sgilo"):
        save_safetensors(empty, cell_file(tmp_path, "cs", 0.1, method, ".safetensors"))
    data = report.load_figure_data(
        {m: cell_file(tmp_path, "cs", 0.1, m, ".safetensors") for m in ("ilo", "sgilo")}, "cs", 0.1
    )
    assert data.ids == [] and report.describe_posterior(data) == "No images were kept for figures."
    report.plot_reconstructions(data, tmp_path / "reconstructions.png")
    report.plot_posterior(data, tmp_path / "posterior.png")
    for name in ("reconstructions.png", "posterior.png"):
        with Image.open(tmp_path / name) as image:
            assert image.format == "PNG" and image.width > 100


def test_paired_differences_match_a_paired_t_interval(workspace):
    records = report.load_records(_files(workspace / "evaluate", _cells()))
    paired = report.paired_differences(records, "sgilo", "mse", confidence=0.9)
    assert list(paired.columns) == list(report.PAIRED_COLUMNS)
    assert len(paired) == 4 * 2 and set(paired["other"]) == {"csgm", "ilo"}
    row = paired[(paired["task"] == "cs") & (paired["level"] == 0.03) & (paired["other"] == "ilo")].iloc[0]
    cell = records[(records["task"] == "cs") & (records["level"] == 0.03)].pivot(
        index="image_id", columns="method", values="mse"
    )
    difference = (cell["sgilo"] - cell["ilo"]).to_numpy()
    low, high = scipy.stats.t.interval(
        0.9, len(difference) - 1, loc=difference.mean(), scale=scipy.stats.sem(difference)
    )
    assert row["difference"] == pytest.approx(difference.mean()) and (row["ci_low"], row["ci_high"]) == (
        pytest.approx(low),
        pytest.approx(high),
    )
    assert row["wins"] == int((difference < 0).sum()) and row["n"] == IMAGES
    assert "better" in report.describe_paired(paired)  # sgilo's errors are a quarter of ilo's in this data
    assert report.paired_differences(records[records["method"] != "sgilo"]).empty


@pytest.mark.parametrize(
    ("task", "levels", "hardest"),
    [
        ("inpaint", (0.05, 0.25), 0.05),
        ("cs", (0.1, 0.03), 0.03),
        ("denoise", (0.05, 0.4, 0.1), 0.4),
        ("sr", (2.0, 8.0, 4.0), 8.0),
    ],
)
def test_the_hardest_level_follows_each_tasks_direction(task, levels, hardest):
    # ilo wins at every level but the hardest, where sgilo wins: the sentences must name the hardest level's winner.
    rows = []
    for level in levels:
        for method, mse in (("ilo", 0.01 if level != hardest else 0.05), ("sgilo", 0.02 if level != hardest else 0.03)):
            rows.append(
                {
                    "task": task,
                    "level": level,
                    "method": method,
                    "mse_mean": mse,
                    "mse_ci_low": mse * 0.9,
                    "mse_ci_high": mse * 1.1,
                    "seconds_per_image": 1.0 if method == "ilo" else 4.0,
                }
            )
    table = pd.DataFrame(rows)
    sentence = report.describe_curves(table, task)
    assert f"= {hardest:g}), sgilo has the lowest mean MSE" in sentence
    assert f"At {task} {hardest:g} the lowest-MSE method, sgilo" in report.describe_speed(table)
