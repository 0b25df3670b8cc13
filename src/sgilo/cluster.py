"""What to raise when SLURM ends a job for its resources: the rule and the resource, from Snakemake's log.

Snakemake's SLURM executor reports a killed job as "Error in rule <rule>: SLURM-job '<id>' failed, SLURM status is:
'<state>'", with the job's SLURM log among its logs. Where cgroups enforce memory the state is OUT_OF_MEMORY; where
the accounting poller does (JobAcctGatherParams=OverMemoryKill) it is FAILED and only the SLURM log says why
("slurmstepd: error: StepId=<id> exceeded memory limit (<used> > <limit>), being killed", in bytes on SLURM 22.05). A job past its time
is TIMEOUT ("CANCELLED ... DUE TO TIME LIMIT"). The workflow's `onerror` prints these hints (Snakefile).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path

PROFILE = "workflow/profiles/slurm/config.yaml"
_MEMORY = re.compile(r"exceeded memory limit \((\d+) > (\d+)\)|oom[_-]kill|OUT_OF_MEMORY|Out Of Memory", re.IGNORECASE)
_TIME = re.compile(r"DUE TO TIME LIMIT|TIMEOUT")


def _failed_jobs(log_text: str) -> list[tuple[str, str, list[str]]]:
    """(rule, message, log files) of each "Error in rule" block of a Snakemake log."""
    jobs = []
    for block in re.split(r"\n(?=Error in rule )", log_text):
        rule = re.match(r"Error in rule (\w+):", block)
        message = re.search(r"^    message: (.*)$", block, flags=re.MULTILINE)
        logs = re.search(r"^    log: (.*?)(?: \(check log file\(s\) for error details\))?$", block, flags=re.MULTILINE)
        if rule and message and "SLURM" in message.group(1):
            jobs.append((rule.group(1), message.group(1), logs.group(1).split(", ") if logs else []))
    return jobs


def resource_hints(log_text: str, read: Callable[[str], str]) -> list[str]:
    """One line per SLURM job of the log that ran out of memory or time: the rule, what was seen, what to raise.
    `read(path)` gives a log file's text ("" when it cannot)."""
    hints = []
    for rule, message, logs in _failed_jobs(log_text):
        seen = message + "\n" + "\n".join(read(path) for path in logs)
        job = re.search(r"SLURM-job '([^']+)'", message)
        where = f"SLURM job {job.group(1) if job else '?'} of rule {rule}"
        if memory := _MEMORY.search(seen):
            used = (
                f" (it held {int(memory.group(1)) / int(memory.group(2)):.1f} times its limit when killed)"
                if memory.group(1)
                else ""
            )
            hints.append(
                f"{where} ran out of memory{used}: raise mem_mb for {rule}, e.g. --set-resources {rule}:mem_mb=<MB> "
                f"or set-resources: {rule}: mem_mb in {PROFILE}"
            )
        elif _TIME.search(seen):
            hints.append(
                f"{where} ran out of time: raise runtime (minutes) for {rule}, e.g. --set-resources {rule}:runtime=<minutes> "
                f"or set-resources: {rule}: runtime in {PROFILE}"
            )
    return list(dict.fromkeys(hints))  # a retried job fails the same way twice


def _read(path: str) -> str:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return ""


def print_resource_hints(logs: str | Path | list[str]) -> None:
    """The hints for Snakemake's log file, on stderr (the Snakefile's onerror; Snakemake 9 passes a list of files)."""
    text = "\n".join(_read(str(log)) for log in ([logs] if isinstance(logs, (str, Path)) else logs))
    for hint in resource_hints(text, _read):
        print(f"sgilo: {hint}", file=sys.stderr)
