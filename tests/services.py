"""Real services for the tests, started on 127.0.0.1 in a temporary folder and stopped afterwards.

- `slurm_cluster`: a one-node Slurm cluster (munged, slurmctld, slurmd from Debian's slurm-wlm and munge) with a
  generated slurm.conf: 2 CPUs, partition `debug`, jobs forgotten 2 s after they end. It runs as root, as a real
  cluster's daemons do; the commands (sbatch, srun, squeue, scontrol) find it through SLURM_CONF.
- `postgres_server`: a PostgreSQL server (initdb + pg_ctl on a free port), run by the `postgres` system user
  because PostgreSQL refuses to run as root.
- `model_server`: `dlkit serve RUN` on a free port, as a user starts it (the console script, a process of its own).
- `browser`: headless Chromium (Debian's chromium) driven through Debian's chromedriver on a free 127.0.0.1 port
  (Selenium), with the network switched off, so a page that needs anything beyond its own file fails.

Each waits, with a bounded time, until the service answers, and raises with the service's own log when it does not.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SLURM_BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "srun", "sinfo", "scontrol")


def free_port() -> int:
    """A TCP port on 127.0.0.1 nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def missing(binaries: tuple[str, ...]) -> list[str]:
    return [name for name in binaries if shutil.which(name) is None and not Path("/usr/sbin", name).exists()]


def _binary(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


def _wait(ready, what: str, timeout: float, logs: list[Path]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        time.sleep(0.2)
    tails = "\n".join(f"--- {log}\n{log.read_text(errors='replace')[-3000:]}" for log in logs if log.exists())
    raise RuntimeError(f"{what} did not come up within {timeout:g} s\n{tails}")


@dataclass
class SlurmCluster:
    """A running one-node cluster: the environment its commands need, and where its files are."""

    folder: Path
    env: dict[str, str]
    node: str

    def run(self, *command: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
        return subprocess.run(list(command), env={**os.environ, **self.env}, capture_output=True, text=True,
                              timeout=timeout, check=check)


SLURM_CONF = """\
ClusterName=dlkit-test
SlurmctldHost={node}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={folder}/munge/munge.socket,cred_expire=10
CredType=cred/munge
StateSaveLocation={folder}/state
SlurmdSpoolDir={folder}/spool
SlurmctldPidFile={folder}/slurmctld.pid
SlurmdPidFile={folder}/slurmd.pid
SlurmctldLogFile={folder}/slurmctld.log
SlurmdLogFile={folder}/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
# the main scheduler alone, every 2 s: a job requeued near its one-minute limit that backfill started got its
# --signal warning at once (Slurm sends it up to 60 s early), before Python could handle it
SchedulerType=sched/builtin
SchedulerParameters=sched_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
PropagateResourceLimits=NONE
ReturnToService=2
MinJobAge=2
KillWait=10
InactiveLimit=0
SlurmdTimeout=60
JobRequeue=1
NodeName={node} NodeAddr=127.0.0.1 NodeHostname={node} CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN
PartitionName=debug Nodes={node} Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
"""


@contextlib.contextmanager
def slurm_cluster(folder: Path, cpus: int = 2, memory_mb: int = 8000, timeout: float = 60) -> Iterator[SlurmCluster]:
    """Start munged, slurmctld and slurmd for a one-node cluster on this machine; stop them at the end."""
    node = socket.gethostname().split(".")[0]
    for sub in ("munge", "state", "spool"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    key = folder / "munge" / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    conf = folder / "slurm.conf"
    conf.write_text(SLURM_CONF.format(node=node, folder=folder, ctld_port=free_port(), slurmd_port=free_port(),
                                      cpus=cpus, memory_mb=memory_mb))
    env = {"SLURM_CONF": str(conf)}
    full_env = {**os.environ, **env}
    started: list[subprocess.Popen] = []
    logs = [folder / "munged.log", folder / "slurmctld.log", folder / "slurmd.log"]
    cluster = SlurmCluster(folder, env, node)
    try:
        started.append(subprocess.Popen(
            [_binary("munged"), "--foreground", "--force", f"--socket={folder}/munge/munge.socket",
             f"--key-file={key}", f"--pid-file={folder}/munge/munged.pid", f"--log-file={folder}/munged.log",
             f"--seed-file={folder}/munge/munged.seed"],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT))
        _wait(lambda: (folder / "munge/munge.socket").exists(), "munged", timeout, logs)
        started.append(subprocess.Popen([_binary("slurmctld"), "-D", "-i", "-f", str(conf)], env=full_env,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT))
        started.append(subprocess.Popen([_binary("slurmd"), "-D", "-f", str(conf), "-N", node], env=full_env,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT))

        def idle() -> bool:
            for process in started:
                if process.poll() is not None:
                    raise RuntimeError(f"{process.args[0]} exited with {process.returncode}:\n" + "\n".join(
                        log.read_text(errors="replace")[-3000:] for log in logs if log.exists()))
            state = cluster.run("sinfo", "-h", "-N", "-o", "%T", check=False, timeout=10)
            return state.returncode == 0 and state.stdout.strip() == "idle"

        _wait(idle, "the Slurm node", timeout, logs)
        yield cluster
    finally:
        with contextlib.suppress(Exception):
            cluster.run("scancel", "--full", "--user=root", check=False, timeout=10)
        for process in reversed(started):
            process.terminate()
        for process in reversed(started):
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@dataclass
class PostgresServer:
    """A running PostgreSQL server: its URL for SQLAlchemy / Optuna, and its folder."""

    folder: Path
    port: int
    database: str = "dlkit"
    user: str = "postgres"

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://{self.user}@127.0.0.1:{self.port}/{self.database}"


def postgres_bin() -> Path | None:
    """The folder of Debian's PostgreSQL server binaries (initdb, pg_ctl), the newest installed."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return found[-1].parent if found else None


@contextlib.contextmanager
def postgres_server(timeout: float = 60) -> Iterator[PostgresServer]:
    """initdb a cluster in a new temporary folder (one the `postgres` user can reach: pytest's are private to
    root), start it on a free port on 127.0.0.1 (trust auth), create the database; stop and delete it at the end."""
    import tempfile

    bin_dir = postgres_bin()
    if bin_dir is None:
        raise RuntimeError("PostgreSQL's server binaries are not installed (apt-get install postgresql)")
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    folder = Path(tempfile.mkdtemp(prefix="dlkit-postgres-"))
    data = folder / "data"
    if as_postgres:
        shutil.chown(folder, "postgres", "postgres")
    server = PostgresServer(folder, free_port())
    log = folder / "server.log"
    subprocess.run([*as_postgres, str(bin_dir / "initdb"), "-D", str(data), "-U", server.user, "--auth=trust",
                    "--no-sync", "-E", "UTF8"], check=True, capture_output=True, timeout=timeout)
    options = f"-h 127.0.0.1 -p {server.port} -k {folder} -c fsync=off -c max_connections=50"
    subprocess.run([*as_postgres, str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options,
                    "-w", "-t", str(int(timeout)), "start"], check=True, capture_output=True, timeout=timeout + 5)
    try:
        subprocess.run([*as_postgres, str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(server.port),
                        "-U", server.user, server.database], check=True, capture_output=True, timeout=timeout)
        yield server
    finally:
        subprocess.run([*as_postgres, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
                       capture_output=True, timeout=timeout)
        shutil.rmtree(folder, ignore_errors=True)


@dataclass
class ModelServer:
    url: str
    process: subprocess.Popen
    log: Path

    def stop(self, timeout: float = 60, sig: str = "SIGTERM") -> tuple[int, str]:
        """SIGTERM, as a service manager stops it (or SIGINT, Ctrl+C): (exit code, everything it printed)."""
        import signal

        if self.process.poll() is None:
            self.process.send_signal(getattr(signal, sig))
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        return code, self.log.read_text(errors="replace")


@contextlib.contextmanager
def model_server(run: Path, *options: str, cwd: Path, timeout: float = 90) -> Iterator[ModelServer]:
    """`dlkit serve RUN OPTIONS` on a free port of 127.0.0.1, ready (GET /health answers); stopped at the end."""
    import sys
    import urllib.request

    port = free_port()
    log = cwd / f"serve-{port}.log"
    script = Path(sys.executable).with_name("dlkit")
    with log.open("w") as out:
        process = subprocess.Popen([str(script), "serve", str(run), "--port", str(port), *options], cwd=cwd,
                                   stdout=out, stderr=subprocess.STDOUT)
    server = ModelServer(f"http://127.0.0.1:{port}", process, log)

    def ready() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"dlkit serve exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(server.url + "/health", timeout=2) as answer:
                return answer.status == 200
        except OSError:
            return False

    try:
        _wait(ready, "dlkit serve", timeout, [log])
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def browser(width: int = 1400, height: int = 1000, timeout: float = 60) -> Iterator[Any]:
    """A headless Chromium that keeps the page's console messages (driver.get_log("browser")) and cannot reach the
    network; quit at the end."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = _binary("chromium")
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     f"--window-size={width},{height}"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # chromedriver answers on 127.0.0.1 only (its default allows local clients alone)
    service = Service(executable_path=_binary("chromedriver"), port=free_port())
    driver = webdriver.Chrome(service=service, options=options)
    try:
        driver.set_page_load_timeout(timeout)
        driver.set_script_timeout(timeout)
        driver.execute_cdp_cmd("Network.enable", {})
        driver.execute_cdp_cmd("Network.emulateNetworkConditions", {"offline": True, "latency": 0,
                                                                     "downloadThroughput": -1, "uploadThroughput": -1})
        yield driver
    finally:
        driver.quit()
