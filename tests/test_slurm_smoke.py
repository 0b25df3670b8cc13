"""tools/slurm_cluster.py and tools/slurm_smoke.py (`make smoke-slurm`) without a cluster: the configuration they
write, how they read sacct and Snakemake's plan, and the sbatch lines the SLURM plugin builds from that plan. The
smoke run itself brings up SLURM daemons as root and takes minutes, so it stays a make target (docs/slurm.md)."""

from __future__ import annotations

import os
import re
import sys
from collections import Counter

import pytest
import yaml

from conftest import REPO

sys.path.insert(0, str(REPO / "tools"))
from slurm_cluster import Node, Ports, gres_conf, slurm_conf  # noqa: E402
from slurm_smoke import PROFILE, job_stats, layered_profile, parse_sacct, plan, planned_jobs, rule_of, sbatch_call  # noqa: E402

PORTS = Ports(slurmctld=7001, slurmd=7002, slurmdbd=7003, mysql=7004)


def settings(conf: str) -> list[str]:
    return conf.splitlines()


def test_slurm_conf_has_one_line_per_node_and_partition_and_keeps_everything_in_its_folder(tmp_path):
    nodes = [Node("vm", 2, 20000, gpus=2), Node("gpu01", 32, 512000, gpus=4, cloud=True)]
    conf = slurm_conf("c", tmp_path, PORTS, nodes, {"cpu": ["vm"], "gpu": ["vm", "gpu01"]})
    lines = settings(conf)
    assert "NodeName=vm NodeAddr=127.0.0.1 Port=7002 CPUs=2 RealMemory=20000 Gres=gpu:2 State=UNKNOWN" in lines
    assert any(
        re.fullmatch(
            r"NodeName=gpu01 NodeAddr=127\.0\.0\.1 Port=\d+ CPUs=32 RealMemory=512000 Gres=gpu:4 State=CLOUD", line
        )
        for line in lines
    )
    assert "PartitionName=cpu Nodes=vm Default=YES MaxTime=INFINITE State=UP" in lines
    assert "PartitionName=gpu Nodes=vm,gpu01 Default=NO MaxTime=INFINITE State=UP" in lines
    assert "GresTypes=gpu" in lines
    # the plugin's rule name is the job comment, which sacct shows only when asked to store it
    assert "AccountingStoreFlags=job_comment" in lines and "AccountingStoragePort=7003" in lines
    assert "JobAcctGatherParams=OverMemoryKill" in lines
    for line in lines:
        key, _, value = line.partition("=")
        if key.endswith(("File", "Location", "SpoolDir", "Pass")) or key == "AuthInfo":
            assert str(tmp_path) in value, line


def test_a_controller_without_accounting_has_no_slurmdbd_lines(tmp_path):
    lines = settings(slurm_conf("c", tmp_path, PORTS, [Node("n", 4, 1000)], {"cpu": ["n"]}, accounting=False))
    assert "AccountingStorageType=accounting_storage/none" in lines
    assert not any(line.startswith(("AccountingStorageHost", "AccountingStoreFlags")) for line in lines)
    assert "GresTypes=gpu" not in lines


def test_gres_conf_gives_each_stand_in_gpu_its_own_device_file():
    lines = gres_conf([Node("vm", 2, 1000, gpus=2), Node("other", 2, 1000)]).splitlines()
    assert lines == ["NodeName=vm Name=gpu File=/dev/null", "NodeName=vm Name=gpu File=/dev/zero"]
    with pytest.raises(ValueError, match="stand-in GPUs"):
        gres_conf([Node("vm", 2, 1000, gpus=9)])


def test_sacct_rows_and_the_plugins_comment_give_the_rule():
    text = (
        "12|rule_invert_wildcards_00000|CANCELLED by 0|0:15\n13|rule_invert_summary|COMPLETED|0:0\n"
        "14|rule_evaluate_wildcards_inpaint_0.25_sgilo|COMPLETED|0:0\n15||FAILED|1:0\n"
    )
    jobs = parse_sacct(text)
    assert [(j.jobid, j.rule, j.state) for j in jobs] == [
        ("12", "invert", "CANCELLED"),
        ("13", "invert_summary", "COMPLETED"),
        ("14", "evaluate", "COMPLETED"),
        ("15", None, "FAILED"),
    ]
    assert rule_of("rule_invert_generated_wildcards_00001") == "invert_generated"
    assert rule_of("wrap") is None


DRY_RUN = """Building DAG of jobs...
Job stats:
job         count
--------  -------
invert          2
report          1
total           3

[Fri Dec  4 09:31:10 2026]
rule invert:
    input: data/ffhq/index.csv
    output: results/invert/shards/shard-00027.safetensors
    jobid: 39
    wildcards: shard=00027
    priority: 40
    threads: 8
    resources: tmpdir=/tmp, mem_mb=7168, mem=7.17 GB, mem_mib=6836, disk_mb=<TBD>, slurm_account=, slurm_partition=gpu, runtime=720, gpu=1
Shell command: python -m sgilo.stages.invert --shard-index 27 --out results/invert/shards/shard-00027.safetensors --threads 8

[Fri Dec  4 09:31:10 2026]
rule invert:
    output: results/invert/shards/shard-00028.safetensors
    wildcards: shard=00028
    threads: 8
    resources: tmpdir=/tmp, mem_mb=7168, slurm_account=, slurm_partition=gpu, runtime=720, gpu=1

[Fri Dec  4 09:31:10 2026]
rule report:
    output: results/table1.csv
    threads: 4
    resources: tmpdir=/tmp, mem_mb=6144, slurm_account=, slurm_partition=cpu, runtime=120
"""


def test_the_plan_becomes_the_sbatch_lines_of_the_slurm_plugin():
    jobs = planned_jobs(DRY_RUN)
    assert job_stats(DRY_RUN) == Counter({"invert": 2, "report": 1}) == Counter(job.name for job in jobs)
    invert = sbatch_call(jobs[0], account="lab")
    for part in (
        "--comment rule_invert_wildcards_00027",
        "-A lab",
        "-p gpu",
        "-t 720",
        "--mem 7168",
        "--cpus-per-task=8",
        "--gpus=1",
    ):
        assert part in invert, part
    report = sbatch_call(jobs[2])
    for part in ("--comment rule_report", "-p cpu", "-t 120", "--mem 6144", "--ntasks=1", "--cpus-per-task=4"):
        assert part in report, part
    assert "--gpus" not in report and " -A " not in report


def test_the_ffhq_plan_through_the_slurm_profile_is_read_job_for_job(tmp_path):
    """Snakemake's own dry-run output, not a copy of it: each of its jobs parsed, with the profile's resources."""
    jobs, problems = plan(os.environ, tmp_path)
    assert jobs and not problems, problems
    profile = yaml.safe_load(PROFILE.read_text())
    invert = sbatch_call(next(job for job in jobs if job.name == "invert"))
    assert (
        f"--cpus-per-task={profile['set-threads']['invert']}" in invert and "--gpus=1" in invert and "-p gpu" in invert
    )
    assert f"--mem {profile['set-resources']['invert']['mem_mb']}" in invert


def test_the_one_node_profile_keeps_the_repositorys_resources_and_drops_its_threads():
    base = yaml.safe_load(PROFILE.read_text())
    layered = layered_profile(base, {"default-resources": {"slurm_account": "sgilo"}})
    assert layered["default-resources"] == {**base["default-resources"], "slurm_account": "sgilo"}
    assert layered["set-resources"] == base["set-resources"] and "set-threads" not in layered
