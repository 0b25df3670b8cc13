"""A SLURM cluster on 127.0.0.1, in one temporary folder: munge, MariaDB, slurmdbd, slurmctld and slurmd.

Debian's packages (`slurm-wlm`, `slurmdbd`, `munge`, `mariadb-server`) give the daemons; this module writes their
configuration, starts each one in the foreground as a child process (no systemd, no init scripts), waits until it
answers, and stops each by its pid, last started first. Every file they write (configs, keys, spool, state, logs,
pid files, sockets, the database) lies in the folder, and every port is a free one on 127.0.0.1.

Containers rarely give a process cgroups it may use, so jobs are tracked through /proc (proctrack/linuxproc,
task/none) and memory is enforced by the accounting poller (jobacct_gather/linux with OverMemoryKill, every second):
a step whose processes' RSS exceeds the job's --mem is killed ("exceeded memory limit" in the job's log) and the job
ends FAILED (cgroups would make it OUT_OF_MEMORY). GPUs of a started node are stand-ins (`gres_conf`). The SLURM
executor's job step drops SLURM_CONF before it calls srun, so clients get an srun that restores it (`write_srun_shim`).

    with LocalCluster(Path(tmp), [machine_node()], {"cpu": ["vm"], "gpu": ["vm"]}) as cluster:
        subprocess.run(["sbatch", "--wrap", "hostname"], env=cluster.env())

`controller_only` starts slurmctld alone on a description of nodes that never register, so that `sbatch --test-only`
can check requests against a cluster bigger than this machine without running anything. They are State=CLOUD,
powered-down nodes SLURM plans on: FUTURE nodes are left out of the partitions, and with DOWN or never-registered
(UNKNOWN) nodes `sbatch --test-only` refuses every request.
"""

from __future__ import annotations

import getpass
import os
import shlex
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

PACKAGES = ("slurm-wlm", "slurmdbd", "munge", "mariadb-server")
DAEMONS = ("munged", "mariadbd", "slurmdbd", "slurmctld", "slurmd")
DATABASE = "slurm_acct_db"
ACCOUNT = "sgilo"  # the one account of the local cluster; jobs ask for it (slurm_account)


@dataclass(frozen=True)
class Node:
    name: str
    cpus: int
    memory_mb: int  # RealMemory: what SLURM may hand out
    gpus: int = 0
    cloud: bool = (
        False  # described, never started: State=CLOUD, a powered-down node SLURM plans on (sbatch --test-only)
    )


@dataclass(frozen=True)
class Ports:
    slurmctld: int
    slurmd: int
    slurmdbd: int
    mysql: int


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def machine_node(headroom: float = 0.9) -> Node:
    """This machine as one node: its CPUs and a bit less than its memory (slurmd drains a node that has less memory
    than slurm.conf says), named as slurmd will call itself (the short host name)."""
    pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return Node(socket.gethostname().split(".")[0], os.cpu_count() or 1, int(pages / 2**20 * headroom))


def slurm_conf(
    cluster: str,
    folder: Path,
    ports: Ports,
    nodes: Sequence[Node],
    partitions: Mapping[str, Sequence[str]],
    accounting: bool = True,
) -> str:
    """slurm.conf for a controller on 127.0.0.1 whose state, spool, logs and pid files are under `folder`."""
    host = socket.gethostname().split(".")[0]
    gres = any(node.gpus for node in nodes)
    lines = [
        f"ClusterName={cluster}",
        f"SlurmctldHost={host}(127.0.0.1)",
        f"SlurmctldPort={ports.slurmctld}",
        f"SlurmdPort={ports.slurmd}",
        f"SlurmUser={getpass.getuser()}",
        f"SlurmdUser={getpass.getuser()}",
        f"AuthInfo=socket={folder / 'munge.socket'}",
        f"StateSaveLocation={folder / 'state'}",
        f"SlurmdSpoolDir={folder / 'spool' / '%n'}",
        f"SlurmctldPidFile={folder / 'slurmctld.pid'}",
        f"SlurmdPidFile={folder / 'slurmd-%n.pid'}",
        f"SlurmctldLogFile={folder / 'slurmctld.log'}",
        f"SlurmdLogFile={folder / 'slurmd-%n.log'}",
        "SlurmctldDebug=info",
        "SlurmdDebug=info",
        # No cgroups in a container: processes are found through /proc, tasks are not bound.
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "MpiDefault=none",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core_Memory",  # memory is a consumable: --mem is reserved and enforced
        "JobAcctGatherType=jobacct_gather/linux",
        "JobAcctGatherFrequency=task=1",
        "JobAcctGatherParams=OverMemoryKill",  # a step above its memory is killed (the poller, as there are no cgroups)
        "ReturnToService=2",
        "SchedulerParameters=sched_interval=2,bf_interval=2",
        "MinJobAge=600",
        "KillWait=5",
        "InactiveLimit=0",
    ]
    if accounting:
        lines += [
            "AccountingStorageType=accounting_storage/slurmdbd",
            "AccountingStorageHost=127.0.0.1",
            f"AccountingStoragePort={ports.slurmdbd}",
            f"AccountingStoragePass={folder / 'munge.socket'}",  # the munge socket of the slurmdbd connection
            "AccountingStoreFlags=job_comment",  # the plugin's rule name
            "AccountingStorageEnforce=associations",
        ]
    else:
        lines += ["AccountingStorageType=accounting_storage/none"]
    if gres:
        lines.append("GresTypes=gpu")
    for node in nodes:
        port = ports.slurmd if not node.cloud else free_port()
        line = (
            f"NodeName={node.name} NodeAddr=127.0.0.1 Port={port} CPUs={node.cpus} RealMemory={node.memory_mb}"
            + (f" Gres=gpu:{node.gpus}" if node.gpus else "")
            + (" State=CLOUD" if node.cloud else " State=UNKNOWN")
        )
        lines.append(line)
    for index, (name, members) in enumerate(partitions.items()):
        lines.append(
            f"PartitionName={name} Nodes={','.join(members)} Default={'YES' if index == 0 else 'NO'} MaxTime=INFINITE State=UP"
        )
    return "\n".join(lines) + "\n"


STAND_IN_DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/urandom")


def gres_conf(nodes: Sequence[Node]) -> str:
    """Stand-in GPUs for a CPU machine: slurmd counts a GPU only through a device file, so each is a harmless
    character device; SLURM hands them out and binds nothing (task/none), and no stage opens them."""
    if any(node.gpus > len(STAND_IN_DEVICES) for node in nodes):
        raise ValueError(f"at most {len(STAND_IN_DEVICES)} stand-in GPUs per started node")
    return "".join(
        f"NodeName={node.name} Name=gpu File={device}\n" for node in nodes for device in STAND_IN_DEVICES[: node.gpus]
    )


def slurmdbd_conf(folder: Path, ports: Ports) -> str:
    user = getpass.getuser()
    return (
        "\n".join(
            [
                f"AuthInfo=socket={folder / 'munge.socket'}",
                "DbdHost=localhost",
                "DbdAddr=127.0.0.1",
                f"DbdPort={ports.slurmdbd}",
                f"SlurmUser={user}",
                f"PidFile={folder / 'slurmdbd.pid'}",
                f"LogFile={folder / 'slurmdbd.log'}",
                "DebugLevel=info",
                "StorageType=accounting_storage/mysql",
                "StorageHost=127.0.0.1",
                f"StoragePort={ports.mysql}",
                f"StorageUser={user}",
                f"StorageLoc={DATABASE}",
            ]
        )
        + "\n"
    )


def write_srun_shim(path: Path, conf: Path) -> None:
    """An `srun` that puts SLURM_CONF back. The SLURM executor's job step (snakemake-executor-plugin-slurm-jobstep
    0.6.1) starts each rule with `srun` after removing every SLURM_* variable from the environment, SLURM_CONF
    included, so on a cluster whose slurm.conf is not at /etc/slurm/slurm.conf srun finds no configuration."""
    path.parent.mkdir(parents=True, exist_ok=True)
    srun = shutil.which("srun") or "/usr/bin/srun"
    path.write_text(f'#!/bin/sh\nSLURM_CONF={shlex.quote(str(conf))} exec {shlex.quote(srun)} "$@"\n')
    path.chmod(0o755)


def missing_tools() -> list[str]:
    return [
        tool
        for tool in (
            "munged",
            "mungekey",
            "mariadbd",
            "mariadb-install-db",
            "slurmdbd",
            "slurmctld",
            "slurmd",
            "sbatch",
            "sacct",
            "sacctmgr",
        )
        if shutil.which(tool) is None and not Path("/usr/sbin", tool).exists()
    ]


def install_packages() -> None:
    """apt-get install the Debian packages when a daemon or client is missing; a clear stop where that cannot be done."""
    missing = missing_tools()
    if not missing:
        return
    if shutil.which("apt-get") is None:
        raise SystemExit(
            f"error: {', '.join(missing)} not found and no apt-get here: install {' '.join(PACKAGES)} "
            "(SLURM 22.05 or later, munge, MariaDB) with your package manager"
        )
    if os.geteuid() != 0:
        raise SystemExit(
            f"error: {', '.join(missing)} not found: run `sudo apt-get install -y {' '.join(PACKAGES)}` (needs root)"
        )
    print(f"installing {' '.join(PACKAGES)} (missing: {', '.join(missing)})", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", *PACKAGES]):
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        if done.returncode:
            raise SystemExit(f"error: `{' '.join(command)}` failed ({done.returncode}):\n{done.stderr[-2000:]}")


@dataclass
class LocalCluster:
    """Start with `with`: the daemons run while the block does and are stopped, by pid, however it ends."""

    folder: Path
    nodes: Sequence[Node]
    partitions: Mapping[str, Sequence[str]]
    name: str = "sgilo"
    controller_only: bool = False  # slurmctld alone, no accounting, no slurmd: a description to --test-only against
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.folder = Path(self.folder).resolve()
        self.ports = Ports(free_port(), free_port(), free_port(), free_port())
        self.conf = self.folder / "slurm.conf"

    def env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """The environment of a client (sbatch, sacct, snakemake) of this cluster: `base` (os.environ by default)
        with SLURM_CONF, and the srun shim first on PATH (see `write_srun_shim`)."""
        base = dict(os.environ if base is None else base)
        return {
            **base,
            "SLURM_CONF": str(self.conf),
            "PATH": os.pathsep.join([str(self.folder / "bin"), base.get("PATH", os.defpath)]),
        }

    # ------------------------------------------------------------------------------------------------ start
    def __enter__(self) -> LocalCluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        for sub in ("state", "db", "tmp", *(f"spool/{node.name}" for node in self.nodes)):
            (self.folder / sub).mkdir(parents=True, exist_ok=True)
        self.conf.write_text(
            slurm_conf(self.name, self.folder, self.ports, self.nodes, self.partitions, not self.controller_only)
        )
        write_srun_shim(self.folder / "bin" / "srun", self.conf)
        (self.folder / "gres.conf").write_text(gres_conf([n for n in self.nodes if not n.cloud]))
        self._start_munge()
        if not self.controller_only:
            self._start_database()
            self._start_slurmdbd()
        self._spawn("slurmctld", ["slurmctld", "-D", "-i", "-f", str(self.conf)])
        self._wait(lambda: self._ok(["scontrol", "ping"], "UP"), "slurmctld", 60)
        if not self.controller_only:
            self._add_associations()
            for node in self.nodes:
                if not node.cloud:
                    self._spawn(f"slurmd-{node.name}", ["slurmd", "-D", "-N", node.name, "-f", str(self.conf)])
            self._wait(self._nodes_idle, "slurmd (node idle)", 60)

    def _spawn(self, name: str, command: list[str]) -> None:
        log = open(self.folder / f"{name}.out", "w")  # noqa: SIM115 (the daemon owns it)
        self.processes[name] = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=self.env(),
            start_new_session=True,
        )

    def _run(self, command: list[str]) -> str:
        return subprocess.run(command, env=self.env(), capture_output=True, text=True, check=False).stdout

    def _ok(self, command: list[str], expect: str = "") -> bool:
        done = subprocess.run(command, env=self.env(), capture_output=True, text=True, check=False)
        return done.returncode == 0 and expect in done.stdout

    def _wait(self, ready, what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            dead = [name for name, proc in self.processes.items() if proc.poll() is not None]
            if dead or time.monotonic() > deadline:
                logs = "\n".join(
                    f"--- {p.name}\n{p.read_text()[-1500:]}"
                    for p in sorted(self.folder.glob("*.out")) + sorted(self.folder.glob("*.log"))
                )
                raise RuntimeError(
                    f"{what} did not come up ({'exited: ' + ', '.join(dead) if dead else f'{timeout:.0f} s'}):\n{logs}"
                )
            time.sleep(0.3)

    def _start_munge(self) -> None:
        key = self.folder / "munge.key"
        subprocess.run(["mungekey", "--create", f"--keyfile={key}", "--force"], check=True, capture_output=True)
        key.chmod(0o400)
        socket_path = self.folder / "munge.socket"
        self._spawn(
            "munged",
            [
                "munged",
                "--foreground",
                "--force",
                f"--key-file={key}",
                f"--socket={socket_path}",
                f"--pid-file={self.folder / 'munged.pid'}",
                f"--log-file={self.folder / 'munged.log'}",
                f"--seed-file={self.folder / 'munged.seed'}",
            ],
        )
        self._wait(lambda: self._ok(["munge", "-n", f"--socket={socket_path}"]), "munged", 30)

    def _start_database(self) -> None:
        datadir, user = self.folder / "db", getpass.getuser()
        subprocess.run(
            [
                "mariadb-install-db",
                f"--datadir={datadir}",
                f"--user={user}",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
            ],
            check=True,
            capture_output=True,
        )
        sock = self.folder / "mysqld.sock"
        self._spawn(
            "mariadbd",
            [
                "mariadbd",
                "--no-defaults",
                f"--datadir={datadir}",
                f"--socket={sock}",
                f"--port={self.ports.mysql}",
                "--bind-address=127.0.0.1",
                f"--pid-file={self.folder / 'mariadbd.pid'}",
                f"--user={user}",
                "--skip-grant-tables",
                "--innodb-buffer-pool-size=64M",
                f"--tmpdir={self.folder / 'tmp'}",
                f"--log-error={self.folder / 'mariadbd.log'}",
            ],
        )
        self._wait(
            lambda: self._ok(["mariadb", "--no-defaults", f"--socket={sock}", "-e", "select 1"], "1"), "mariadbd", 60
        )

    def _start_slurmdbd(self) -> None:
        conf = self.folder / "slurmdbd.conf"
        conf.write_text(slurmdbd_conf(self.folder, self.ports))
        conf.chmod(0o600)  # slurmdbd refuses a readable one: it holds the database credentials
        self._spawn("slurmdbd", ["slurmdbd", "-D"])
        self._wait(lambda: self._ok(["sacctmgr", "-n", "list", "cluster"]), "slurmdbd", 60)

    def _add_associations(self) -> None:
        user = getpass.getuser()
        for command in (
            ["add", "cluster", self.name],
            ["add", "account", ACCOUNT, f"cluster={self.name}"],
            ["add", "user", user, f"account={ACCOUNT}", f"cluster={self.name}"],
        ):
            subprocess.run(["sacctmgr", "-i", *command], env=self.env(), capture_output=True, text=True, check=False)
        self._wait(
            lambda: self._ok(["sacctmgr", "-n", "-P", "list", "assoc", f"user={user}", "format=account"], ACCOUNT),
            "the account association",
            30,
        )

    def _nodes_idle(self) -> bool:
        done = subprocess.run(
            ["sinfo", "-h", "-N", "-o", "%N %t"], env=self.env(), capture_output=True, text=True, check=False
        )
        states = dict(line.split() for line in done.stdout.splitlines() if line.strip())
        return all(
            states.get(node.name, "").startswith(("idle", "mix", "alloc")) for node in self.nodes if not node.cloud
        )

    # ------------------------------------------------------------------------------------------------ stop
    def stop(self) -> None:
        """Stop every daemon this cluster started, last started first, by its pid (SIGTERM, then SIGKILL). Jobs still
        queued or running are cancelled first, so that no job step outlives its slurmd."""
        if "slurmctld" in self.processes and self.processes["slurmctld"].poll() is None:
            subprocess.run(["scancel", "--user", getpass.getuser()], env=self.env(), capture_output=True, check=False)
            deadline = time.monotonic() + 30
            while (
                time.monotonic() < deadline
                and self._ok(["squeue", "-h", "-o", "%i"])
                and self._run(["squeue", "-h", "-o", "%i"]).strip()
            ):
                time.sleep(0.5)
        for process in reversed(list(self.processes.values())):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        self.processes.clear()
