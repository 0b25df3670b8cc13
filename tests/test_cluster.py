"""sgilo.cluster: a SLURM job ended for its memory or time is reported with its rule and the resource to raise."""

from __future__ import annotations

from sgilo.cluster import print_resource_hints, resource_hints


def snakemake_error(rule: str, state: str, slurm_log: str = "/c/.snakemake/slurm_logs/rule_x/12.log") -> str:
    """An "Error in rule" block as Snakemake 9 prints it for a job of the SLURM executor plugin."""
    return (
        f"Error in rule {rule}:\n"
        f"    message: SLURM-job '12' failed, SLURM status is: '{state}'. Reason: Unknown.For further error details see the "
        "cluster/cloud log and the log files of the involved rule(s).\n"
        "    jobid: 3\n"
        f"    log: logs/{rule}.log, {slurm_log} (check log file(s) for error details)\n"
        "    shell:\n        python -m sgilo.stages.x 2> logs/x.log\n        (command exited with non-zero exit code)\n"
        "    external_jobid: 12\n"
    )


def test_a_job_killed_by_the_memory_poller_names_the_rule_mem_mb_and_what_it_held():
    log = "Building DAG of jobs...\n" + snakemake_error("invert_summary", "FAILED")
    slurm_logs = {
        "/c/.snakemake/slurm_logs/rule_x/12.log":  # as SLURM 22.05 writes it (bytes)
        "slurmstepd-vm: error: StepId=12.batch exceeded memory limit (167464960 > 67108864), being killed\n"
        "slurmstepd-vm: error: *** JOB 12 ON vm CANCELLED AT 2026-12-04T09:48:40 ***\n"
    }
    [hint] = resource_hints(log, lambda path: slurm_logs.get(path, ""))
    assert "rule invert_summary" in hint and "ran out of memory" in hint
    assert "--set-resources invert_summary:mem_mb=" in hint and "workflow/profiles/slurm/config.yaml" in hint
    assert "held 2.5 times its limit" in hint


def test_an_out_of_memory_state_alone_is_enough():
    [hint] = resource_hints(snakemake_error("evaluate", "OUT_OF_MEMORY"), lambda path: "")
    assert "rule evaluate ran out of memory" in hint and "evaluate:mem_mb" in hint


def test_a_job_past_its_time_names_runtime():
    [hint] = resource_hints(snakemake_error("invert", "TIMEOUT"), lambda path: "")
    assert "rule invert ran out of time" in hint and "invert:runtime=" in hint


def test_a_retried_job_is_reported_once_and_other_failures_not_at_all():
    log = (
        snakemake_error("score", "OUT_OF_MEMORY")
        + "Trying to restart job 3.\n"
        + snakemake_error("score", "OUT_OF_MEMORY")
    )
    assert len(resource_hints(log, lambda path: "")) == 1
    failed = snakemake_error("tune", "FAILED")
    assert resource_hints(failed, lambda path: "Traceback (most recent call last):\nValueError: bad\n") == []
    local = "Error in rule tune:\n    jobid: 3\n    log: logs/tune.log (check log file(s) for error details)\n"
    assert resource_hints(local, lambda path: "MemoryError\n") == []


def test_the_onerror_hook_reads_the_log_files_snakemake_passes(tmp_path, capsys):
    slurm_log = tmp_path / "27.log"
    slurm_log.write_text(
        "slurmstepd-vm: error: StepId=27.batch exceeded memory limit (167464960 > 67108864), being killed\n"
    )
    log = tmp_path / "run.snakemake.log"
    log.write_text(snakemake_error("invert_summary", "FAILED", slurm_log=str(slurm_log)))
    print_resource_hints([str(log)])  # Snakemake 9 gives onerror a list of log files
    assert "sgilo: SLURM job 12 of rule invert_summary ran out of memory" in capsys.readouterr().err
