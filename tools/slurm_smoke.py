"""The cluster path for real: the tiny profile through Snakemake's SLURM executor on a one-node SLURM cluster here.

`make smoke-slurm` (`python tools/slurm_smoke.py`), as root on a Debian machine (it installs slurm-wlm, slurmdbd,
munge and mariadb-server when they are missing). In parts, each timed:

1. cluster: munge, MariaDB, slurmdbd, slurmctld and one slurmd on 127.0.0.1 (tools/slurm_cluster.py), this machine
   as the node of both partitions the profile names, `cpu` and `gpu`. The node declares two GPUs that SLURM counts
   but binds to no device: the profile's `gpu: 1` rules are accepted as they are (mapped, not overridden), while the
   tiny profile's stages run on the CPU as its `device: cpu` says.
2. local: the reference, `snakemake --cores 2 results/table1.csv` in one copy of the project (tests/conftest.py's
   tiny profile as params.yaml).
3. cluster run: `snakemake --workflow-profile <profile> results/table1.csv` in another copy, where <profile> is
   workflow/profiles/slurm/config.yaml with ONE_NODE laid over it (the account of the local cluster, quick status
   checks, and no set-threads: a rule's CPUs are then its params' threads, as in the local run, so every float sum
   is split the same way). Meanwhile an invert shard job and an evaluate cell job are cancelled with `scancel` as
   soon as each has written its first checkpoint; the profile's `retries` resubmits them and they resume. Every job
   must then be in `sacct` with its rule name (the plugin's --comment), the two cancelled ones CANCELLED and
   resubmitted, and every output identical to the reference (benchmarks/kill_anywhere.py's comparison).
4. memory: invert_summary again with mem_mb 64: SLURM kills it, and the workflow's onerror names the rule and
   the resource to raise (sgilo.cluster).
5. plan: every job of the FFHQ plan (`snakemake -n --workflow-profile workflow/profiles/slurm --configfile
   profiles/ffhq/params.yaml`), as the plugin would submit it, passes `sbatch --test-only` on a described cluster
   with the profile's partitions (DESCRIBED: nodes in State=CLOUD, which SLURM plans on and never contacts); one
   request no node can hold must be refused.

Every daemon is stopped by its pid at the end, whatever happened; the copies and the cluster's folder are removed
unless --keep is given. Results go to docs/slurm.md.

On your own cluster's login node, `python tools/slurm_smoke.py --check-plan --account <yours>` starts nothing and runs
part 5 against it: every job of the FFHQ plan, as the plugin would submit it, through `sbatch --test-only`.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tools"), str(REPO / "benchmarks"), str(REPO / "tests")]
from kill_anywhere import differences, outputs, project_env  # the one output comparison  # noqa: E402
from slurm_cluster import ACCOUNT, LocalCluster, Node, install_packages, machine_node  # noqa: E402

from sgilo.loader import merge  # noqa: E402

from conftest import copy_project  # the tiny profile the suite uses  # noqa: E402

PROFILE = REPO / "workflow" / "profiles" / "slurm" / "config.yaml"
TARGET = "results/table1.csv"
FFHQ = REPO / "profiles" / "ffhq" / "params.yaml"
# What the one-node cluster needs on top of the repository's profile (set-threads is removed, see the docstring).
ONE_NODE = {
    "default-resources": {"slurm_account": ACCOUNT},
    "slurm-init-seconds-before-status-checks": 2,  # the plugin's first sacct poll; its default of 40 s suits big clusters
}
# A cluster as a user might have: GPU nodes of 4 GPUs, CPU nodes, partitions named as the profile's.
DESCRIBED = {
    "nodes": [Node(f"gpu{i:02d}", 32, 512_000, gpus=4, cloud=True) for i in range(1, 9)]
    + [Node(f"cpu{i:02d}", 64, 256_000, cloud=True) for i in range(1, 5)],
    "partitions": {"cpu": [f"cpu{i:02d}" for i in range(1, 5)], "gpu": [f"gpu{i:02d}" for i in range(1, 9)]},
}
# The jobs cancelled mid-run: the plugin's --comment of the job, and the checkpoint its stage writes after a batch
# (partial/<output's stem>.pt beside the job's output).
FAULTS = {
    "invert shard": ("rule_invert_wildcards_00000", "results/invert/shards/partial/shard-00000.pt"),
    "evaluate cell": ("rule_evaluate_wildcards_inpaint_0.25_sgilo", "results/evaluate/inpaint/0.25/partial/sgilo.pt"),
}
MEMORY_RULE, MEMORY_MB = "invert_summary", 64


# ------------------------------------------------------------------------------------------------ pure helpers
@dataclass(frozen=True)
class SacctJob:
    jobid: str
    comment: str
    state: str
    exit_code: str

    @property
    def rule(self) -> str | None:
        return rule_of(self.comment)


def parse_sacct(text: str) -> list[SacctJob]:
    """`sacct -X -P -n -o JobID,Comment,State,ExitCode` → one row per job ("CANCELLED by 0" → "CANCELLED")."""
    jobs = []
    for line in text.splitlines():
        if line.strip():
            jobid, comment, state, exit_code = line.split("|")
            jobs.append(SacctJob(jobid, comment, state.split()[0] if state else "", exit_code))
    return jobs


def rule_of(comment: str) -> str | None:
    """The rule in the SLURM executor plugin's job comment, `rule_<rule>` or `rule_<rule>_wildcards_<values>`."""
    match = re.fullmatch(r"rule_(\w+?)(?:_wildcards_.*)?", comment)
    return match.group(1) if match else None


def job_stats(snakemake_output: str) -> Counter:
    """Jobs per rule from Snakemake's "Job stats" table (total left out)."""
    table = snakemake_output[snakemake_output.index("Job stats:") :].split("\n\n")[0]
    return Counter(
        {
            rule: int(count)
            for rule, count in re.findall(r"^(\w+)\s+(\d+)$", table, flags=re.MULTILINE)
            if rule != "total"
        }
    )


def planned_jobs(dry_run_output: str) -> list[SimpleNamespace]:
    """The jobs of `snakemake -n`'s output (rule, wildcards, threads, resources), as objects shaped like the
    executor's jobs where the SLURM plugin's submit-command builders read them."""
    jobs = []
    for block in re.split(r"\n(?=(?:local)?rule \w+:\n)", dry_run_output):
        head = re.match(r"(?:local)?rule (\w+):\n", block)
        if not head or block.startswith("local"):
            continue
        fields = dict(re.findall(r"^    (\w+): (.*)$", block, flags=re.MULTILINE))
        resources = {}
        for item in re.split(r", (?=\w+=)", fields.get("resources", "")):
            if "=" in item:
                key, value = item.split("=", 1)
                resources[key] = int(value) if value.isdigit() else value
        wildcards = (
            [value.split("=", 1)[1] for value in re.split(r", (?=\w+=)", fields["wildcards"])]
            if "wildcards" in fields
            else []
        )
        jobs.append(
            SimpleNamespace(
                name=head.group(1),
                wildcards=wildcards,
                threads=int(fields.get("threads", 1)),
                resources=_Resources(resources),
                is_group=lambda: False,
            )
        )
    return jobs


class _Resources(dict):
    """Snakemake's job resources: `.get(key)` and attribute access."""

    def __getattr__(self, key: str):
        try:
            return self[key]
        except KeyError as missing:
            raise AttributeError(key) from missing


def sbatch_call(job: SimpleNamespace, account: str = "") -> str:
    """The sbatch command line the SLURM executor plugin builds for `job` (its own functions), minus the script;
    `account` where the job's slurm_account is empty."""
    from snakemake_executor_plugin_slurm.submit_string import get_submit_command
    from snakemake_executor_plugin_slurm.utils import get_job_wildcards, set_gres_string

    wildcards = get_job_wildcards(job)
    account = account or str(job.resources.get("slurm_account") or "")
    params = {
        "run_uuid": "plan",
        "slurm_logfile": "/dev/null",
        "comment_str": f"rule_{job.name}" + (f"_wildcards_{wildcards}" if wildcards else ""),
        "account": f" -A {shlex.quote(account)}" if account else "",
        "partition": f" -p {shlex.quote(str(job.resources.slurm_partition))}"
        if job.resources.get("slurm_partition")
        else "",
        "workdir": None,
    }
    return get_submit_command(job, params) + set_gres_string(job)


def layered_profile(base: Mapping, extra: Mapping, drop: tuple[str, ...] = ("set-threads",)) -> dict:
    """`base` (a workflow profile) without the keys in `drop`, and `extra` merged over it."""
    return merge({key: value for key, value in base.items() if key not in drop}, extra)


# ------------------------------------------------------------------------------------------------ runs
@dataclass
class Timings:
    parts: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def part(self, name: str) -> Iterator[None]:
        print(f"\n== {name}", flush=True)
        started = time.monotonic()
        try:
            yield
        finally:
            self.parts[name] = time.monotonic() - started
            print(f"-- {name}: {self.parts[name]:.0f} s", flush=True)


def snakemake(root: Path, env: Mapping[str, str], *args: str, log: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "snakemake", *args]
    print(f"$ (cd {root.name} && snakemake {' '.join(args)})  > {log.name}", flush=True)
    return subprocess.Popen(
        command, cwd=root, env=dict(env), stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True
    )  # noqa: SIM115


def wait(process: subprocess.Popen) -> int:
    """The exit status of a snakemake started by `snakemake`; on Ctrl-C or any error here, its process group is
    killed first (it runs in a session of its own, so the terminal's SIGINT does not reach it)."""
    try:
        return process.wait()
    except BaseException:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        raise


def write_profile(folder: Path, extra: Mapping) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(
        yaml.safe_dump(layered_profile(yaml.safe_load(PROFILE.read_text()), extra), sort_keys=False)
    )
    return folder


def sacct(cluster: LocalCluster, *args: str) -> str:
    return subprocess.run(["sacct", *args], env=cluster.env(), capture_output=True, text=True, check=True).stdout


class Canceller(threading.Thread):
    """Cancel each FAULTS job with scancel as soon as it runs and its checkpoint exists."""

    def __init__(self, cluster: LocalCluster, root: Path) -> None:
        super().__init__(daemon=True)
        self.cluster, self.root = cluster, root
        self.cancelled: dict[str, str] = {}  # fault → SLURM job id
        self.done = threading.Event()

    def _running(self) -> dict[str, str]:
        out = subprocess.run(
            ["squeue", "-h", "-t", "R", "-o", "%i|%k"], env=self.cluster.env(), capture_output=True, text=True
        ).stdout
        return {comment: jobid for jobid, comment in (line.split("|", 1) for line in out.splitlines() if "|" in line)}

    def run(self) -> None:
        jobs: dict[str, str] = {}
        while not self.done.is_set() and len(self.cancelled) < len(FAULTS):
            waiting = {name: spec for name, spec in FAULTS.items() if name not in self.cancelled}
            if any(name not in jobs for name in waiting):
                running = self._running()
                jobs.update({name: running[comment] for name, (comment, _) in waiting.items() if comment in running})
            for name, (_, checkpoint) in waiting.items():
                if name in jobs and (self.root / checkpoint).exists():
                    subprocess.run(["scancel", jobs[name]], env=self.cluster.env(), check=True)
                    self.cancelled[name] = jobs[name]
                    print(f"   scancel {jobs[name]}: the {name} job, after its checkpoint {checkpoint}", flush=True)
            time.sleep(0.05)


def check_jobs_in_sacct(cluster: LocalCluster, run_log: str, cancelled: Mapping[str, str]) -> list[str]:
    """Every job of the run in sacct under its rule: per rule as many COMPLETED as Snakemake planned, plus the
    cancelled ones CANCELLED (and nothing else)."""
    jobs = [
        job
        for job in parse_sacct(sacct(cluster, "-X", "-P", "-n", "-a", "-o", "JobID,Comment,State,ExitCode"))
        if job.rule
    ]  # not probe_code's
    expected = job_stats(run_log)
    completed = Counter(job.rule for job in jobs if job.state == "COMPLETED")
    problems = [
        f"{rule}: {completed[rule]} COMPLETED in sacct, {count} planned"
        for rule, count in expected.items()
        if completed[rule] != count
    ]
    problems += (
        [f"sacct has jobs of rules Snakemake did not plan: {sorted(set(completed) - set(expected))}"]
        if set(completed) - set(expected)
        else []
    )
    others = {job.jobid: job.state for job in jobs if job.state != "COMPLETED"}
    if others != {jobid: "CANCELLED" for jobid in cancelled.values()}:
        problems.append(f"jobs not COMPLETED: {others}; cancelled by this script: {dict(cancelled)}")
    print(
        f"   sacct: {len(jobs)} jobs, {sum(completed.values())} COMPLETED over {len(completed)} rules "
        f"({', '.join(f'{r} {c}' for r, c in sorted(completed.items()))}), {len(others)} CANCELLED",
        flush=True,
    )
    return problems


def check_resumed(root: Path) -> list[str]:
    """The resubmitted jobs' stage logs say they resumed from their checkpoint (sgilo.io.resume_batches)."""
    logs = {"invert shard": "logs/invert/shard-00000.log", "evaluate cell": "logs/evaluate/inpaint-0.25-sgilo.log"}
    problems = []
    for name, log in logs.items():
        line = next((line for line in (root / log).read_text().splitlines() if "resuming after" in line), None)
        print(f"   {log}: {line.split(' INFO ', 1)[-1] if line else 'no resume line'}", flush=True)
        problems += [] if line else [f"the {name} job did not resume from its checkpoint ({log})"]
    return problems


def probe_code(cluster: LocalCluster, env: Mapping[str, str], root: Path) -> list[str]:
    """A job of the cluster imports sgilo from the copy (PYTHONPATH travels with sbatch's --export=ALL)."""
    out = subprocess.run(
        [
            "sbatch",
            "--wait",
            "-A",
            ACCOUNT,
            "-p",
            "cpu",
            "--mem",
            "1000",
            "-o",
            str(root / "probe.out"),
            "--wrap",
            f"{sys.executable} -c 'import sgilo; print(sgilo.__file__)'",
        ],
        env=dict(env),
        cwd=root,
        capture_output=True,
        text=True,
    )
    found = (root / "probe.out").read_text().strip() if (root / "probe.out").exists() else out.stderr
    print(f"   a job imports sgilo from {found}", flush=True)
    return (
        [] if found.startswith(str(root / "src")) else [f"a job imported sgilo from {found}, not from {root / 'src'}"]
    )


def cluster_run(cluster: LocalCluster, tmp: Path, reference: Path, expected: list[Path]) -> tuple[Path, list[str]]:
    root = copy_project(tmp / "cluster")
    profile = write_profile(tmp / "profile-one-node", ONE_NODE)
    env = cluster.env(project_env(root))
    problems = probe_code(cluster, env, root)
    canceller = Canceller(cluster, root)
    canceller.start()
    log = tmp / "cluster-run.log"
    rc = wait(snakemake(root, env, "--workflow-profile", str(profile), TARGET, log=log))
    canceller.done.set()
    text = log.read_text()
    shown = [
        line
        for line in text.splitlines()
        if re.search(r"SLURM-job|Trying to restart|Error in rule|steps \(100%\)", line)
    ]
    submitted = sum("has been submitted with SLURM jobid" in line for line in text.splitlines())
    print("\n".join(f"   | {line}" for line in [f"({submitted} jobs submitted)", *shown]), flush=True)
    if rc:
        return root, problems + [f"snakemake with the SLURM executor exited {rc}:\n{text[-3000:]}"]
    problems += [
        f"the {name} job was never cancelled (it finished before its checkpoint was seen)"
        for name in FAULTS
        if name not in canceller.cancelled
    ]
    problems += check_jobs_in_sacct(cluster, text, canceller.cancelled)
    problems += check_resumed(root)
    differing = differences(reference, root, expected)
    print(f"   outputs: {len(expected) - len(differing)} of {len(expected)} identical to the local run", flush=True)
    problems += (
        [f"outputs differ from the local run or are missing: {[str(p) for p in differing]}"] if differing else []
    )
    return root, problems


def memory_run(cluster: LocalCluster, tmp: Path, root: Path) -> list[str]:
    """One rule asked to fit in MEMORY_MB: SLURM kills it; the message names the rule and mem_mb. The rule also gets
    set-threads 2, which must reach SLURM as its CPUs (the cluster run itself keeps every rule at 1)."""
    extra = {"set-resources": {MEMORY_RULE: {"mem_mb": MEMORY_MB}}, "set-threads": {MEMORY_RULE: 2}, "retries": 0}
    profile = write_profile(tmp / "profile-small-memory", merge(ONE_NODE, extra))
    log = tmp / "memory-run.log"
    rc = wait(
        snakemake(
            root,
            cluster.env(project_env(root)),
            "--workflow-profile",
            str(profile),
            "--forcerun",
            MEMORY_RULE,
            "results/invert/summary.json",
            log=log,
        )
    )
    text = log.read_text()
    shown = [line for line in text.splitlines() if re.search(r"SLURM-job|Error in rule|mem_mb|exceeded memory", line)]
    print("\n".join("   | " + line for line in shown[-12:]), flush=True)
    problems = [] if rc else [f"the {MEMORY_RULE} job with mem_mb={MEMORY_MB} succeeded"]
    if not any(MEMORY_RULE in line and "mem_mb" in line and "ran out of memory" in line for line in text.splitlines()):
        problems.append(f"no line names {MEMORY_RULE}, mem_mb and the memory:\n{text[-3000:]}")
    rows = [
        line.split("|")
        for line in sacct(cluster, "-X", "-P", "-n", "-a", "-o", "JobID,Comment,State,ReqCPUS,ReqMem").splitlines()
    ]
    killed = [row for row in rows if rule_of(row[1]) == MEMORY_RULE and row[2] != "COMPLETED"]
    print(f"   sacct: {' '.join('|'.join(row) for row in killed)}", flush=True)
    if [row[3] for row in killed] != ["2"]:
        problems.append(f"the {MEMORY_RULE} job was not one job with 2 CPUs (set-threads): {killed}")
    return problems


def plan(
    env: Mapping[str, str], workdir: Path, profile: Path = PROFILE, params: Path = FFHQ
) -> tuple[list[SimpleNamespace], list[str]]:
    """The jobs of `snakemake -n --workflow-profile <profile> --configfile <params>`, planned in `workdir`."""
    # A dry run caps every job's threads at --cores (1 when not given), which a cluster run does not: the most the
    # profile's set-threads asks lifts the cap (plan_cores).
    command = [
        sys.executable,
        "-m",
        "snakemake",
        "-n",
        "--cores",
        str(plan_cores(profile)),
        "--workflow-profile",
        str(profile),
        TARGET,
        "--configfile",
        str(params.resolve()),
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir),
    ]
    done = subprocess.run(command, cwd=REPO, env=dict(env), capture_output=True, text=True)
    if done.returncode:
        return [], [f"the plan failed:\n{done.stderr[-3000:]}"]
    jobs, stats = planned_jobs(done.stdout), job_stats(done.stdout)
    return jobs, [] if Counter(job.name for job in jobs) == stats else [
        f"parsed {Counter(job.name for job in jobs)} jobs, Snakemake planned {stats}"
    ]


def test_only(jobs: list[SimpleNamespace], env: Mapping[str, str], account: str = "") -> list[str]:
    """`sbatch --test-only` for each job as the plugin would submit it; the refusals."""
    refused = []
    for job in jobs:
        call = sbatch_call(job, account) + " --test-only --wrap=true"
        done = subprocess.run(call, shell=True, env=dict(env), capture_output=True, text=True)
        if done.returncode:
            refused.append(f"{job.name} {job.wildcards}: {done.stderr.strip()}\n   {call}")
    by_rule = Counter(job.name for job in jobs)
    print(
        f"   {len(jobs)} jobs ({', '.join(f'{r} {c}' for r, c in sorted(by_rule.items()))}) sent to sbatch --test-only: "
        f"{len(jobs) - len(refused)} accepted",
        flush=True,
    )
    for rule in sorted(by_rule):
        print(
            f"   {rule}: {sbatch_call(next(j for j in jobs if j.name == rule), account).split(' --comment ')[1].split(' ', 1)[1]}",
            flush=True,
        )
    return refused


def plan_check(tmp: Path) -> list[str]:
    """sbatch --test-only for every job of the FFHQ plan against DESCRIBED, and one request that must be refused."""
    with LocalCluster(
        tmp / "described", DESCRIBED["nodes"], DESCRIBED["partitions"], name="described", controller_only=True
    ) as described:
        env = described.env()
        for partition, names in DESCRIBED["partitions"].items():
            node = next(n for n in DESCRIBED["nodes"] if n.name == names[0])
            print(
                f"   described partition {partition}: {len(names)} nodes of {node.cpus} CPUs, {node.memory_mb} MB, {node.gpus} GPUs",
                flush=True,
            )
        jobs, problems = plan(env, tmp / "plan")
        if not jobs:
            return problems
        problems += test_only(jobs, env)
        too_big = re.sub(
            r"--cpus-per-task=\d+", "--cpus-per-task=64", sbatch_call(next(j for j in jobs if j.name == "invert"))
        )
        control = subprocess.run(
            too_big + " --test-only --wrap=true", shell=True, env=env, capture_output=True, text=True
        )
        print(
            f"   control, invert with 64 CPUs (a GPU node has 32): {'refused: ' + control.stderr.strip() if control.returncode else 'ACCEPTED'}"
        )
        problems += [] if control.returncode else ["sbatch --test-only accepted a job no node can hold"]
    return problems


def plan_cores(profile: Path = PROFILE) -> int:
    """--cores for the dry run of the plan: the most CPUs the profile's set-threads gives a rule. A rule it does not
    list whose params ask for 0 threads ("every core") is then planned with that many; a cluster run gives it 1."""
    return max(yaml.safe_load(profile.read_text()).get("set-threads", {1: 1}).values())


def check_plan_here(account: str, profile: Path, params: Path) -> None:
    """--check-plan: the plan's jobs against the SLURM of this machine's environment (your cluster), nothing started."""
    with tempfile.TemporaryDirectory(prefix="sgilo-plan-") as tmp:
        jobs, problems = plan(os.environ, Path(tmp), profile, params)
        problems += test_only(jobs, os.environ, account) if jobs else []
    if problems:
        raise SystemExit("\nREFUSED:\n" + "\n".join(f"- {p}" for p in problems))
    print("every job of the plan was accepted by sbatch --test-only")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it (copies, logs, the cluster's files)")
    parser.add_argument(
        "--check-plan",
        action="store_true",
        help="start nothing: sbatch --test-only every job of the plan on the cluster this machine submits to",
    )
    parser.add_argument(
        "--account", default="", help="with --check-plan: your SLURM account (the profile's slurm_account)"
    )
    parser.add_argument(
        "--profile", type=Path, default=PROFILE, help="with --check-plan: the workflow profile's config.yaml"
    )
    parser.add_argument("--params", type=Path, default=FFHQ, help="with --check-plan: the params profile planned")
    args = parser.parse_args(argv)
    if args.check_plan:
        check_plan_here(args.account, args.profile.resolve(), args.params)
        return
    timings, problems = Timings(), []
    started = time.monotonic()
    install_packages()
    tmp = Path(args.keep or tempfile.mkdtemp(prefix="sgilo-slurm-")).resolve()
    tmp.mkdir(parents=True, exist_ok=True)
    node = machine_node()
    node = Node(node.name, node.cpus, node.memory_mb, gpus=2)
    try:
        with ExitStack() as stack:
            with timings.part(
                f"1. cluster up: node {node.name}, {node.cpus} CPUs, {node.memory_mb} MB, {node.gpus} GPUs bound to no device"
            ):
                cluster = stack.enter_context(
                    LocalCluster(tmp / "cluster-files", [node], {"cpu": [node.name], "gpu": [node.name]})
                )
            with timings.part("2. local reference: snakemake --cores 2"):
                reference = copy_project(tmp / "reference")
                log = tmp / "reference.log"
                if wait(snakemake(reference, project_env(reference), "--cores", "2", TARGET, log=log)):
                    raise SystemExit(f"error: the local run failed:\n{log.read_text()[-3000:]}")
                expected = [p.relative_to(reference) for p in outputs(reference)]
                print(f"   {len(expected)} outputs to compare", flush=True)
            with timings.part("3. SLURM run, an invert shard and an evaluate cell cancelled"):
                root, found = cluster_run(cluster, tmp, reference, expected)
                problems += found
            with timings.part(f"4. {MEMORY_RULE} with mem_mb={MEMORY_MB}"):
                problems += memory_run(cluster, tmp, root)
            with timings.part("5. FFHQ plan: sbatch --test-only on a described cluster"):
                problems += plan_check(tmp)
            with timings.part("6. tear down"):
                stack.close()
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    total = time.monotonic() - started
    print("\n| part | seconds |\n|---|---:|")
    for name, seconds in timings.parts.items():
        print(f"| {name} | {seconds:.0f} |")
    print(f"| total | {total:.0f} |")
    if problems:
        raise SystemExit("\nFAILED:\n" + "\n".join(f"- {p}" for p in problems))
    print(f"\nsmoke-slurm passed in {total / 60:.1f} min on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
