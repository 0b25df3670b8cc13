"""evaluate stage: tuning on validation images, one record per test image, figure data, determinism, resume."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torchvision
from PIL import Image

from sgilo.io import load_safetensors
from sgilo.metrics import lpips_backbone_path
from sgilo.report import summarize
from sgilo.stages import evaluate as evaluate_stage
from sgilo.stylegan2 import load_generator

from conftest import (
    cell_argv,
    cell_file,
    demo_params,
    kill_stage_when,
    prior_argv,
    report_argv,
    run_stage,
    tiny_workspace,
    write_params,
)

COLUMNS = [
    "image_id",
    "seed",
    "task",
    "level",
    "method",
    "mse",
    "psnr",
    "ssim",
    "lpips",
    "lpips_note",
    "seconds",
    "steps",
    "chains",
    "measurement_loss",
    "hyper",
    "failure",
    "precision",
    "data_term",
]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    return tiny_workspace(tmp_path_factory.mktemp("evaluate"), upto="score")


def _argv(root: Path, method: str, *extra: str) -> list[str]:
    return [
        "--params",
        str(root / "params.yaml"),
        "--data",
        str(root / "synthfaces"),
        "--generator",
        str(root / "generator.pt"),
        "--score",
        str(root / "score" / "model.pt"),
        "--task",
        "inpaint",
        "--level",
        "0.25",
        "--method",
        method,
        "--threads",
        "1",
        *extra,
    ]


def _cell(folder: Path, method: str) -> list[str]:
    """--records and --figures of the inpaint 0.25 cell of `method`, under `folder` as the workflow lays them out."""
    return cell_argv(folder, "inpaint", 0.25, method)


def _tune_and_evaluate(root: Path, method: str, out: Path) -> pd.DataFrame:
    tuned = out / "tune" / f"{method}.json"
    run_stage("evaluate", *_argv(root, method, "--tune", "--out", str(tuned)), cwd=root)
    run_stage("evaluate", *_argv(root, method, "--tuned", str(tuned), *_cell(out / "evaluate", method)), cwd=root)
    return pd.read_parquet(out / "evaluate" / "inpaint" / "0.25" / f"{method}.parquet")


@pytest.mark.parametrize("method", ["csgm", "ilo", "ilo-unconstrained", "sgilo", "gnc"])
def test_each_method_writes_a_record_per_test_image(workspace, method):
    out = workspace / "run"
    records = _tune_and_evaluate(workspace, method, out)
    assert list(records.columns) == COLUMNS
    # tiny profile: test split = ids 48…55; the first is the validation image, the next 3 are tested.
    assert records["image_id"].tolist() == [49, 50, 51]
    assert (
        (records["method"] == method).all()
        and (records["task"] == "inpaint").all()
        and (records["level"] == 0.25).all()
    )
    assert records["lpips"].isna().all() and records["lpips_note"].str.contains("weights absent").all()
    assert records["chains"].eq(2 if method == "sgilo" else 1).all() and records["failure"].eq("").all()
    assert records["precision"].eq("fp32").all()  # evaluate.precision as it resolved (the tiny profile pins fp32)
    assert records["data_term"].eq("mse").all()  # invert.perceptual is 0 in the tiny profile
    tuned = json.loads((out / "tune" / f"{method}.json").read_text())
    assert tuned["precision"] == "fp32"
    if method in ("ilo", "sgilo", "gnc"):
        key = "radius_scale" if method == "ilo" else "weight"
        assert [c[key] for c in tuned["candidates"]] == (
            [0.5, 2.0] if method == "ilo" else [0.1, 0.3] if method == "sgilo" else [0.5, 1.0]
        )
        assert tuned["chosen"] == {key: min(tuned["candidates"], key=lambda c: c["mse"])[key]}
        assert set(records["image_id"]).isdisjoint(tuned["validation_ids"])
        assert all(json.loads(h) == tuned["chosen"] for h in records["hyper"])
    else:
        assert tuned["chosen"] == {} and tuned["candidates"] == []
    figures, metadata = load_safetensors(out / "evaluate" / "inpaint" / "0.25" / f"{method}.safetensors")
    assert metadata["method"] == method and figures["ids"].tolist() == records["image_id"].tolist()[:2]
    assert figures["truth"].shape == figures["reconstruction"].shape == figures["measurement"].shape == (2, 3, 32, 32)
    # the records score the reconstructions written against the test images: MSE and PSNR (data range 1) recomputed
    errors = (figures["reconstruction"] - figures["truth"]).square().flatten(1).mean(1).double().numpy()
    np.testing.assert_allclose(records["mse"].to_numpy()[:2], errors, rtol=1e-4)
    np.testing.assert_allclose(records["psnr"].to_numpy(), -10 * np.log10(records["mse"].to_numpy()), atol=1e-3)
    if method in ("sgilo", "gnc"):
        chains = 2 if method == "sgilo" else 1
        assert figures["samples"].shape == (2, chains, 3, 32, 32) and figures["std"].shape == (2, 3, 32, 32)


def test_ilo_recovers_test_images_the_generator_made(workspace, tmp_path):
    """Test images that are the tiny generator's own samples, so an exact inversion exists, 25% of pixels kept: ILO
    with a long enough schedule (2 s) must recover each. Measured 23.8, 33.7 and 30.7 dB; zero steps give 6-8 dB,
    optimising against another seed's mask 6 dB."""
    data = _generated_test_images(workspace / "generator.pt", tmp_path / "generated", count=4)  # 1 validation + 3 test
    long_schedule = [
        {"layer": 0, "steps": 100, "lr": 0.1},
        {"layer": 1, "steps": 50, "lr": 0.1, "radius": 50.0},
        {"layer": 2, "steps": 50, "lr": 0.1, "radius": 100.0},
    ]
    params = write_params(tmp_path / "params.yaml", {"invert": {"phases": long_schedule}})
    (tmp_path / "tuned.json").write_text(json.dumps({"chosen": {"radius_scale": 1.0}}))
    argv = _argv(workspace, "ilo", "--tuned", str(tmp_path / "tuned.json"), *_cell(tmp_path / "evaluate", "ilo"))
    argv[argv.index("--params") + 1], argv[argv.index("--data") + 1] = str(params), str(data)
    evaluate_stage.main(argv)
    records = pd.read_parquet(tmp_path / "evaluate" / "inpaint" / "0.25" / "ilo.parquet")
    assert records["image_id"].tolist() == [1, 2, 3] and records["steps"].eq(200).all()
    assert records["psnr"].min() > 20 and records["psnr"].mean() > 25, records[["image_id", "psnr"]].to_dict("records")


def _generated_test_images(generator_path: Path, root: Path, count: int) -> Path:
    """A dataset folder whose test split is `count` samples of the generator, as 8-bit PNGs."""
    generator = load_generator(generator_path)
    with torch.no_grad():
        images = generator(torch.randn(count, generator.style_dim, generator=torch.Generator().manual_seed(7)))
    (root / "images").mkdir(parents=True)
    for i, image in enumerate(images):
        pixels = ((image.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
        Image.fromarray(pixels).save(root / "images" / f"{i}.png")
    pd.DataFrame({"id": range(count), "split": "test", "path": [f"images/{i}.png" for i in range(count)]}).to_csv(
        root / "index.csv", index=False
    )
    return root


def test_same_params_give_the_same_records(workspace):
    first = _tune_and_evaluate(workspace, "sgilo", workspace / "a")
    again = _tune_and_evaluate(workspace, "sgilo", workspace / "b")
    pd.testing.assert_frame_equal(first.drop(columns="seconds"), again.drop(columns="seconds"))
    # Hence the same table: every column but the wall-clock one.
    tables = [summarize(records).drop(columns="seconds_per_image") for records in (first, again)]
    pd.testing.assert_frame_equal(*tables)


def test_all_methods_see_the_same_measurements_and_ids(workspace):
    out = workspace / "run"
    for method in ("csgm", "ilo"):
        if not (out / "evaluate" / "inpaint" / "0.25" / f"{method}.parquet").exists():
            _tune_and_evaluate(workspace, method, out)
    a, _ = load_safetensors(out / "evaluate" / "inpaint" / "0.25" / "csgm.safetensors")
    b, _ = load_safetensors(out / "evaluate" / "inpaint" / "0.25" / "ilo.safetensors")
    assert a["measurement"].equal(b["measurement"]) and a["truth"].equal(b["truth"])


def test_a_crashed_cell_resumes_at_its_next_batch(workspace, monkeypatch):
    out = workspace / "crash"
    tuned = out / "ilo.json"
    run_stage("evaluate", *_argv(workspace, "ilo", "--tune", "--out", str(tuned)), cwd=workspace)
    argv = _argv(workspace, "ilo", "--tuned", str(tuned), *_cell(out / "evaluate", "ilo"))
    partial = cell_file(out / "evaluate", "inpaint", 0.25, "ilo", ".parquet").parent / "partial"
    original, calls = evaluate_stage._batch_records, []

    def crash_on_second_batch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt("killed")
        return original(*args, **kwargs)

    monkeypatch.setattr(evaluate_stage, "_batch_records", crash_on_second_batch)
    with pytest.raises(KeyboardInterrupt):
        evaluate_stage.main(argv)
    assert [p.name for p in partial.iterdir()] == ["ilo.pt"]  # beside the records, named after them
    monkeypatch.setattr(evaluate_stage, "_batch_records", original)
    resumed_batches = []
    monkeypatch.setattr(
        evaluate_stage, "_batch_records", lambda *a, **k: resumed_batches.append(1) or original(*a, **k)
    )
    evaluate_stage.main(argv)
    assert len(resumed_batches) == 1  # 3 images in batches of 2: only the second batch ran again
    assert not partial.exists()
    resumed = pd.read_parquet(out / "evaluate" / "inpaint" / "0.25" / "ilo.parquet")
    run_stage("evaluate", *_argv(workspace, "ilo", "--tuned", str(tuned), *_cell(out / "clean", "ilo")), cwd=workspace)
    clean = pd.read_parquet(out / "clean" / "inpaint" / "0.25" / "ilo.parquet")
    pd.testing.assert_frame_equal(resumed.drop(columns="seconds"), clean.drop(columns="seconds"))


def test_tuning_killed_with_sigkill_resumes_to_the_same_choice(workspace):
    """A tune job is as long as an evaluate cell at the paper's scale: kill -9 after its first candidate, rerun, and
    the JSON is the one an uninterrupted run writes, with only the second candidate run again."""
    out = workspace / "tune-killed" / "ilo.json"
    argv = _argv(workspace, "ilo", "--tune", "--out", str(out))
    kill_stage_when("evaluate", argv, workspace, out.parent / "partial" / "ilo.pt")
    assert not out.exists(), "the tuning finished before it could be killed"
    rerun = run_stage("evaluate", *argv, cwd=workspace)
    assert "1 of 2 candidate batches to run" in rerun.stderr
    assert not (out.parent / "partial").exists()
    straight = workspace / "tune-straight" / "ilo.json"
    run_stage("evaluate", *_argv(workspace, "ilo", "--tune", "--out", str(straight)), cwd=workspace)
    assert json.loads(out.read_text()) == json.loads(straight.read_text())


def test_an_image_going_non_finite_gets_a_failed_record_and_the_cell_goes_on(workspace, monkeypatch):
    out = workspace / "failing"
    evaluate_stage.main(_argv(workspace, "csgm", *_cell(out / "clean", "csgm")))
    real = evaluate_stage.load_images

    def load(data, split, size, ids):  # image 50 reads as NaN: its measurement, and so its loss, are NaN
        images = real(data, split, size, ids)
        images[[row for row, i in enumerate(ids) if i == 50]] = float("nan")
        return images

    monkeypatch.setattr(evaluate_stage, "load_images", load)
    evaluate_stage.main(_argv(workspace, "csgm", *_cell(out / "poisoned", "csgm")))
    clean = pd.read_parquet(out / "clean" / "inpaint" / "0.25" / "csgm.parquet")
    poisoned = pd.read_parquet(out / "poisoned" / "inpaint" / "0.25" / "csgm.parquet")
    assert poisoned["image_id"].tolist() == [49, 50, 51]
    failed = poisoned.set_index("image_id").loc[50]
    assert failed["failure"] == "non-finite loss at step 1 of the layer-0 phase"
    assert all(math.isnan(failed[m]) for m in ("mse", "psnr", "ssim", "measurement_loss"))
    # Image 50 shares its batch with 49: both other records are those of the clean run.
    pd.testing.assert_frame_equal(
        poisoned[poisoned["image_id"] != 50].drop(columns="seconds").reset_index(drop=True),
        clean[clean["image_id"] != 50].drop(columns="seconds").reset_index(drop=True),
    )
    row = summarize(poisoned).iloc[0]
    assert row["n"] == 2 and row["failed"] == 1
    assert row["mse_mean"] == pytest.approx(clean.loc[clean["image_id"] != 50, "mse"].mean())
    # Tuning on a validation image that fails under every candidate stops with what to change, and writes nothing.
    monkeypatch.setattr(
        evaluate_stage, "load_images", lambda data, split, size, ids: real(data, split, size, ids) * float("nan")
    )
    with pytest.raises(
        SystemExit, match="every candidate of radius_scale made all validation images fail.*lower the step sizes"
    ):
        evaluate_stage.main(_argv(workspace, "ilo", "--tune", "--out", str(out / "tune.json")))
    assert not (out / "tune.json").exists()


def test_lpips_is_recorded_when_its_weights_are_present(workspace, tmp_path):
    """An AlexNet backbone of the real key layout where torchvision looks ($TORCH_HOME/hub/checkpoints)."""
    home = tmp_path / "torch"
    backbone = home / "hub" / "checkpoints" / lpips_backbone_path("alex").name
    backbone.parent.mkdir(parents=True)
    torch.save(torchvision.models.alexnet().state_dict(), backbone)
    argv = _argv(workspace, "csgm", *_cell(tmp_path / "evaluate", "csgm"))
    result = subprocess.run(
        [sys.executable, "-m", "sgilo.stages.evaluate", *argv],
        cwd=workspace,
        check=False,
        capture_output=True,
        text=True,
        env={**os.environ, "TORCH_HOME": str(home)},
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    records = pd.read_parquet(tmp_path / "evaluate" / "inpaint" / "0.25" / "csgm.parquet")
    assert records["lpips"].gt(0).all() and records["lpips_note"].eq("").all()


def test_bad_cells_and_missing_score_are_refused(workspace):
    argv = _argv(workspace, "ilo", "--tune", "--out", "x.json")
    argv[argv.index("--level") + 1] = "0.5"
    result = run_stage("evaluate", *argv, cwd=workspace, check=False)
    assert result.returncode == 2 and "not in evaluate.tasks" in result.stderr
    argv = _argv(workspace, "sgilo", "--tune", "--out", "x.json")
    del argv[argv.index("--score") : argv.index("--score") + 2]
    result = run_stage("evaluate", *argv, cwd=workspace, check=False)
    assert result.returncode == 2 and "need the score stage's model.pt" in result.stderr


def test_report_turns_the_cells_into_table_figures_and_prior_samples(workspace, monkeypatch):
    out = workspace / "run"
    for method in ("csgm", "ilo", "ilo-unconstrained", "sgilo", "gnc"):
        if not (out / "evaluate" / "inpaint" / "0.25" / f"{method}.parquet").exists():
            _tune_and_evaluate(workspace, method, out)
    monkeypatch.setenv("TORCH_HOME", str(workspace / "no-weights"))
    run_stage(
        "report",
        *report_argv(workspace / "params.yaml", out / "evaluate", out),
        *("--score", str(workspace / "score" / "model.pt"), "--generator", str(workspace / "generator.pt")),
        *("--data", str(workspace / "synthfaces"), "--invert-summary", str(workspace / "invert" / "summary.json")),
        *prior_argv(out),
        cwd=workspace,
    )
    table = pd.read_csv(out / "table1.csv")
    assert table["method"].tolist() == ["csgm", "ilo", "ilo-unconstrained", "sgilo", "gnc"] and table["n"].eq(3).all()
    for name in ("curves_inpaint", "reconstructions", "posterior", "speed", "prior_samples"):
        assert (out / "figures" / f"{name}.png").stat().st_size > 1000
    prior = json.loads((out / "prior.json").read_text())
    assert prior["samples"] == 16 and prior["fid"] is None and "pt_inception" in prior["fid_note"]
    markdown = (out / "report.md").read_text()
    assert "prior_samples.png" in markdown and "FID missing" in markdown and "trained on 12 training images" in markdown
    assert "sgilo − other" in markdown and len(pd.read_csv(out / "paired.csv")) == 4


def test_a_new_method_is_a_table_row_and_one_class(workspace, tmp_path, monkeypatch, capsys):
    """Registering a sixth method (ILO at half the lr, tuning ILO's radius scale) takes a row of sgilo.method_table and
    a class in sgilo.methods: the params accept it, the tune and evaluate steps run it, the report colours it."""
    import yaml

    from sgilo import method_table, methods, report
    from sgilo.inversion import LayerPhase

    class HalfLR(methods.ILO):
        name = "ilo-half-lr"

        def schedule(self, phases: list[LayerPhase]) -> list[LayerPhase]:
            return [LayerPhase(s.layer, s.steps, s.radius, s.lr / 2) for s in super().schedule(phases)]

    monkeypatch.setitem(
        method_table.METHODS,
        "ilo-half-lr",
        method_table.MethodSpec(
            "ilo-half-lr", "ILO at half its lr", "tab:olive", tuned="radius_scale", candidates="ilo_radius_scale"
        ),
    )
    monkeypatch.setitem(methods.METHOD_CLASSES, "ilo-half-lr", HalfLR)
    raw = yaml.safe_load((workspace / "params.yaml").read_text())
    raw["evaluate"]["methods"] = ["ilo", "ilo-half-lr"]
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(raw))
    argv = ["--params", str(params), *_argv(workspace, "ilo-half-lr")[2:]]
    tuned = tmp_path / "tune.json"
    evaluate_stage.main([*argv, "--tune", "--out", str(tuned)])
    evaluate_stage.main([*argv, "--tuned", str(tuned), *_cell(tmp_path / "evaluate", "ilo-half-lr")])
    records = pd.read_parquet(tmp_path / "evaluate" / "inpaint" / "0.25" / "ilo-half-lr.parquet")
    assert records["method"].eq("ilo-half-lr").all() and len(records) == 3
    assert json.loads(tuned.read_text())["key"] == "radius_scale"
    ilo = methods.method_phases("ilo", [LayerPhase(0, 4, None, 0.1)])
    assert methods.method_phases("ilo-half-lr", [LayerPhase(0, 4, None, 0.1)]) == [LayerPhase(0, 4, None, 0.05)] != ilo
    assert report.method_color("ilo-half-lr") == "tab:olive"
    raw["evaluate"]["methods"] = ["ilo", "toy"]
    params.write_text(yaml.safe_dump(raw))
    with pytest.raises(SystemExit):
        evaluate_stage.main([*argv, "--tune", "--out", str(tuned)])
    assert "evaluate.methods: unknown method 'toy'" in capsys.readouterr().err


def test_a_prior_method_without_its_settings_names_them():
    """SGILO's and GNC's settings come from the caller (a profile's evaluate section, the CLI's flags); there are no
    defaults in the code to fall back on."""
    from sgilo import methods
    from sgilo.inversion import LayerPhase

    phases = [LayerPhase(0, 4, None, 0.1), LayerPhase(1, 2, 10.0, 0.1)]
    for name, key in [("sgilo", "sgilo_config"), ("gnc", "gnc_config")]:
        with pytest.raises(ValueError, match=f"this method needs its {key}"):
            methods.run_phases(name, phases, 1)
    demo = demo_params().evaluate
    assert methods.run_phases("gnc", phases, 1, gnc_config=demo.gnc)[-1] == LayerPhase(1, demo.gnc.steps, None, 0.05)
