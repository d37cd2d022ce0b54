"""A run's records in its folder: config, overrides, environment, summary, log and the one-writer lock.

    outputs/<YYYY-MM-DD>/<HH-MM-SS>-<id>/            one run
    outputs/multirun/<YYYY-MM-DD>/<HH-MM-SS>-<id>/N/  job N of a multirun
        config.yaml  overrides.yaml  environment.json  summary.json  train.log  checkpoints/
"""

from __future__ import annotations

import json
import logging
import os
import platform
import re
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from omegaconf import DictConfig, OmegaConf

from dlkit import redact
from dlkit.config import to_yaml

CONFIG = "config.yaml"
OVERRIDES = "overrides.yaml"
SUMMARY = "summary.json"
ENVIRONMENT = "environment.json"
LOG = "train.log"
LOCK = ".lock"
# the writer locks this process holds: run folder -> its open lock file
_held: dict[str, IO[str]] = {}


@contextmanager
def writing(run_dir: Path) -> Iterator[None]:
    """Hold the run folder's writer lock while the block runs: one process writes a run folder at a time.

    The lock (flock on RUN/.lock, released by the kernel when the process dies, even by SIGKILL) names its holder;
    a second writer is refused with one line naming it. Re-entrant within a process; the other ranks of a DDP run
    write nothing and take no lock.
    """
    key = str(Path(run_dir).resolve())
    if key in _held:
        yield
        return
    try:
        import fcntl
    except ImportError:  # Windows: no lock
        yield
        return
    from dlkit.errors import DlkitError

    handle = open(Path(run_dir) / LOCK, "a+", encoding="utf-8")  # noqa: SIM115 - held until the block ends
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise DlkitError(f"{run_dir} is being written by {holder}: wait for that run to end (or stop it), "
                         "then try again.") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"process {os.getpid()} on {platform.node()} (since {datetime.now().isoformat(timespec='seconds')})")
    handle.flush()
    _held[key] = handle
    try:
        yield
    finally:
        _held.pop(key, None)
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


def process_start(pid: int) -> float | None:
    """When a process started (seconds since the epoch), from /proc on Linux; None where that cannot be told."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
        return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration, AttributeError):
        return None


def process_alive(pid: int | None, host: str | None = None, started_by: float | None = None) -> bool | None:
    """Whether the process `pid` of `host` still runs: None when that cannot be told (another host, no pid).

    With `started_by` (seconds since the epoch), a process that started later than that (a few seconds of slack) is
    another process that reuses the pid: the one asked about is gone.
    """
    if not pid or (host and host != platform.node()):
        return None
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    except OSError:
        return None
    started = process_start(int(pid))
    return started is None or started_by is None or started <= float(started_by) + 5


def run_id() -> str:
    """Six random hex digits that the command line reads back as text: never all digits or digits-e-digits, which
    Hydra would turn into a number (`model.pretrained=4e3810` is infinity, `resume=123456` an integer)."""
    while True:
        candidate = secrets.token_hex(3)
        if not re.fullmatch(r"[0-9]+(e[0-9]+)?", candidate):
            return candidate


def new_folder(output_dir: str | Path, multirun: bool = False) -> Path:
    """Create a fresh, uniquely named folder; it never reuses an existing one."""
    base = Path(output_dir) / ("multirun" if multirun else "")
    now = datetime.now()
    for _ in range(100):
        path = base / now.strftime("%Y-%m-%d") / f"{now.strftime('%H-%M-%S')}-{run_id()}"
        try:
            path.mkdir(parents=True, exist_ok=False)
            return path.resolve()
        except FileExistsError:
            continue
        except OSError as err:
            from dlkit.errors import UsageError

            raise UsageError(f"paths.output_dir={output_dir}: cannot make a run folder there ({err.strerror}); set "
                             "paths.output_dir to a folder you can write to.") from err
    raise RuntimeError(f"could not create a unique run folder under {base}")


def disk_full_message(err: BaseException, output_dir: str | Path) -> str | None:
    """One line for a write that failed for lack of room or rights (free space and paths.output_dir named), or None
    when `err` is not such a failure."""
    import errno

    from dlkit.errors import CheckpointWriteError

    codes = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM}
    if not isinstance(err, CheckpointWriteError) and not (isinstance(err, OSError) and err.errno in codes):
        return None
    what = str(err) if isinstance(err, CheckpointWriteError) else f"could not write {err.filename} ({err.strerror})"
    try:
        free = f"{shutil.disk_usage(output_dir).free / 2**30:.1f} GiB free"
    except OSError:
        free = "free space unknown"
    return (f"{what}; {free} under paths.output_dir={output_dir}: free some space, or set paths.output_dir to a disk "
            "with room.")


def discard(path: Path, root: str | Path) -> None:
    """Delete a run folder in which nothing ran, and the folders up to root (included) that it leaves empty."""
    shutil.rmtree(path, ignore_errors=True)
    root = Path(root).resolve()
    for parent in Path(path).resolve().parents:
        if not parent.is_relative_to(root):
            break
        try:
            parent.rmdir()
        except OSError:  # not empty: other runs live there
            break


def job_folder(multirun_dir: Path, job: int) -> Path:
    """Folder of job N inside a multirun folder."""
    path = multirun_dir / str(job)
    path.mkdir(parents=True, exist_ok=False)
    return path


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (temporary file, then rename)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(redact.value(data), indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def read_json(path: Path) -> dict[str, Any]:
    """A JSON file as a dict, or {} when it is missing or unreadable."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def write_eval(folder: Path, record: dict[str, Any]) -> Path:
    """Save one `dlkit eval` result as eval-<time>.json in the run folder (two evals within a second keep both);
    the file written."""
    from dlkit.errors import DlkitError

    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    target, number = folder / f"eval-{stamp}.json", 1
    while target.exists():
        target, number = folder / f"eval-{stamp}-{number}.json", number + 1
    try:
        write_json(target, record)
    except OSError as err:
        raise DlkitError(f"could not save the metrics to {target} ({err.strerror}); "
                         "make the folder writable or copy the checkpoint elsewhere.") from err
    return target


def record_start(run_dir: Path, cfg: DictConfig, overrides: list[str], choices: dict[str, str] | None = None,
                 command: str = "train", resumed_from: str | None = None) -> None:
    """Write config.yaml, overrides.yaml, environment.json and a 'running' summary.json (a resumed run keeps
    its first start and adds the resume to `resumes`)."""
    process = {"pid": os.getpid(), "pid_started": process_start(os.getpid()), "host": platform.node()}
    now = datetime.now().isoformat(timespec="seconds")
    segment = {"started": now, **process, **({"slurm_job": _slurm_job()} if "SLURM_JOB_ID" in os.environ else {})}
    if resumed_from:
        summary = read_json(run_dir / SUMMARY)
        summary.update(status="running", **process, segments=[*summary.get("segments", []), segment],
                       resumes=[*summary.get("resumes", []), {"at": now, "from": resumed_from,
                                                               "overrides": list(overrides)}])
        save_config(cfg, run_dir / CONFIG)
        write_json(run_dir / SUMMARY, summary)
        return
    save_config(cfg, run_dir / CONFIG)
    (run_dir / OVERRIDES).write_text(OmegaConf.to_yaml(OmegaConf.create(redact.value(list(overrides)))),
                                     encoding="utf-8")
    write_json(run_dir / ENVIRONMENT, environment())
    write_json(run_dir / SUMMARY, {
        "status": "running", "command": command, "name": cfg.get("name"), "overrides": list(overrides),
        "choices": choices or {}, "optimized_metric": cfg.get("optimized_metric"),
        "started": now, **process, "segments": [segment],
    })


def save_config(cfg: DictConfig, path: Path) -> None:
    """The composed config as YAML, resolved, with passwords masked."""
    path.write_text(to_yaml(redact.value(OmegaConf.to_container(cfg, resolve=True))), encoding="utf-8")


def _slurm_job() -> str:
    """This Slurm job's id as squeue shows it (ARRAYJOB_TASK for a task of a job array)."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{array}_{task}" if array and task else os.environ["SLURM_JOB_ID"]


def record_end(run_dir: Path, status: str, metrics: dict[str, float] | None = None, error: str | None = None,
               started: float | None = None, **extra: Any) -> dict[str, Any]:
    """Update summary.json with the final status, metrics, duration, error and extra fields, and end the current
    segment with the same status and reason; return it."""
    summary = read_json(run_dir / SUMMARY)
    now = datetime.now().isoformat(timespec="seconds")
    summary.update(status=status, finished=now, metrics=metrics or {}, error=error, **extra)
    if summary.get("segments"):  # each start of the run (a resume or a requeued job starts a new one) and its end
        summary["segments"][-1].update(ended=now, status=status, **({"reason": error} if error else {}))
    if started is not None:
        summary["duration_s"] = round(time.time() - started, 2)
    checkpoints = run_dir / "checkpoints"
    if checkpoints.is_dir():
        summary["checkpoints"] = sorted(p.name for p in checkpoints.glob("*.ckpt"))
    write_json(run_dir / SUMMARY, summary)
    return summary


def mark_requeued(run_dir: Path, reason: str) -> None:
    """Say in summary.json that the run's scheduler job was put back in the queue: it continues when it restarts."""
    summary = read_json(run_dir / SUMMARY)
    summary.update(status="requeued", error=reason)
    if summary.get("segments"):
        summary["segments"][-1].update(status="requeued", reason=reason)
    write_json(run_dir / SUMMARY, summary)


def environment() -> dict[str, Any]:
    """Versions, git commit, host and devices: enough to reproduce where a run ran."""
    import torch

    versions = {}
    for name in ("torch", "pytorch_lightning", "hydra", "omegaconf", "torchmetrics", "tokenizers", "wandb",
                 "optuna", "dlkit"):
        try:
            versions[name] = __import__(name).__version__
        except Exception:  # noqa: BLE001 - an optional package may be missing
            continue
    cuda = torch.cuda.is_available()
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "host": platform.node(),
        "command": sys.argv,
        "cwd": os.getcwd(),
        "git": _git(),
        "versions": versions,
        "cpu_count": os.cpu_count(),
        "cuda": torch.version.cuda if cuda else None,
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else [],
    }


def _git() -> dict[str, Any] | None:
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        if commit.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True, timeout=5)
        return {"commit": commit.stdout.strip(), "dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return None


class _LogFile(logging.FileHandler):
    """train.log: a record that cannot be written (a full disk) is dropped, not printed as a traceback."""

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging's name
        pass


@contextmanager
def log_to(run_dir: Path):
    """Copy dlkit's and Lightning's log records, and Python warnings, into <run>/train.log while the block runs."""
    handler = _LogFile(run_dir / LOG, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    names = ("dlkit", "pytorch_lightning", "lightning_fabric", "lightning.pytorch", "py.warnings")
    loggers = [logging.getLogger(n) for n in names]
    for logger in loggers:
        logger.addHandler(handler)
        if logger.level == logging.NOTSET or logger.level > logging.INFO:
            logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
        handler.close()
