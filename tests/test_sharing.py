"""dvc.yaml generated from the Snakefile, and outputs shared through a DVC remote (an S3 server on 127.0.0.1) without
making Snakemake redo anything; DVC's plots and metrics compare two runs; `sgilo push` refuses what `dvc repro` wrote."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sgilo.sharing import (
    SharingError,
    foreign_outputs,
    sync,
    top_level_plots,
    workflow_stages,
)

from conftest import REPO, git, snakemake_in, write_params

BUCKET = "sgilo-team"
DVC = [sys.executable, "-m", "dvc"]
PLOTS = {
    "results/generator/history.csv",
    "results/score/history.csv",
    "results/plots/curves_inpaint.csv",
    "results/plots/speed.csv",
}


def sgilo(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sgilo.cli", *args], cwd=root, check=False, capture_output=True, text=True, timeout=900
    )


def test_the_committed_dvc_yaml_is_generated_from_the_snakefile():
    assert sync(REPO, check=True), "dvc.yaml drifted from the Snakefile: run `sgilo dvc-sync` and commit it"


def test_dvc_yaml_has_one_stage_per_snakemake_job(tiny_project):
    stages = {stage.name: stage for stage in workflow_stages(tiny_project)}
    assert set(stages) == {
        "download",
        "generator",
        "invert-00000",
        "invert-00001",
        "invert_generated-00000",
        "invert_summary",
        "trajectories_stats",
        "trajectories-shards-00000",
        "trajectories-shards-00001",
        "trajectories-generated-00000",
        "score",
        "tune-inpaint-0_25-ilo",
        "tune-inpaint-0_25-sgilo",
        "tune-inpaint-0_25-gnc",
        "report",
        "theory_gnc",
        "theory_langevin",
        "theory_igo",
        *(f"evaluate-inpaint-0_25-{method}" for method in ("csgm", "ilo", "ilo-unconstrained", "sgilo", "gnc")),
    }
    sgilo_cell = stages["evaluate-inpaint-0_25-sgilo"]
    assert (
        sgilo_cell.cmd.startswith("python -m sgilo.stages.evaluate --params params.yaml") and "2>" not in sgilo_cell.cmd
    )
    assert {"results/score/model.pt", "src/sgilo/stages/evaluate.py", "src/sgilo/posterior.py"} <= set(sgilo_cell.deps)
    assert {"evaluate.sgilo", "evaluate.tune.sgilo_weight", "invert.phases"} <= set(sgilo_cell.params)
    assert "evaluate.gnc" not in sgilo_cell.params and "score" not in sgilo_cell.params
    assert "results/score/model.pt" not in stages["evaluate-inpaint-0_25-csgm"].deps
    assert stages["download"].outs == ("data/synthfaces",)  # the whole data set, not just its index
    score = stages["score"].params  # whole sections but their thread counts (the Snakefile's `tracked`)
    assert {"seed", "trajectories.draws", "score.epochs", "score.model"} <= set(score)
    assert not [key for key in score if key.endswith("threads")] and "score" not in score


def test_dvc_yaml_declares_the_plots_and_metrics_once(tiny_project):
    dvc_yaml = yaml.safe_load((tiny_project / "dvc.yaml").read_text())
    stages = dvc_yaml["stages"]
    plots = {
        path: view for stage in stages.values() for entry in stage.get("plots", []) for path, view in entry.items()
    }
    metrics = {path for stage in stages.values() for path in stage.get("metrics", [])}
    outs = {path for stage in stages.values() for path in stage.get("outs", [])}
    assert set(plots) == PLOTS and "results/metrics.json" in stages["report"]["metrics"]
    assert not outs & (set(plots) | metrics)  # DVC refuses an output declared twice
    top = {name: view for entry in dvc_yaml["plots"] for name, view in entry.items()}
    assert top["score-losses"] == {
        "x": "step",
        "y": {"results/score/history.csv": ["train_loss", "held_out_loss"]},
        "title": "score model: training and held-out loss",
    }
    # every view names columns the tiny run wrote, and its template exists
    views = [(path, view["x"], [view["y"]]) for path, view in plots.items()]
    views += [(path, view["x"], columns) for view in top.values() for path, columns in view["y"].items()]
    for path, x, ys in views:
        header = (tiny_project / path).read_text().splitlines()[0].split(",")
        assert {x, *ys} <= set(header), path
    for view in plots.values():
        assert "template" not in view or (tiny_project / ".dvc" / "plots" / f"{view['template']}.json").is_file()
    assert "Never run `dvc repro`" in (tiny_project / "dvc.yaml").read_text()
    assert top_level_plots(["results/score/history.csv"]) == [
        {"score-losses": top["score-losses"]}
    ]  # no generator trained here


def test_dvc_plots_diff_shows_two_runs_curves(tiny_project, tmp_path):
    """Two runs recorded in git (dvc.lock) and pushed, the second a rerun of the report with other intervals; then
    `dvc plots diff` between the two commits in a fresh clone, which reads each revision's data from the remote."""
    runs = tmp_path / "runs"
    shutil.copytree(tiny_project, runs, symlinks=True)
    subprocess.run(
        [*DVC, "remote", "add", "--default", "--force", "scratch", str(tmp_path / "remote")], cwd=runs, check=True
    )

    def record(message: str) -> None:  # what `sgilo push` does, less its checks (this copy lives at another path)
        subprocess.run([*DVC, "commit", "--force", "--no-relink", "--quiet"], cwd=runs, check=True)
        subprocess.run([*DVC, "push", "--quiet"], cwd=runs, check=True)
        git(runs, "add", "dvc.lock", "params.yaml", ".dvc/config")
        git(runs, "commit", "-qm", message, "--allow-empty")

    record("first run")
    write_params(runs / "params.yaml", {"report": {"confidence": 0.5}})
    command = yaml.safe_load((runs / "dvc.yaml").read_text())["stages"]["report"]["cmd"].split()
    subprocess.run(
        [sys.executable, *command[1:]], cwd=runs, check=True, capture_output=True
    )  # the report's own command
    record("second run")
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(runs), str(clone))
    assert not (clone / "results").exists()  # nothing pulled

    diff = subprocess.run(
        [*DVC, "plots", "diff", "HEAD~1", "HEAD", "--json"], cwd=clone, check=True, capture_output=True, text=True
    )
    plots = json.loads(diff.stdout)
    assert not plots.get("errors"), plots["errors"]
    assert {name: plot[0]["revisions"] for name, plot in plots["data"].items()} == {
        name: ["HEAD~1", "HEAD"] for name in [*PLOTS, "generator-losses", "score-losses"]
    }
    points = plots["data"]["results/plots/curves_inpaint.csv"][0]["content"]["data"]["values"]
    first, second = (
        {(p["metric"], p["method"], p["level"]): p for p in points if p["rev"] == rev} for rev in ("HEAD~1", "HEAD")
    )
    assert (
        first.keys() == second.keys()
        and len(first) == len((runs / "results/plots/curves_inpaint.csv").read_text().splitlines()) - 1
    )
    for key, old in first.items():  # the same means; 50% intervals narrower than 95% ones
        new = second[key]
        assert new["mean"] == old["mean"]
        assert float(new["ci_high"]) - float(new["ci_low"]) < float(old["ci_high"]) - float(old["ci_low"])

    diff = subprocess.run(
        [*DVC, "metrics", "diff", "HEAD~1", "HEAD", "--all", "--json"],
        cwd=clone,
        check=True,
        capture_output=True,
        text=True,
    )
    psnr = json.loads(diff.stdout)["results/metrics.json"]["inpaint.0.25.sgilo.psnr"]
    assert (
        psnr["old"]
        == psnr["new"]
        == json.loads((runs / "results/metrics.json").read_text())["inpaint"]["0.25"]["sgilo"]["psnr"]
    )


def test_push_refuses_outputs_that_dvc_repro_wrote(tiny_project, tmp_path):
    project = tmp_path / "project"
    shutil.copytree(tiny_project, project, symlinks=True)
    subprocess.run(
        [*DVC, "remote", "add", "--local", "--default", "scratch", str(tmp_path / "remote")], cwd=project, check=True
    )
    assert foreign_outputs(project) == {}
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }  # dvc.yaml's `python`
    repro = subprocess.run(
        [*DVC, "repro", "--single-item", "report"], cwd=project, env=env, capture_output=True, text=True, check=False
    )
    assert repro.returncode == 0, repro.stderr[-3000:]
    # Snakemake's own triggers see nothing (its input trigger fires here only because the copy moved the code's paths)
    dry = snakemake_in(project, "-n", "--rerun-triggers", "mtime", "params", "code", target="all")
    assert "Nothing to be done" in dry.stdout + dry.stderr, dry.stdout[-3000:]
    report = yaml.safe_load((project / "dvc.yaml").read_text())["stages"]["report"]
    written = {
        path
        for key in ("outs", "metrics", "plots")
        for entry in report[key]
        for path in ([entry] if isinstance(entry, str) else entry)
    }
    foreign = foreign_outputs(project)
    assert set(foreign) == {"report"} and set(foreign["report"]) == written  # every output dvc repro rewrote, no other
    refused = sgilo(project, "push")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "results/table1.csv" in refused.stderr and "not written by Snakemake" in refused.stderr
    assert "`dvc repro`" in refused.stderr and "--forcerun report`" in refused.stderr
    assert not (tmp_path / "remote").exists()


def test_a_changed_workflow_makes_dvc_yaml_stale(tiny_project, tmp_path):
    project = tmp_path / "project"
    shutil.copytree(tiny_project, project, ignore=shutil.ignore_patterns("results", "data", ".snakemake", ".git"))
    assert sync(project, check=True) and sync(project, str(project / "params.yaml"), check=True)
    write_params(project / "params.yaml", {"invert": {"shard_size": 4}})  # three shards instead of two
    assert not sync(project, check=True)
    assert sgilo(project, "dvc-sync", "--check").returncode == 2
    assert not sync(project) and sync(project, check=True)
    assert "invert-00002" in (project / "dvc.yaml").read_text()
    write_params(project / "params.yaml", {"invert": {"shard_size": -1}})
    with pytest.raises(SharingError, match="invert.shard_size"):
        sync(project)


@pytest.fixture
def s3_remote(tiny_project, monkeypatch):
    """An S3 server on 127.0.0.1 (moto) with an empty bucket, made the project's default DVC remote."""
    boto3 = pytest.importorskip("boto3")
    server = pytest.importorskip("moto.server").ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    for key, value in {
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
    s3 = boto3.client("s3", endpoint_url=endpoint)
    s3.create_bucket(Bucket=BUCKET)
    dvc = [sys.executable, "-m", "dvc"]
    subprocess.run(
        [*dvc, "remote", "add", "--default", "--force", "team", f"s3://{BUCKET}/cache"], cwd=tiny_project, check=True
    )
    subprocess.run([*dvc, "remote", "modify", "team", "endpointurl", endpoint], cwd=tiny_project, check=True)
    yield s3
    server.stop()


def test_push_then_pull_into_a_fresh_clone_leaves_snakemake_nothing_to_do(tiny_project, s3_remote, tmp_path):
    # (a value the params file already spells out: a newly spelled-out key is a new DVC param, and dvc.yaml goes stale)
    write_params(tiny_project / "params.yaml", {"report": {"fid_samples": 4}})
    refused = sgilo(tiny_project, "push")  # outputs that no longer match their params are not shared
    write_params(tiny_project / "params.yaml")
    assert refused.returncode == 2 and "still has jobs to run" in refused.stderr
    assert not (tiny_project / "dvc.lock").exists()

    outputs = sorted(
        path for folder in ("data", "results") for path in (tiny_project / folder).rglob("*") if path.is_file()
    )
    before = [path.stat().st_mtime_ns for path in outputs]
    push = sgilo(tiny_project, "push")
    assert push.returncode == 0, push.stderr
    assert [path.stat().st_mtime_ns for path in outputs] == before  # recording them in DVC's cache rewrote nothing
    objects = s3_remote.list_objects_v2(Bucket=BUCKET)["Contents"]
    git(tiny_project, "add", "dvc.lock", ".dvc/config")
    git(tiny_project, "commit", "-qm", "outputs pushed")

    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(tiny_project), str(clone))
    pull = sgilo(clone, "pull")
    assert pull.returncode == 0, pull.stderr
    assert (clone / "results/table1.csv").read_bytes() == (tiny_project / "results/table1.csv").read_bytes()
    assert len(list((clone / "data/synthfaces").rglob("*.png"))) == len(
        list((tiny_project / "data/synthfaces").rglob("*.png"))
    )
    dry = snakemake_in(clone, "-n")
    assert "Nothing to be done" in dry.stdout + dry.stderr, dry.stdout[-3000:]
    # what the pull marked done (`snakemake --touch`) is recorded by Snakemake: pushing it back is no `dvc repro`
    push = sgilo(clone, "push")
    assert push.returncode == 0, push.stderr

    # the pulled clone still reruns what a change concerns, and only that
    write_params(clone / "params.yaml", {"report": {"confidence": 0.9}})
    assert set(_planned(snakemake_in(clone, "-n"))) == {"report"}

    # a damaged object and a missing one: a clear error, no such output left in place, Snakemake told nothing
    lock = yaml.safe_load((tiny_project / "dvc.lock").read_text())["stages"]
    model = next(out["md5"] for out in lock["score"]["outs"] if out["path"] == "results/score/model.pt")
    table = next(out["md5"] for out in lock["report"]["outs"] if out["path"] == "results/table1.csv")
    keys = {obj["Key"] for obj in objects}
    model_key = next(key for key in keys if key.endswith(f"{model[:2]}/{model[2:]}"))
    table_key = next(key for key in keys if key.endswith(f"{table[:2]}/{table[2:]}"))
    s3_remote.put_object(Bucket=BUCKET, Key=model_key, Body=b"not a checkpoint")
    s3_remote.delete_object(Bucket=BUCKET, Key=table_key)
    broken = tmp_path / "broken"
    git(tmp_path, "clone", "-q", str(tiny_project), str(broken))
    pull = sgilo(broken, "pull")
    assert pull.returncode == 2
    assert (
        "results/score/model.pt" in pull.stderr
        and "results/table1.csv" in pull.stderr
        and "Traceback" not in pull.stderr
    )
    assert not (broken / "results/score/model.pt").exists() and not (broken / "results/table1.csv").exists()
    assert not (broken / ".snakemake" / "metadata").exists()
    assert "score" in _planned(snakemake_in(broken, "-n"))


def _planned(run: subprocess.CompletedProcess) -> list[str]:
    import re

    return re.findall(r"^rule (\w+):", run.stdout + run.stderr, flags=re.MULTILINE)
