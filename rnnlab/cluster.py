"""``python -m rnnlab.cluster up|down|env|status [--dir DIR]``: a whole cluster on one machine.

One command starts what a real cluster gives rnnlab: a one-node SLURM cluster (munged, slurmctld,
slurmd), PostgreSQL 15 on 127.0.0.1 with the databases ``mlflow`` and ``optuna``, and an ``mlflow
server`` on that PostgreSQL with its own artifact root. Every file (configs, keys, spools,
databases, logs, PID files) lives under one folder; every daemon runs in its own session with its
PID recorded, and ``down`` stops exactly those (after cancelling every job) and checks none is left.
It is the test fixture of ``tests/e2e/test_slurm_postgres_cluster.py`` and the way to try the
cluster path of ``docs/cluster.md`` on a laptop. It needs Debian's ``slurm-wlm``, ``munge`` and
``postgresql`` and, for slurmd, root.

Not here: anything a job does (``rnnlab.sweeps.requeue``) or how jobs are launched (the Hydra
launcher in ``hydra_plugins/rnnlab_slurm_launcher``)."""

from __future__ import annotations

import json
import os
import pwd
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from rnnlab import cli
from rnnlab.errors import UserError

DEFAULT_DIR = Path(".cluster")  # relative to the cwd unless --dir or $RNNLAB_CLUSTER_DIR
PARTITION = "debug"
POSTGRES_BIN = Path("/usr/lib/postgresql/15/bin")
DATABASES = ("mlflow", "optuna")
DAEMONS = ("munged", "postgres", "slurmctld", "slurmd", "mlflow")  # start order; stop reversed


class ClusterError(UserError):
    """The cluster cannot start (a missing program, a daemon that died). One line."""


@dataclass
class Cluster:
    """Where a local cluster lives and the ports it uses (saved as ``cluster.json``)."""

    root: Path
    slurmctld_port: int = 0
    slurmd_port: int = 0
    postgres_port: int = 0
    mlflow_port: int = 0

    @property
    def slurm_conf(self) -> Path:
        return self.root / "slurm" / "slurm.conf"

    @property
    def munge_socket(self) -> Path:
        return self.root / "munge" / "munge.socket"

    @property
    def tracking_uri(self) -> str:
        return f"http://127.0.0.1:{self.mlflow_port}"

    def database_url(self, name: str) -> str:
        return f"postgresql://rnnlab@127.0.0.1:{self.postgres_port}/{name}"

    @property
    def artifacts(self) -> Path:
        return self.root / "mlflow" / "artifacts"

    def env(self) -> dict[str, str]:
        """What a shell needs to use the cluster: sbatch finds it, jobs record into it."""
        return {
            "SLURM_CONF": str(self.slurm_conf),
            "MLFLOW_TRACKING_URI": self.tracking_uri,
            "RNNLAB_OPTUNA_STORAGE": self.database_url("optuna"),
            "RNNLAB_CLUSTER_DIR": str(self.root),
        }

    def pid_file(self, daemon: str) -> Path:
        return self.root / "pids" / f"{daemon}.pid"

    def log_file(self, daemon: str) -> Path:
        return self.root / "logs" / f"{daemon}.log"

    def save(self) -> None:
        data = {k: v for k, v in asdict(self).items() if k != "root"}
        (self.root / "cluster.json").write_text(json.dumps(data, indent=2) + "\n")

    @classmethod
    def load(cls, root: Path) -> Cluster:
        root = root.resolve()
        saved = root / "cluster.json"
        if not saved.is_file():
            raise ClusterError(
                f"no local cluster in {root} (start one: python -m rnnlab.cluster up)"
            )
        return cls(root, **json.loads(saved.read_text()))


# --- small helpers ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of ours counts as gone
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def wait_for(check, what: str, timeout: float, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-2000:] if log and log.is_file() else ""
            raise ClusterError(f"{what} not ready after {timeout:.0f} s. {tail}")
        time.sleep(0.2)


def require(*programs: str) -> None:
    missing = [p for p in programs if shutil.which(p) is None and not Path(p).is_file()]
    if missing:
        raise ClusterError(
            f"missing {', '.join(missing)}: install Debian's slurm-wlm, munge and postgresql "
            f"(apt-get install -y slurm-wlm munge postgresql)"
        )


def available() -> str | None:
    """None if this machine can run a local cluster, else the reason it cannot."""
    for program in ("munged", "slurmctld", "slurmd", "sbatch", str(POSTGRES_BIN / "postgres")):
        if shutil.which(program) is None and not Path(program).is_file():
            return f"{program} not installed (apt-get install -y slurm-wlm munge postgresql)"
    if os.geteuid() != 0:
        return "slurmd needs root"
    return None


# --- starting -----------------------------------------------------------------------------------


def spawn(c: Cluster, daemon: str, argv: list[str], user: str | None = None, env=None) -> int:
    """Start ``argv`` in the foreground of its own session, its output in logs/<daemon>.log."""
    log = open(c.log_file(daemon), "ab")
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        user=user,
        env=env,
        cwd=c.root,
    )
    log.close()
    c.pid_file(daemon).write_text(f"{proc.pid}\n")
    return proc.pid


def start_munge(c: Cluster) -> None:
    d = c.root / "munge"
    d.mkdir(mode=0o700, exist_ok=True)
    key = d / "munge.key"
    if not key.exists():
        key.write_bytes(secrets.token_bytes(1024))
        key.chmod(0o400)
    # fmt: off
    spawn(c, "munged", [
        "munged", "--foreground", "--force", f"--socket={c.munge_socket}",
        f"--key-file={key}", f"--pid-file={d / 'munged.pid'}", f"--seed-file={d / 'munged.seed'}",
        f"--log-file={c.log_file('munged-own')}",
    ])
    # fmt: on
    wait_for(c.munge_socket.exists, "munged", 20, c.log_file("munged"))


def slurm_conf(c: Cluster, user: str) -> str:
    """A one-node cluster: this host, all its cores, one partition; jobs requeue-able."""
    host = socket.gethostname().split(".")[0]
    cpus = os.cpu_count() or 1
    mem_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
    s = c.root / "slurm"
    return f"""\
# Written by python -m rnnlab.cluster up: a one-node SLURM cluster for rnnlab's tests.
ClusterName=rnnlab
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={c.slurmctld_port}
SlurmdPort={c.slurmd_port}
SlurmUser={user}
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={c.munge_socket},cred_expire=10
StateSaveLocation={s / "state"}
SlurmdSpoolDir={s / "spool"}
SlurmctldPidFile={s / "slurmctld.pid"}
SlurmdPidFile={s / "slurmd.pid"}
SlurmctldLogFile={c.log_file("slurmctld-own")}
SlurmdLogFile={c.log_file("slurmd-own")}
# no cgroups in a container: track processes by parentage, bind no tasks
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
# finished jobs leave slurmctld's memory fast; batch jobs may be requeued (scontrol requeue)
MinJobAge=30
JobRequeue=1
KillWait=10
# a preempted job is requeued, not cancelled
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=2
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
Waittime=0
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={mem_mb * 9 // 10} State=UNKNOWN
PartitionName={PARTITION} Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


def start_slurm(c: Cluster) -> None:
    s = c.root / "slurm"
    for sub in ("state", "spool"):
        (s / sub).mkdir(parents=True, exist_ok=True)
    user = pwd.getpwuid(os.geteuid()).pw_name
    c.slurm_conf.write_text(slurm_conf(c, user))
    env = {**os.environ, "SLURM_CONF": str(c.slurm_conf)}
    spawn(c, "slurmctld", ["slurmctld", "-D", "-i", "-f", str(c.slurm_conf)], env=env)
    wait_for(
        lambda: run_ok(["scontrol", "ping"], env, "UP"),
        "slurmctld",
        30,
        c.log_file("slurmctld-own"),
    )
    spawn(c, "slurmd", ["slurmd", "-D", "-f", str(c.slurm_conf)], env=env)
    wait_for(lambda: node_idle(env), "slurmd (node idle)", 60, c.log_file("slurmd-own"))


def run_ok(argv: list[str], env: dict, expect: str = "") -> bool:
    try:
        out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and expect in out.stdout


def node_idle(env: dict) -> bool:
    out = subprocess.run(["sinfo", "-h", "-o", "%t"], env=env, capture_output=True, text=True)
    return out.returncode == 0 and out.stdout.strip() in ("idle", "mix", "alloc")


def start_postgres(c: Cluster) -> None:
    """PostgreSQL refuses root: as root it runs as the ``postgres`` user, which must reach the
    state folder (``up`` makes it traversable)."""
    d = c.root / "postgres"
    data = d / "data"
    user = "postgres" if os.geteuid() == 0 else None
    if user:
        for folder in [c.root, *c.root.parents]:
            if not folder.stat().st_mode & 0o001:
                raise ClusterError(
                    f"the postgres user cannot enter {folder} (mode "
                    f"{oct(folder.stat().st_mode & 0o777)}): chmod o+x it, or pick another --dir"
                )
    d.mkdir(exist_ok=True)
    if user:
        shutil.chown(d, user)
    if not (data / "PG_VERSION").exists():
        # fmt: off
        out = subprocess.run(
            [str(POSTGRES_BIN / "initdb"), "-D", str(data), "-U", "rnnlab", "--auth=trust",
             "-E", "UTF8", "--no-sync"],
            user=user, capture_output=True, text=True, cwd=d,
        )
        # fmt: on
        if out.returncode != 0:
            raise ClusterError(f"initdb failed: {out.stderr.strip()[-1500:]}")
    log = c.log_file("postgres")
    # fmt: off
    spawn(c, "postgres", [
        str(POSTGRES_BIN / "postgres"), "-D", str(data), "-p", str(c.postgres_port),
        "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={d}",
        "-c", "fsync=off", "-c", "max_connections=200",
    ], user=user)
    # fmt: on
    ready = [str(POSTGRES_BIN / "pg_isready"), "-h", "127.0.0.1", "-p", str(c.postgres_port)]
    wait_for(lambda: run_ok(ready, dict(os.environ)), "postgres", 30, log)
    for name in DATABASES:
        # fmt: off
        out = subprocess.run(
            [str(POSTGRES_BIN / "createdb"), "-h", "127.0.0.1", "-p", str(c.postgres_port),
             "-U", "rnnlab", name], capture_output=True, text=True,
        )
        # fmt: on
        if out.returncode != 0 and "already exists" not in out.stderr:
            raise ClusterError(f"createdb {name} failed: {out.stderr.strip()}")


def start_mlflow(c: Cluster) -> None:
    c.artifacts.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    # no Huey job workers: MLflow 3.x starts seven (~250 MB each) for GenAI jobs rnnlab never sends
    env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    # fmt: off
    spawn(c, "mlflow", [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", c.database_url("mlflow"),
        "--artifacts-destination", str(c.artifacts),
        "--host", "127.0.0.1", "--port", str(c.mlflow_port), "--workers", "2",
    ], env=env)
    # fmt: on

    def healthy() -> bool:
        if not pid_alive(read_pid(c.pid_file("mlflow")) or -1):
            raise ClusterError(f"mlflow server died: {c.log_file('mlflow').read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{c.tracking_uri}/health", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    wait_for(healthy, "mlflow server", 180, c.log_file("mlflow"))


def up(root: Path) -> Cluster:
    """Start every daemon (a cluster already up in ``root`` is left as it is)."""
    root = root.resolve()
    if (root / "cluster.json").is_file() and running(Cluster.load(root)):
        return Cluster.load(root)
    require("munged", "slurmctld", "slurmd", "sbatch", str(POSTGRES_BIN / "postgres"))
    for sub in ("pids", "logs"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o711)  # the postgres user must reach postgres/ inside it
    c = Cluster(root, free_port(), free_port(), free_port(), free_port())
    c.save()
    try:
        start_munge(c)
        start_postgres(c)
        start_slurm(c)
        start_mlflow(c)
    except BaseException:
        down(root)
        raise
    return c


# --- stopping -----------------------------------------------------------------------------------


def running(c: Cluster) -> list[str]:
    """The daemons of ``c`` whose recorded process is alive."""
    return [d for d in DAEMONS if (pid := read_pid(c.pid_file(d))) and pid_alive(pid)]


def cancel_all_jobs(c: Cluster, timeout: float = 30) -> None:
    """scancel every job and wait until slurmctld lists none (their slurmstepds then exit)."""
    env = {**os.environ, "SLURM_CONF": str(c.slurm_conf)}
    subprocess.run(["scancel", "--full", "--partition", PARTITION], env=env, capture_output=True)

    def empty() -> bool:
        out = subprocess.run(["squeue", "-h", "-o", "%i"], env=env, capture_output=True, text=True)
        return out.returncode != 0 or not out.stdout.strip()

    deadline = time.monotonic() + timeout
    while not empty() and time.monotonic() < deadline:
        time.sleep(0.5)


def stop_pid(pid: int, sig: int, timeout: float) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
    deadline = time.monotonic() + timeout
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if pid_alive(pid):
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def down(root: Path) -> list[str]:
    """Cancel every job, stop every daemon (in reverse order), return what was stopped."""
    root = root.resolve()
    try:
        c = Cluster.load(root)
    except ClusterError:
        return []
    alive = running(c)
    if "slurmctld" in alive and "slurmd" in alive:
        cancel_all_jobs(c)
    for daemon in reversed(DAEMONS):
        pid = read_pid(c.pid_file(daemon))
        if pid and pid_alive(pid):
            # postgres: SIGINT is its fast shutdown (SIGTERM waits for every client)
            stop_pid(pid, signal.SIGINT if daemon == "postgres" else signal.SIGTERM, 20)
        c.pid_file(daemon).unlink(missing_ok=True)
    return alive


def leftover_processes(root: Path) -> list[str]:
    """Processes still using the cluster's folder (command line or cwd): none after ``down``."""
    root = root.resolve()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if (proc / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                continue  # exited, waiting for its parent (or a reaper-less PID 1) to reap it
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(proc / "cwd")
        except (OSError, IndexError):
            continue
        if str(root) in cmd or cwd.startswith(str(root)):
            found.append(f"{proc.name} {cmd.strip()[:200]}")
    return found


# --- the command line ---------------------------------------------------------------------------


DIR_KEY = cli.Key("dir", "the cluster's state folder ($RNNLAB_CLUSTER_DIR, else .cluster)")
COMMAND = cli.Command(
    name="rnnlab.cluster",
    summary="a one-node SLURM cluster, PostgreSQL and an mlflow server on this machine",
    verbs={
        "up": cli.Command(
            "rnnlab.cluster up", "start every daemon (root, Debian packages)", (DIR_KEY,)
        ),
        "down": cli.Command(
            "rnnlab.cluster down", "cancel every job, stop every daemon", (DIR_KEY,)
        ),
        "env": cli.Command(
            "rnnlab.cluster env", "the shell exports that point rnnlab at it", (DIR_KEY,)
        ),
        "status": cli.Command(
            "rnnlab.cluster status", "which daemons run (exit 1 unless all)", (DIR_KEY,)
        ),
    },  # fmt: skip
    examples=(
        "python -m rnnlab.cluster up",
        'eval "$(python -m rnnlab.cluster env)"',
        "python -m rnnlab.cluster down",
    ),
)


def run(args: dict) -> str | None:
    """Carry out one verb; what to print on stdout (status: exits 1 unless all run)."""
    root = Path(args.get("dir") or os.environ.get("RNNLAB_CLUSTER_DIR") or DEFAULT_DIR)
    verb = args["verb"]
    if verb == "up":
        c = up(root)
        print(
            f"rnnlab: local cluster up in {c.root}: SLURM partition {PARTITION}, "
            f"mlflow {c.tracking_uri}, optuna {c.database_url('optuna')}",
            file=sys.stderr,
        )
        print(f'rnnlab: use it: eval "$(python -m rnnlab.cluster env dir={c.root})"',
              file=sys.stderr)  # fmt: skip
        return None
    if verb == "env":
        return "\n".join(
            f"export {k}={shlex.quote(v)}" for k, v in Cluster.load(root).env().items()
        )
    if verb == "status":
        alive = running(Cluster.load(root))
        print("\n".join(f"{d}: {'running' if d in alive else 'stopped'}" for d in DAEMONS))
        if len(alive) != len(DAEMONS):
            sys.exit(1)
        return None
    stopped = down(root)
    deadline = time.monotonic() + 15  # a daemon's workers may take a moment to exit
    while (left := leftover_processes(root)) and time.monotonic() < deadline:
        time.sleep(0.5)
    print(f"rnnlab: stopped {', '.join(stopped) or 'nothing'}", file=sys.stderr)
    if left:
        print("rnnlab: still running: " + "; ".join(left), file=sys.stderr)
        sys.exit(1)
    return None


def main(argv: list[str] | None = None) -> None:
    cli.main(COMMAND, run, argv)


if __name__ == "__main__":
    main()
