"""download stage, through its command line."""

from __future__ import annotations

import pandas as pd

from sgilo.data import load_images

from conftest import run_stage, write_params


def test_download_stage_writes_the_demo_set_and_resumes(tmp_path, tiny_params):
    out = tmp_path / "data" / "synthfaces"
    run_stage("download", "--params", str(tiny_params), "--out", str(out), cwd=tmp_path)
    index = pd.read_csv(out / "index.csv")
    assert index["split"].value_counts().to_dict() == {"train": 48, "test": 8}
    images = load_images(out, "test", 32)
    assert images.shape == (8, 3, 32, 32)

    (out / index.path[5]).unlink()
    before = {p: p.stat().st_mtime_ns for p in (out / "images").iterdir()}
    run_stage("download", "--params", str(tiny_params), "--out", str(out), cwd=tmp_path)
    assert (out / index.path[5]).is_file()
    assert all(p.stat().st_mtime_ns == t for p, t in before.items())
    assert load_images(out, "test", 32).equal(images)


def test_download_stage_rejects_bad_params_before_writing(tmp_path):
    params = write_params(tmp_path / "bad.yaml", {"download": {"resolution": 33}})
    result = run_stage("download", "--params", str(params), "--out", str(tmp_path / "d"), cwd=tmp_path, check=False)
    assert result.returncode == 2
    assert "download.resolution" in result.stderr and "bad.yaml" in result.stderr
    assert not (tmp_path / "d").exists()
