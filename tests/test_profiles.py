"""Every shipped profile (params.yaml and profiles/*/params.yaml) runs the whole workflow to results/table1.csv.

Each keeps all its switches (dataset, generator source, layer, ILO schedule shape, perceptual loss, noise
optimisation, tasks, methods, SDE, precisions, IGO, ...) and has only sizes, counts, sources and devices shrunk to
toy scale (`toy`). An FFHQ profile gets its stand-ins (`sgilo.smoke`) at 32² from a server on 127.0.0.1: the same
download, pickle conversion and LPIPS loading as the real run. This is the test that would have caught `cs` cells
crashing on the FFHQ profile's perceptual loss.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from sgilo.config import load_params
from sgilo.loader import merge
from sgilo.smoke import (
    STANDIN_NOTE,
    check_table,
    run_workflow,
    serve,
    write_standins,
    write_torch_weights,
)

from conftest import REPO, TINY

# profiles/ffhq-smoke differs from profiles/ffhq only in count, source and device keys (tests/test_config.py's drift
# test), all of which `toy` sets: at toy scale the two are one run, and `make smoke-ffhq` runs the smoke profile itself.
SAME_AS = {REPO / "profiles/ffhq-smoke/params.yaml": REPO / "profiles/ffhq/params.yaml"}
PROFILES = sorted({REPO / "params.yaml", *REPO.glob("profiles/*/params.yaml")} - set(SAME_AS))


def toy(profile: dict, url: str) -> dict:
    """`profile` with sizes, counts, URLs and devices at toy scale and every other key as it was."""
    out = copy.deepcopy(profile)

    def section(name: str) -> dict:
        return out.setdefault(name, {})

    download = section("download")
    download["resolution"] = 32
    # Only the sections a profile has: the one its dataset and its generator source choose (sgilo.config).
    if "synthfaces" in download:
        download["synthfaces"].update(n_train=24, n_test=4)
    if "ffhq" in download:
        download["ffhq"].update(
            metadata_url=f"{url}/ffhq-dataset-v1.json",
            mirror_url=url,
            metadata_size=0,
            metadata_md5="",
            index_start=0,
            index_stop=8,
            workers=2,
            retries=2,
            timeout_s=30.0,
        )
    generator = section("generator")
    generator["architecture"] = dict(TINY["generator"]["architecture"])
    if "train" in generator:
        generator["train"].update(steps=4, batch_size=4, checkpoint_every=2, r1_every=2, disc_channel_max=16)
    if "pretrained" in generator:
        generator["pretrained"].update(url=f"{url}/ffhq.pkl", retries=2, sha256="", md5="")
    generator.update(latent_avg_samples=256, grid_rows=2, threads=1)
    invert = section("invert")
    invert["phases"] = [{**phase, "steps": 1} for phase in invert.get("phases", [])] or TINY["invert"]["phases"]
    invert.update(images=4, shard_size=2, batch_size=2, device="cpu", threads=1)
    if invert.get("generated", 0):
        invert.update(generated=4, generated_shard_size=4)
    section("trajectories").update(draws=1, held_out=0.25, threads=1)
    score = section("score")
    heads = score.get("model", {}).get("heads", 1)
    score["model"] = {**score.get("model", {}), "width": 8 * heads, "depth": 1, "mlp": 16}
    score.update(epochs=1, batch_size=4, warmup_steps=1, samples=2, sample_steps=2, device="cpu", threads=1)
    evaluate = section("evaluate")
    # One level per task (the middle one): every task and its kind of level, a sixth of the cells.
    evaluate["tasks"] = [
        {**task, "levels": [task["levels"][len(task["levels"]) // 2]]} for task in evaluate.get("tasks", [])
    ] or TINY["evaluate"]["tasks"]
    evaluate.update(images=1, batch_size=1, figure_images=1, device="cpu", threads=1)
    evaluate.setdefault("sgilo", {}).update(steps=1, chains=2)
    evaluate.setdefault("gnc", {}).update(steps=1)
    tune = evaluate.setdefault("tune", {})
    tune["validation"] = 1
    for grid in ("ilo_radius_scale", "sgilo_weight", "gnc_weight"):
        if grid in tune:
            tune[grid] = tune[grid][:2]
    section("report").update(fid_samples=2, device="cpu", threads=1)
    for theory in ("theory_gnc", "theory_langevin", "theory_igo"):
        out[theory] = merge(section(theory), TINY[theory])
    return out


@pytest.mark.parametrize("profile", PROFILES, ids=lambda path: str(path.relative_to(REPO)))
def test_every_shipped_profile_runs_to_table1_at_toy_scale(profile: Path, tmp_path: Path) -> None:
    served, torch_home, workdir = tmp_path / "served", tmp_path / "torch", tmp_path / "run"
    served.mkdir()
    with serve(served, "127.0.0.1", 0) as url:
        params_file = tmp_path / "params.yaml"
        params_file.write_text(yaml.safe_dump(toy(yaml.safe_load(profile.read_text()), url), sort_keys=False))
        params = load_params(params_file)
        if params.download.dataset == "ffhq" or params.generator.source == "pretrained":
            write_standins(params, served, torch_home)
        else:
            write_torch_weights(torch_home, seed=0)
        done = run_workflow(params_file, workdir, torch_home, cores="2", capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-4000:]
    table = check_table(workdir / "results" / "table1.csv", params)
    assert len(table) == sum(len(t.levels) for t in params.evaluate.tasks) * len(params.evaluate.methods)
    # Stand-in weights are named on the table and at the top of report.md; real or trained ones are not.
    standin = params.generator.source == "pretrained"
    assert set(table.get("weights", [])) == ({STANDIN_NOTE} if standin else set())
    assert (STANDIN_NOTE in (workdir / "results" / "report.md").read_text().split("\n\n")[1]) == standin


def test_every_profile_is_run_or_is_the_same_as_one_that_is() -> None:
    """A new profile joins the parametrisation by itself; one left out must shrink to a run profile's toy version."""
    for left_out, same in SAME_AS.items():
        assert same in PROFILES
        shrunk = [toy(yaml.safe_load(path.read_text()), "http://127.0.0.1:1") for path in (left_out, same)]
        for profile in shrunk:
            for section in (
                "invert",
                "score",
                "evaluate",
            ):  # the smoke profile's `auto` where the GPU one names tf32/bf16
                profile[section].pop("precision")
            # levels and tuning grids: the smoke profile keeps a subset of the same kind, which `toy` shrinks apart
            profile["evaluate"]["tasks"] = [task["task"] for task in profile["evaluate"]["tasks"]]
            profile["evaluate"]["tune"] = {
                key: len(value) if isinstance(value, list) else value
                for key, value in profile["evaluate"]["tune"].items()
            }
        assert shrunk[0] == shrunk[1]


def test_toy_keeps_every_switch_of_the_ffhq_profile() -> None:
    """The shrinking itself must not drop a switch: the keys it may change are listed, every other one is equal."""
    real = yaml.safe_load((REPO / "profiles/ffhq/params.yaml").read_text())
    shrunk = toy(real, "http://127.0.0.1:1")

    def flat(tree: dict, prefix: str = "") -> dict:
        out = {}
        for key, value in tree.items():
            out.update(flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value})
        return out

    before, after = flat(real), flat(shrunk)
    changed = {key for key in before if before[key] != after.get(key)}
    allowed_sections = ("download.ffhq.", "generator.architecture.", "generator.pretrained.", "score.model.", "theory_")
    allowed = {
        "download.resolution",
        "generator.latent_avg_samples",
        "generator.grid_rows",
        "generator.threads",
        "invert.phases",
        "invert.images",
        "invert.shard_size",
        "invert.batch_size",
        "invert.device",
        "invert.threads",
        "trajectories.draws",
        "trajectories.held_out",
        "trajectories.threads",
        "score.epochs",
        "score.batch_size",
        "score.warmup_steps",
        "score.samples",
        "score.sample_steps",
        "score.device",
        "score.threads",
        "evaluate.tasks",
        "evaluate.images",
        "evaluate.batch_size",
        "evaluate.figure_images",
        "evaluate.device",
        "evaluate.threads",
        "evaluate.sgilo.steps",
        "evaluate.sgilo.chains",
        "evaluate.gnc.steps",
        "evaluate.tune.validation",
        "evaluate.tune.ilo_radius_scale",
        "evaluate.tune.sgilo_weight",
        "evaluate.tune.gnc_weight",
        "report.fid_samples",
        "report.device",
        "report.threads",
    }
    assert {key for key in changed if key not in allowed and not key.startswith(allowed_sections)} == set()
    assert [s["layer"] for s in shrunk["invert"]["phases"]] == [s["layer"] for s in real["invert"]["phases"]]
    assert [t["task"] for t in shrunk["evaluate"]["tasks"]] == [t["task"] for t in real["evaluate"]["tasks"]]
    assert shrunk["score"]["model"]["heads"] == real["score"]["model"]["heads"]
