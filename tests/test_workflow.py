"""The Snakemake workflow end to end on the tiny profile: what it runs, and what a change makes it rerun."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sgilo import code_graph
from sgilo.config import load_params
from sgilo.stylegan2 import load_generator

from conftest import REPO, copy_project, snakemake_in, write_params


def snakemake(workdir: Path, params: Path, *extra: str) -> subprocess.CompletedProcess:
    command = [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir),
        "--cores",
        "2",
        "--configfile",
        str(params),
        *extra,
    ]
    return subprocess.run(command, check=False, capture_output=True, text=True, timeout=900)


def planned_jobs(result: subprocess.CompletedProcess) -> set[str]:
    return set(re.findall(r"^rule (\w+):", result.stdout + result.stderr, flags=re.MULTILINE)) - {"all"}


def planned_methods(result: subprocess.CompletedProcess) -> set[str]:
    """The methods of the tune/evaluate cells a dry run would run."""
    return set(re.findall(r"wildcards: task=\w+, level=[^,]+, method=([\w-]+)", result.stdout + result.stderr))


def test_pipeline_runs_and_reruns_only_what_changed(tiny_project):
    root, params = tiny_project, tiny_project / "params.yaml"
    assert load_generator(root / "results/generator/generator.pt").size == 32
    assert "generator" in (root / "logs/generator.log").read_text()
    assert sorted(p.name for p in (root / "results/invert/shards").iterdir()) == [
        "shard-00000.safetensors",
        "shard-00001.safetensors",
    ]
    assert json.loads((root / "results/invert/summary.json").read_text())["images"] == 12
    assert (root / "results/score/samples.png").exists()
    table = (root / "results/table1.csv").read_text().splitlines()
    assert len(table) == 1 + 5  # one task, one level, five methods

    def plan(*extra: str) -> subprocess.CompletedProcess:
        return snakemake_in(root, "-n", *extra)

    evaluation = {"tune", "evaluate", "report"}
    # theory_igo shows the scaled demo latents, so it follows the latents; the other theory rules need no data
    downstream_of_invert = {
        "invert",
        "invert_summary",
        "trajectories_stats",
        "trajectories",
        "score",
        "theory_igo",
    } | evaluation
    prior = {"trajectories_stats", "trajectories", "score", "theory_igo"} | evaluation
    assert planned_jobs(plan()) == set()
    try:
        write_params(params, {"report": {"confidence": 0.9}})
        assert planned_jobs(plan()) == {"report"}
        write_params(params, {"evaluate": {"gnc": {"steps": 4}}})
        run = plan()
        assert planned_jobs(run) == evaluation and planned_methods(run) == {"gnc"}
        write_params(params, {"evaluate": {"images": 2}})
        run = plan()
        assert planned_jobs(run) == {"evaluate", "report"} and planned_methods(run) == {
            "csgm",
            "ilo",
            "ilo-unconstrained",
            "sgilo",
            "gnc",
        }
        write_params(params, {"score": {"epochs": 3}})
        run = plan()
        assert planned_jobs(run) == {"score"} | evaluation and planned_methods(run) == {"sgilo", "gnc"}
        write_params(params, {"trajectories": {"draws": 3}})
        assert planned_jobs(plan()) == {"trajectories_stats", "trajectories", "score", "theory_igo"} | evaluation
        write_params(params, {"theory_langevin": {"steps": 50}})
        assert planned_jobs(plan()) == {"theory_langevin", "report"}
        write_params(params, {"invert": {"geocross": 0.02}})  # the generated latents need no ILO: not redrawn
        assert planned_jobs(plan()) == downstream_of_invert
        write_params(params, {"invert": {"precision": "bf16"}})  # the generated latents are drawn in fp32
        assert planned_jobs(plan()) == downstream_of_invert
        write_params(params, {"invert": {"generated": 6}})
        assert planned_jobs(plan()) == {"invert_generated"} | prior
        write_params(params, {"generator": {"grid_rows": 3}})
        assert planned_jobs(plan()) == {"generator", "invert_generated"} | downstream_of_invert
        write_params(params, {"download": {"synthfaces": {"n_train": 40}}})
        assert planned_jobs(plan()) == {"download", "generator", "invert_generated"} | downstream_of_invert
    finally:
        write_params(params)
    assert planned_jobs(plan()) == set()

    # editing a stage's module reruns that stage and what its outputs feed; the score stage feeds the prior's cells
    for module, expected, methods in (
        ("stages/report.py", {"report"}, set()),
        ("stages/score.py", {"score"} | evaluation, {"sgilo", "gnc"}),
    ):
        path = root / "src" / "sgilo" / module
        original, stat = path.read_bytes(), path.stat()
        try:
            path.write_bytes(original + b"\n# edited\n")
            run = plan()
            assert planned_jobs(run) == expected and planned_methods(run) == methods, module
        finally:
            path.write_bytes(original)
            os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert planned_jobs(plan()) == set()


def test_configfile_selects_a_profile_and_config_overrides_a_key(tiny_project, tmp_path):
    """Snakemake's own configuration: `--configfile FILE` is the profile and `--config section={key: value}` overrides
    a key of it; the stages read exactly the merged params; thread counts set speed and rerun nothing."""
    root = tiny_project
    profile = write_params(tmp_path / "profile.yaml", {"report": {"confidence": 0.9}})
    assert planned_jobs(snakemake_in(root, "-n", "--configfile", str(profile))) == {"report"}
    run = snakemake_in(root, "-n", "-p", "--config", "report={confidence: 0.9}")
    assert planned_jobs(run) == {"report"}
    merged = re.search(r"sgilo\.stages\.report --params (\S+)", run.stdout + run.stderr).group(1)
    assert load_params(root / merged) == load_params(profile)
    assert {"download", "generator", "invert", "score"} <= planned_jobs(snakemake_in(root, "-n", "--config", "seed=4"))
    threads = [
        "generator={train: {threads: 2}}",
        *(f"{section}={{threads: 2}}" for section in ("invert", "trajectories", "score", "evaluate", "report")),
    ]
    assert planned_jobs(snakemake_in(root, "-n", "--config", *threads)) == set()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--config", "invert={imags: 2}"), "error: --config: unknown key invert.imags; allowed keys under invert:"),
        (("--config", "evaluate={images: many}"), "error: --config: evaluate.images: expected int >= 1, got 'many'"),
        (("--config", "imags=2"), "error: --config: unknown key imags; allowed keys under top level:"),
        (("--config", "params=profiles/ffhq/params.yaml"), "select a profile with Snakemake's own --configfile FILE"),
    ],
)
def test_a_wrong_config_key_or_value_stops_the_run_naming_it(tmp_path, extra, message):
    run = snakemake(tmp_path, write_params(tmp_path / "params.yaml"), "-n", *extra)
    assert run.returncode != 0 and message in run.stdout + run.stderr, run.stderr[-2000:]
    assert "Traceback" not in run.stdout + run.stderr and not planned_jobs(run)


def rule_bodies() -> list[tuple[Path, str, str]]:
    """(rule file, rule name, the rule's indented body) for every rule of workflow/rules."""
    return [
        (smk, name, body)
        for smk in sorted((REPO / "workflow" / "rules").glob("*.smk"))
        for name, body in re.findall(r"^rule (\w+):\n((?:(?:    .*)?\n)+)", smk.read_text(), flags=re.MULTILINE)
    ]


def test_every_rule_declares_threads_and_passes_them_to_its_stage(tiny_project):
    """So that `--cores N` and a cluster's cpus_per_task are what the jobs use, never more."""
    rules = []
    for smk, name, body in rule_bodies():
        rules.append(name)
        assert re.search(r"^    threads:", body, flags=re.MULTILINE), f"rule {name} ({smk.name}) declares no threads"
        assert "--threads {threads}" in body, f"rule {name} ({smk.name}) does not pass its threads to its stage"
    assert len(rules) == 14  # every rule but `all`
    for log in ("generator.log", "invert/shard-00000.log", "score.log", "theory_igo.log"):
        assert "CPU threads: 1" in (tiny_project / "logs" / log).read_text(), log


def test_the_score_models_path_goes_before_the_cells_that_do_not_need_it(tmp_path):
    """On few cores the jobs the score model needs (inversions of real and generated latents, trajectories, score)
    run before the CSGM and ILO cells, which are ready as soon as the generator is: every SGILO and GNC cell waits
    for the score model, so it is the critical path. Snakemake orders ready jobs by `priority:`."""
    run = snakemake(tmp_path, write_params(tmp_path / "params.yaml"), "-n", "results/score/model.pt")
    assert run.returncode == 0, run.stderr[-3000:]
    path = planned_jobs(run) - {"download", "generator"}  # every job needs these two: their priority decides nothing
    assert {"invert", "invert_generated", "trajectories", "score"} <= path
    priority = {}
    for _, name, body in rule_bodies():
        found = re.search(r"^    priority: (\d+)", body, flags=re.MULTILINE)
        priority[name] = int(found.group(1)) if found else 0
    cells = max(priority["tune"], priority["evaluate"])
    assert {rule: priority[rule] for rule in path if priority[rule] <= cells} == {}


def test_bad_params_stop_the_workflow_before_any_job(tmp_path):
    params = write_params(tmp_path / "params.yaml", {"generator": {"train": {"lr": -1}}})
    run = snakemake(tmp_path, params, "-n")
    assert run.returncode != 0
    assert "generator.train.lr" in run.stdout + run.stderr
    assert "Traceback" not in run.stdout + run.stderr
    assert not (tmp_path / "data").exists()


def test_slurm_profile_plans_the_ffhq_profile_with_gpus(tmp_path):
    """The cluster profile and the paper-scale profile together: 60 invert shards and 70 evaluate cells, GPU rules on
    the GPU partition, planned (not run) without a cluster."""
    run = snakemake(
        tmp_path,
        REPO / "profiles" / "ffhq" / "params.yaml",
        "-n",
        "--workflow-profile",
        str(REPO / "workflow" / "profiles" / "slurm"),
        "results/table1.csv",
    )
    assert run.returncode == 0, run.stderr[-3000:]
    output = run.stdout + run.stderr
    stats = dict(re.findall(r"^(\w+)\s+(\d+)$", output, flags=re.MULTILINE))
    assert (stats["invert"], stats["trajectories"], stats["tune"], stats["evaluate"]) == ("60", "60", "42", "70")
    invert = output[output.index("rule invert:") :].split("\n\n")[0]
    assert "slurm_partition=gpu" in invert and "gpu=1" in invert


# The rules whose stage has another name: the rest run sgilo.stages.<rule>.
STAGE_OF = {
    "invert_summary": "invert",
    "invert_generated": "invert",
    "trajectories_stats": "trajectories",
    "tune": "evaluate",
}


def test_every_rule_depends_on_exactly_the_code_its_stage_runs(tmp_path):
    """Editing any module a stage imports reruns that stage, and editing one it does not import reruns nothing: a
    rule's code inputs are its stage's import graph (sgilo.code_graph), and the theory and score stages, which draw
    figures, do not depend on Table 1's code."""
    run = snakemake(tmp_path, write_params(tmp_path / "params.yaml"), "-n", "all")
    assert run.returncode == 0, run.stderr[-3000:]
    stage_of = STAGE_OF
    checked = set()
    for rule, inputs in re.findall(r"^rule (\w+):\n    input: ([^\n]*)", run.stdout + run.stderr, flags=re.MULTILINE):
        if rule == "all":
            continue
        listed = {Path(item.strip()) for item in inputs.split(",") if item.strip().endswith(".py")}
        stage = stage_of.get(rule, rule)
        assert listed == set(code_graph.sources(f"sgilo.stages.{stage}", REPO / "src")), rule
        assert (
            REPO / "src" / "sgilo" / "stages" / f"{stage}.py" in listed
            and REPO / "src" / "sgilo" / "config.py" in listed
        )
        if rule.startswith("theory") or rule == "score":
            assert REPO / "src" / "sgilo" / "report.py" not in listed, f"rule {rule} reruns when Table 1's code changes"
        checked.add(rule)
    assert {
        "download",
        "generator",
        "invert",
        "trajectories",
        "score",
        "tune",
        "evaluate",
        "report",
        "theory_gnc",
        "theory_langevin",
        "theory_igo",
    } <= checked


def test_a_second_snakemake_on_the_same_directory_is_refused_while_the_first_runs(tmp_path):
    root = copy_project(tmp_path / "project")
    target = "results/generator/generator.pt"
    command = [sys.executable, "-m", "snakemake", "--cores", "1", target]
    first = subprocess.Popen(command, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    locks = root / ".snakemake" / "locks"
    deadline = time.monotonic() + 120
    while not (locks.exists() and any(locks.iterdir())) and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert first.poll() is None, "the first run ended before it could be raced; give it a longer target"
    # Snakemake checks for incomplete outputs before it takes the lock: while one of the first run's jobs is running,
    # the second stops at its output ("Incomplete files"); between jobs, at the lock. Either way it is refused, and
    # following the first message's advice (--rerun-incomplete) meets the lock.
    second = subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=300, check=False)
    forced = subprocess.run(
        [*command, "--rerun-incomplete"], cwd=root, capture_output=True, text=True, timeout=300, check=False
    )
    assert first.poll() is None, "the first run ended before the others checked the lock; give it a longer target"
    assert second.returncode != 0 and ("cannot be locked" in second.stderr or "Incomplete files" in second.stderr), (
        second.stderr[-2000:]
    )
    assert forced.returncode != 0 and "LockException" in forced.stderr and "cannot be locked" in forced.stderr, (
        forced.stderr[-2000:]
    )
    assert first.wait(timeout=600) == 0, first.stderr.read()[-3000:]
    # The first run's outputs are whole and the second left nothing behind: a third run has nothing to do.
    assert load_generator(root / target).size == 32
    third = subprocess.run([*command, "--dry-run"], cwd=root, capture_output=True, text=True, timeout=300, check=False)
    assert third.returncode == 0 and "Nothing to be done" in third.stdout + third.stderr


# The generator's download cache of official weights (generator.source: pretrained): read and kept between runs, so
# neither an input nor an output of the rule; named in generator.smk's params.
CACHES = {"data/weights"}


def planned_commands(result: subprocess.CompletedProcess) -> list[dict]:
    """Each job of a `snakemake -n -p` run: its rule, inputs, outputs, log and benchmark, and its shell command."""
    jobs = []
    for block in re.split(r"^rule ", result.stdout + result.stderr, flags=re.MULTILINE)[1:]:
        fields = dict(re.findall(r"^    (\w+): (.*)$", block, flags=re.MULTILINE))
        command = re.search(r"^Shell command: (.*)$", block, flags=re.MULTILINE)
        jobs.append(
            {
                "rule": block.split(":", 1)[0],
                **{key: [item for item in fields.get(key, "").split(", ") if item] for key in ("input", "output")},
                "files": {item for key in ("log", "benchmark") for item in fields.get(key, "").split(", ") if item},
                "command": command.group(1) if command else None,
            }
        )
    return jobs


def test_every_stage_is_given_exactly_its_declared_files(tmp_path):
    """A stage writes exactly its rule's {output} and reads exactly its {input}: every file or folder its shell
    command names is one of them (or its log, the params file, the dataset folder the download rule writes or a
    download cache), and every output and every input but the code is named in it, so no stage derives a file name
    from another path. Its resume checkpoints beside its output are its own business."""
    run = snakemake(tmp_path, write_params(tmp_path / "params.yaml"), "-n", "-p", "all")
    assert run.returncode == 0, run.stderr[-3000:]
    jobs = [job for job in planned_commands(run) if job["rule"] != "all"]
    data = str(Path(next(job for job in jobs if job["rule"] == "download")["output"][0]).parent)
    for job in jobs:
        inputs = [item for item in job["input"] if not item.endswith(".py")]
        tokens = shlex.split(job["command"])
        assert tokens[1:3] == ["-m", f"sgilo.stages.{STAGE_OF.get(job['rule'], job['rule'])}"], job["command"]
        named = {token for token in tokens[3:] if "/" in token and token != tokens[tokens.index("--params") + 1]}
        # The dataset folder: what DVC tracks for the download rule (DVC_OUTS); others declare its index.csv.
        folders = {data} if f"{data}/index.csv" in inputs + job["output"] else set()
        undeclared = named - set(inputs) - set(job["output"]) - job["files"] - folders - CACHES
        assert not undeclared, f"rule {job['rule']} names files it does not declare: {sorted(undeclared)}"
        unnamed = [
            item for item in inputs + job["output"] if item not in named and Path(item).parent.as_posix() not in named
        ]
        assert not unnamed, f"rule {job['rule']} does not pass {unnamed} to its stage"
    assert {job["rule"] for job in jobs} == {
        "download",
        "generator",
        "invert",
        "invert_generated",
        "invert_summary",
        "trajectories_stats",
        "trajectories",
        "score",
        "tune",
        "evaluate",
        "theory_gnc",
        "theory_langevin",
        "theory_igo",
        "report",
    }


def test_a_finished_run_leaves_only_declared_files(tiny_project):
    """Every file a whole run wrote (outside Snakemake's .snakemake/) is a declared output, log or benchmark of one of
    its jobs, or inside the dataset folder: no stage writes beside its outputs what it was not told to, and no resume
    checkpoint is left once its job finished."""
    run = snakemake_in(tiny_project, "-n", "--forceall", target="all")
    assert run.returncode == 0, run.stderr[-3000:]
    jobs = planned_commands(run)
    declared = {item for job in jobs for item in job["output"]} | {item for job in jobs for item in job["files"]}
    data = Path(next(job for job in jobs if job["rule"] == "download")["output"][0]).parent
    written = {
        path.relative_to(tiny_project).as_posix()
        for folder in ("results", "logs", "data")
        for path in (tiny_project / folder).rglob("*")
        if path.is_file() and not path.is_relative_to(tiny_project / data)
    }
    assert not written - declared, f"files no job declares: {sorted(written - declared)}"
