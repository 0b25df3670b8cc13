"""The workings of `sgilo dvc-sync`, `sgilo push` and `sgilo pull`: the command line's side, not a library module (it
drives Snakemake and DVC and writes dvc.yaml). One pipeline definition for two tools. Snakemake runs the stages; DVC
records their outputs and moves them through a remote. `dvc.yaml` is generated from the Snakemake workflow: one DVC
stage per Snakemake job, with the job's command, its inputs (data and the code it runs), the params keys its rule
tracks, and its outputs.

The two tools clash when both manage the same files (treeverse/dvc#8602): `dvc repro` deletes outputs before it runs
a stage, and a checkout writes files in an arbitrary order, so Snakemake, which compares modification times, would
redo the work. Hence the split: Snakemake alone runs stages; `push` records what Snakemake finished (`dvc commit`)
and uploads it; `pull` downloads, checks with `dvc status` that every output matches `dvc.lock`, and only then lets
Snakemake mark the outputs as up to date (`snakemake --touch`), which also writes the metadata it uses to notice a
later change of params or code. `push` refuses outputs that something else wrote after Snakemake (`foreign_outputs`).

The loss histories and the data of the curves and speed figures are DVC plots, Table 1's means (results/metrics.json)
and the stages' own summaries DVC metrics, so that `dvc plots diff` and `dvc metrics diff` compare two runs.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from sgilo.config import TASK_LEVELS
from sgilo.io import atomic_open
from sgilo.loader import has_key

DVC_YAML = "dvc.yaml"
HEADER = (
    "# Generated from the Snakefile by `sgilo dvc-sync` for {params}: do not edit (a test fails when it drifts).\n"
    "# One stage per Snakemake job. Snakemake runs them; DVC records and shares their outputs (sgilo push / pull).\n"
    "#\n"
    "# Never run `dvc repro` (or `dvc exp run`, which runs it) here: Snakemake owns execution. dvc repro would rerun\n"
    "# stages in its own order on its own triggers, not the params keys, code and rerun triggers Snakemake tracks; it\n"
    "# deletes and rewrites outputs behind Snakemake's back, so Snakemake's metadata (.snakemake/) no longer describes\n"
    "# them and Snakemake may redo or keep the wrong work. `sgilo push` refuses outputs written after Snakemake\n"
    "# recorded them; rerun their rules with `snakemake --forcerun RULE`. Compare two runs with `dvc plots diff REV`\n"
    "# and `dvc metrics diff REV` (docs/sharing.md).\n"
)
METRICS = {"metrics.json", "summary.json"}
# Plots and metrics keep DVC's default `cache: true`. DVC's docs offer `cache: false` for small files that git should
# version instead, but git never tracks this project's outputs (.gitignore): a file both git and Snakemake write would
# change under Snakemake at every checkout, and `sgilo push` could no longer tell Snakemake's writes from others.
# Cached, they travel through the remote with the other outputs, and `dvc plots diff REV` reads an old revision's
# copy from the cache (or the remote) by its hash in that revision's dvc.lock.
#
# DVC draws every plot output on its own, besides each top-level definition, so each plot file carries the view that
# shows it (stage-level `plots:`; templates in .dvc/plots/), and a top-level definition is added only where a view
# needs several columns of one file: a loss history's losses together.
LOSS_HISTORIES = {  # path: (its own view, the id and view of its losses together)
    "results/generator/history.csv": (
        {"x": "step", "y": "g_loss", "title": "generator: G loss", "y_label": "G loss"},
        ("generator-losses", {"x": "step", "y": ["d_loss", "g_loss"], "title": "generator: D and G losses"}),
    ),
    "results/score/history.csv": (
        {
            "x": "step",
            "y": "held_out_loss",
            "title": "score model: held-out loss (EMA weights)",
            "y_label": "held-out loss",
        },
        (
            "score-losses",
            {"x": "step", "y": ["train_loss", "held_out_loss"], "title": "score model: training and held-out loss"},
        ),
    ),
}
CURVES = re.compile(r"results/plots/curves_(\w+)\.csv")
SPEED = "results/plots/speed.csv"


def plot_view(path: str) -> dict[str, str] | None:
    """How DVC draws an output as a plot (its stage-level `plots:` entry); None for an output that is not a plot."""
    if path in LOSS_HISTORIES:
        return LOSS_HISTORIES[path][0]
    if curves := CURVES.fullmatch(path):
        task = curves.group(1)
        level = TASK_LEVELS[task].label if task in TASK_LEVELS else "level"
        return {
            "x": "level",
            "y": "mean",
            "template": "curves",
            "title": f"{task}: mean over test images by method",
            "x_label": level,
            "y_label": "mean",
        }
    if path == SPEED:
        return {
            "x": "seconds_per_image",
            "y": "mse_mean",
            "template": "speed",
            "title": "accuracy against time",
            "x_label": "seconds per image",
            "y_label": "mean MSE",
        }
    return None


def top_level_plots(outputs: Sequence[str]) -> list[dict[str, Any]]:
    """dvc.yaml's top-level `plots:` for these outputs: each loss history's losses on one chart."""
    plots = []
    for path, (_, (name, view)) in LOSS_HISTORIES.items():
        if path in outputs:  # the generator's history exists only for a generator trained here
            plots.append({name: {**view, "y": {path: view["y"]}}})
    return plots


class SharingError(RuntimeError):
    """A step of sharing outputs failed; the message says which and what to do."""


@dataclass(frozen=True)
class DvcStage:
    """A Snakemake job as DVC sees it."""

    name: str
    cmd: str
    deps: tuple[str, ...]
    params: tuple[str, ...]
    outs: tuple[str, ...]


def _stage_name(rule: str, wildcards: dict[str, str]) -> str:
    # DVC stage names allow letters, digits, "_" and "-" only.
    return "-".join([rule, *(re.sub(r"[^A-Za-z0-9_-]", "_", str(value)) for value in wildcards.values())])


def _relative(path: str, root: Path) -> str:
    absolute = Path(path) if os.path.isabs(path) else root / path
    try:
        return absolute.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        raise SharingError(f"{path} lies outside {root}: run the workflow from the repository root for DVC") from None


@contextmanager
def _snakemake_dag(root: Path, params_file: str, targets: Sequence[str]) -> Iterator[Any]:
    """Snakemake's workflow with the DAG of every job that builds `targets` from scratch under `params_file`; inside
    the block the working directory is `root`, as Snakemake's relative paths need."""
    from snakemake.api import SnakemakeApi
    from snakemake.settings.enums import Quietness
    from snakemake.settings.types import (
        ConfigSettings,
        DAGSettings,
        OutputSettings,
        ResourceSettings,
        StorageSettings,
    )

    cwd = os.getcwd()
    try:
        with SnakemakeApi(OutputSettings(quiet={Quietness.ALL})) as api:
            workflow_api = api.workflow(
                resource_settings=ResourceSettings(cores=1),
                config_settings=ConfigSettings(
                    configfiles=[] if params_file == "params.yaml" else [root / params_file]
                ),
                storage_settings=StorageSettings(),
                snakefile=root / "Snakefile",
                workdir=root,
            )
            workflow_api.dag(dag_settings=DAGSettings(targets=set(targets), forceall=True))
            workflow = workflow_api._workflow  # the public API prints the DAG; the jobs themselves are not exposed
            workflow._prepare_dag(forceall=True, ignore_incomplete=True, lock_warn_only=True, nolock=True)
            workflow._build_dag()
            yield workflow
    except SystemExit as exc:  # the Snakefile exits with the params error
        raise SharingError(str(exc.code)) from None
    finally:
        os.chdir(cwd)


def workflow_stages(root: Path, params_file: str = "params.yaml", targets: Sequence[str] = ("all",)) -> list[DvcStage]:
    """Every job Snakemake would run to build `targets` from scratch under `params_file`, as DVC stages.

    Optional params keys the file leaves out (sgilo.config: e.g. the section of a dataset not chosen) are left out,
    since DVC can only track keys the file has."""
    root = root.resolve()
    params_path = root / params_file
    params_file = _relative(params_file, root)  # as dvc.yaml and the stage commands name it
    if not params_path.is_file():
        raise SharingError(f"{params_path} not found: pass the params file the workflow runs with")
    raw = yaml.safe_load(params_path.read_text()) or {}
    with _snakemake_dag(root, params_file, targets) as workflow:
        jobs = list(workflow.dag.jobs)
        rule_order = [rule.name for rule in workflow.rules]
        executable = workflow.globals["PY"]
        extra_outs = workflow.globals.get("DVC_OUTS", {})

    stages = []
    for job in sorted(
        jobs, key=lambda job: (rule_order.index(job.rule.name), _stage_name(job.rule.name, dict(job.wildcards)))
    ):
        if job.rule.norun:
            continue
        cmd = job.shellcmd.replace(executable, "python")
        for log in job.log:  # DVC runs the bare command; the logs belong to Snakemake's runs
            cmd = cmd.replace(f"2> {log}", "")
        directories = [_relative(path, root) for path in extra_outs.get(job.rule.name, [])]
        outs = [_relative(path, root) for path in job.output]
        outs = directories + [out for out in outs if not any(out.startswith(d + "/") for d in directories)]
        tracked = getattr(job.params, "tracked", {})
        stages.append(
            DvcStage(
                name=_stage_name(job.rule.name, dict(job.wildcards)),
                cmd=" ".join(cmd.split()),
                deps=tuple(dict.fromkeys(_relative(path, root) for path in job.input)),
                params=tuple(key for key in tracked if has_key(raw, key)),
                outs=tuple(outs),
            )
        )
    names = [stage.name for stage in stages]
    if len(set(names)) != len(names):
        raise SharingError(f"two jobs map to one DVC stage name among {sorted(names)}")
    return stages


def dvc_yaml(stages: Sequence[DvcStage], params_file: str = "params.yaml") -> str:
    """The text of dvc.yaml for these stages. An output is listed once: as a metric, a plot or a plain out."""
    entries = {}
    for stage in stages:
        entry: dict[str, Any] = {"cmd": stage.cmd, "deps": list(stage.deps)}
        if stage.params:
            entry["params"] = (
                list(stage.params) if params_file == "params.yaml" else [{params_file: list(stage.params)}]
            )
        metrics = [out for out in stage.outs if Path(out).name in METRICS]
        plots = [{out: view} for out in stage.outs if out not in metrics and (view := plot_view(out))]
        outs = [out for out in stage.outs if out not in metrics and not plot_view(out)]
        for key, value in (("outs", outs), ("metrics", metrics), ("plots", plots)):
            if value:
                entry[key] = value
        entries[stage.name] = entry
    top = top_level_plots([out for stage in stages for out in stage.outs])
    body = yaml.safe_dump(
        {"plots": top, "stages": entries} if top else {"stages": entries},
        sort_keys=False,
        width=1000,
        default_flow_style=False,
    )
    return HEADER.format(params=params_file) + body


def sync(root: Path, params_file: str = "params.yaml", check: bool = False) -> bool:
    """Write dvc.yaml from the Snakefile, or with `check`, only say whether it is current. True when it was current."""
    params_file = _relative(params_file, root)
    text = dvc_yaml(workflow_stages(root, params_file), params_file)
    path = root / DVC_YAML
    current = path.is_file() and path.read_text() == text
    if not current and not check:
        with atomic_open(path) as handle:
            handle.write(text)
    return current


def _snakemake(root: Path, params_file: str, target: str, *args: str) -> str:
    command = [sys.executable, "-m", "snakemake", "--cores", "1", target, "--configfile", params_file, *args]
    result = subprocess.run(command, cwd=root, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
        raise SharingError(f"snakemake {' '.join(args)} failed in {root}:\n{tail}")
    return result.stdout + result.stderr


@contextmanager
def _dvc_repo(root: Path, remote: str | None, what: str, fix: str) -> Iterator[Any]:
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    try:
        # verify: DVC rehashes every object it downloads, so a damaged object is refused like a missing one
        with Repo(str(root), remote=remote, remote_config={"verify": True}) as repo:
            yield repo
    except (DvcException, ValueError) as exc:  # ValueError: no remote named and no default one
        raise SharingError(f"{what} failed in {root}: {exc}\n{fix}") from None


def foreign_outputs(root: Path, params_file: str = "params.yaml", target: str = "all") -> dict[str, list[str]]:
    """The outputs of `target`'s jobs that something other than Snakemake wrote after Snakemake finished their job,
    by rule.

    When Snakemake finishes a job (or marks it done with `--touch`, as `sgilo pull` does) it stores each output's
    modification time in its metadata (`endtime`). Whatever rewrites the file later, `dvc repro`, a `dvc checkout`
    outside `sgilo pull` or a copy, gives it another modification time, which no rerun trigger of Snakemake's looks
    at; a file Snakemake holds no record of was not finished by it. Outputs that are missing, or whose job Snakemake
    marks incomplete, are `snakemake --dry-run`'s business: Snakemake reruns them."""
    from snakemake.common import async_run

    async def compare(workflow: Any) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        for job in (job for job in workflow.dag.jobs if not job.rule.norun):
            incomplete = {str(path) for path in await workflow.persistence.incomplete(job)}
            for output in job.output:
                if not os.path.lexists(output) or str(output) in incomplete:
                    continue
                record = workflow.persistence.metadata(output)
                # read as Snakemake read it to store `endtime` (the link itself, a directory's timestamp file)
                mtime = (await output.mtime_uncached(skip_storage=True)).local_or_storage()
                if record is None or record.endtime != mtime:
                    found.setdefault(job.rule.name, []).append(_relative(str(output), root))
        return found

    root = root.resolve()
    with _snakemake_dag(root, _relative(params_file, root), [target]) as workflow:
        return async_run(compare(workflow))


def push(root: Path, remote: str | None = None, params_file: str = "params.yaml", target: str = "all") -> None:
    """Record the outputs Snakemake finished in dvc.lock and upload them. Refuses when Snakemake still has work to do,
    or when an output was written by something else since Snakemake finished it, so that a remote never holds outputs
    that disagree with the code and params they claim to come from."""
    if not sync(root, params_file, check=True):
        raise SharingError(f"{root / DVC_YAML} does not match the Snakefile: run `sgilo dvc-sync` and commit it")
    at = "" if target == "all" else f" {target}"
    # Before the dry run: after `dvc repro` of an early stage, the dry run would rerun only what follows it.
    if foreign := foreign_outputs(root, params_file, target):
        files = [path for paths in foreign.values() for path in paths]
        listed = ", ".join(files[:10]) + (f" and {len(files) - 10} more" if len(files) > 10 else "")
        raise SharingError(
            f"{listed}: not written by Snakemake (changed since Snakemake finished their jobs, or unknown to it). "
            "`dvc repro` does this, and must not be used here (dvc.yaml's header says why). Rerun their rules "
            f"with Snakemake, which records what it writes: `snakemake --cores all{at} --forcerun {' '.join(foreign)}`, "
            "then push again (outputs a plain `dvc pull` or `dvc checkout` wrote: `sgilo pull` instead)."
        )
    if "Nothing to be done" not in _snakemake(root, params_file, target, "--dry-run"):
        raise SharingError(
            f"snakemake still has jobs to run for {target}: run `snakemake --cores all{at}` before pushing"
        )
    with _dvc_repo(root, remote, "dvc push", "check the remote (`dvc remote list`) and its credentials") as repo:
        repo.commit(force=True, relink=False)  # relink would rewrite the outputs, newer than what Snakemake recorded
        repo.push(remote=remote)


def pull(root: Path, remote: str | None = None, params_file: str = "params.yaml", target: str = "all") -> None:
    """Download the outputs dvc.lock records, check them, and tell Snakemake they are up to date."""
    if not (root / "dvc.lock").is_file():
        raise SharingError(f"{root / 'dvc.lock'} not found: a teammate must `sgilo push` and commit dvc.lock first")
    fix = (
        "The remote lacks these objects or holds damaged copies (they were not checked out): `sgilo push` again from "
        "a clone whose outputs are complete, or rerun the stages with snakemake. Snakemake was not told anything."
    )
    with _dvc_repo(root, remote, "dvc pull", fix) as repo:
        repo.pull(remote=remote)
        changed = repo.status()
    if changed:
        raise SharingError(
            f"after the pull, these stages do not match dvc.lock: {', '.join(sorted(changed))}. "
            "Snakemake was not told they are current; rerun them with snakemake."
        )
    # a checkout writes files in any order: let Snakemake restore its order and record its metadata for every job
    _snakemake(root, params_file, target, "--touch", "--forceall")
