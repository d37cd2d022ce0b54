"""Run folders: where a run writes its config, overrides, environment, log, checkpoints and summary.

    outputs/<YYYY-MM-DD>/<HH-MM-SS>-<id>/            one run
    outputs/multirun/<YYYY-MM-DD>/<HH-MM-SS>-<id>/N/  job N of a multirun
"""

from __future__ import annotations

import json
import logging
import os
import platform
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


def new_folder(output_dir: str | Path, multirun: bool = False) -> Path:
    """Create a fresh, uniquely named folder; it never reuses an existing one."""
    base = Path(output_dir) / ("multirun" if multirun else "")
    now = datetime.now()
    for _ in range(100):
        path = base / now.strftime("%Y-%m-%d") / f"{now.strftime('%H-%M-%S')}-{secrets.token_hex(3)}"
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

    from dlkit.checkpointing import CheckpointWriteError

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
    path.write_text(OmegaConf.to_yaml(OmegaConf.create(redact.value(OmegaConf.to_container(cfg, resolve=True)))),
                    encoding="utf-8")


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


def relocate(value: Any, old: str | Path, new: str | Path) -> tuple[Any, bool]:
    """(value with every path inside folder `old` re-pointed into folder `new`, whether any was): strings, and the
    keys and items of dicts, lists and tuples, are looked at; anything else (tensors) is kept as it is."""
    old, new = str(old).rstrip(os.sep), str(new).rstrip(os.sep)
    if isinstance(value, str):
        if value == old or value.startswith(old + os.sep):
            return new + value[len(old):], True
        return value, False
    if isinstance(value, dict):
        items = [(relocate(k, old, new), relocate(v, old, new)) for k, v in value.items()]
        return {k: v for (k, _), (v, _) in items}, any(a or b for (_, a), (_, b) in items)
    if isinstance(value, (list, tuple)):
        items = [relocate(v, old, new) for v in value]
        return type(value)(v for v, _ in items), any(changed for _, changed in items)
    return value, False


def relocate_config(cfg: DictConfig, run_dir: Path) -> DictConfig:
    """A run's saved config for the folder it now lives in (it may have been copied or moved): config.yaml holds
    resolved absolute paths, so paths.run_dir and everything under it (checkpoint folder, logger folders) still
    name the folder it was trained in."""
    old = cfg.get("paths", {}).get("run_dir")
    if not old or Path(old) == run_dir:
        return cfg
    moved, _ = relocate(OmegaConf.to_container(cfg), old, run_dir)
    cfg = OmegaConf.create(moved)
    if cfg.paths.get("multirun_dir") and Path(cfg.paths.multirun_dir) == Path(old).parent:
        cfg.paths.multirun_dir = str(run_dir.parent)  # a multirun job moved with its multirun folder
    return cfg


def relocate_checkpoint(path: Path, old: str | Path, new: str | Path) -> bool:
    """Re-point the paths a Lightning checkpoint's callbacks recorded (ModelCheckpoint's folder, best and last
    checkpoints) from folder `old` to `new`, rewriting the file atomically; False when none pointed into `old`.

    Without this, a resumed copy of a run would not know its own best checkpoints (Lightning drops them when the
    folder differs) and would test the original's best checkpoint at the end.
    """
    import torch

    from dlkit.checkpointing import AtomicCheckpointIO

    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    callbacks, changed = relocate(checkpoint.get("callbacks") or {}, old, new)
    if changed:
        checkpoint["callbacks"] = callbacks
        AtomicCheckpointIO().save_checkpoint(checkpoint, path)
    return changed


def clean_for_resume(checkpoints: Path, checkpoint: Path) -> list[str]:
    """Before resuming from `checkpoint`, remove what the lost segment after it left in the checkpoint folder:
    temporary files of interrupted writes, and checkpoints written after it (the resumed run writes them again;
    kept, a best-*.ckpt of the lost segment would stand beside the resumed run's own, whatever save_top_k says).
    Returns the names removed."""
    if not checkpoints.is_dir():
        return []
    since = checkpoint.stat().st_mtime_ns
    removed = []
    for path in sorted(checkpoints.iterdir()):
        stale = path.name.endswith(".tmp") or (path.suffix == ".ckpt" and path != checkpoint
                                                and path.stat().st_mtime_ns > since)
        if stale and path.is_file():
            path.unlink()
            removed.append(path.name)
    return removed


def is_run_folder(path: Path) -> bool:
    """A folder dlkit wrote a run into."""
    return (path / SUMMARY).is_file() and (path / CONFIG).is_file()


def find_runs(root: str | Path) -> list[Path]:
    """Every run folder under root (a run folder itself counts), newest first."""
    root = Path(root)
    if is_run_folder(root):
        return [root]
    runs = [p.parent for p in root.rglob(SUMMARY) if (p.parent / CONFIG).is_file()] if root.is_dir() else []
    return sorted(runs, key=lambda p: (read_json(p / SUMMARY).get("started", ""), str(p)), reverse=True)


def latest_multirun(output_dir: str | Path = "outputs") -> Path:
    """The newest multirun folder under output_dir (outputs/multirun/<date>/<time>-<id>)."""
    from dlkit.errors import UsageError

    folders = sorted(Path(output_dir).glob("multirun/*/*"), key=lambda p: (p.parent.name, p.name))
    folders = [f for f in folders if f.is_dir()]
    if not folders:
        raise UsageError(f"--multirun latest: no multirun under {output_dir}; run one first (dlkit train -m ...).")
    return folders[-1]


def find_run(ref: str | Path, output_dir: str | Path = "outputs") -> Path:
    """A run folder from a path (folder or a checkpoint file inside it), a run id (the hex suffix), or `latest`."""
    from dlkit.errors import UsageError

    path = Path(ref).expanduser()
    if path.is_file():
        path = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    if is_run_folder(path):
        return path.resolve()
    runs = find_runs(output_dir)
    if str(ref) == "latest":
        if not runs:
            raise UsageError(f"no runs under {output_dir}: train one first (dlkit train).")
        return runs[0].resolve()
    matches = [r for r in runs if r.name.endswith(f"-{ref}") or r.name == str(ref)
               or f"{r.parent.name}/{r.name}".endswith(str(ref))]
    if len(matches) == 1:
        return matches[0].resolve()
    if len(matches) > 1:
        raise UsageError(f"run id {ref!r} matches {len(matches)} runs under {output_dir}; give the folder path.")
    raise UsageError(f"no run {ref!r}: give a run folder, a run id (e.g. 9af716) or `latest` "
                     f"(see `dlkit runs list {output_dir}`).")


def torch_load(path: Path, mmap: bool = False) -> Any:
    """torch.load with weights_only safety (no code runs from the file), quiet about pickle protocols; with mmap
    the tensors are read only when touched (torch's zip format only)."""
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)


def torch_load_lazily(path: Path) -> Any:
    """torch_load memory-mapped where the file's format allows, else read whole: cheap for reading metadata."""
    try:
        return torch_load(path, mmap=True)
    except RuntimeError:  # not in torch's zip format
        return torch_load(path)


def _checkpoint_callbacks(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """(key, state) of each ModelCheckpoint callback recorded in a checkpoint; [] for an unreadable file."""
    try:
        checkpoint = torch_load_lazily(path)
    except Exception:  # noqa: BLE001 - any unreadable file just has no recorded state
        return []
    callbacks = checkpoint.get("callbacks") if isinstance(checkpoint, dict) else None
    return [(str(k), v) for k, v in (callbacks or {}).items()
            if str(k).startswith("ModelCheckpoint") and isinstance(v, dict)]


def best_checkpoint(checkpoints: Path) -> Path | None:
    """The checkpoint a run's ModelCheckpoint ranked best by its monitored score; None when there is none.

    last.ckpt records which file was best (found by name, so a copied or moved run still finds it); without that
    record each best-*.ckpt's own stored score decides (min or max, as recorded); without scores, last.ckpt, else
    the newest checkpoint.
    """
    if not checkpoints.is_dir():
        return None
    files = sorted(checkpoints.glob("*.ckpt"), key=lambda p: p.stat().st_mtime_ns, reverse=True)
    last = checkpoints / "last.ckpt"
    if last.is_file():
        for _, state in _checkpoint_callbacks(last):
            if state.get("monitor") is None:
                continue  # saves every N steps or epochs, ranked by nothing
            name = Path(str(state.get("best_model_path") or "")).name
            if name and (checkpoints / name).is_file():
                return checkpoints / name
    scored = []
    for path in (f for f in files if f.name != "last.ckpt"):
        for key, state in _checkpoint_callbacks(path):
            if state.get("monitor") is not None and state.get("current_score") is not None:
                sign = -1.0 if "'mode': 'max'" in key else 1.0
                scored.append((sign * float(state["current_score"]), path))
                break
    if scored:
        return min(scored, key=lambda item: item[0])[1]
    return last if last.is_file() else (files[0] if files else None)
