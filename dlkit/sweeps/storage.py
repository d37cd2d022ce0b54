"""The study's storage shared by every process of a sweep: opening it, claiming trials under a lock (a file lock
between the processes of a machine, a PostgreSQL advisory lock between machines), counting them, and queueing
again the trials of processes that died.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dlkit.errors import UsageError
from dlkit.runs import records

SWEEP_FILE = "sweep.json"
LOCK_FILE = ".claim.lock"


def this_process() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def storage_of(url: str) -> Any:
    """Optuna storage for a URL; SQLite waits for its lock (parallel workers write at once) instead of failing."""
    import optuna

    if url.startswith("sqlite:"):
        return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 120}})
    return url


@contextlib.contextmanager
def claim_lock(sweep_dir: Path, storage: str | None = None, study: str = "") -> Iterator[None]:
    """Serialise claiming trials: between the processes of this machine (a lock file in the sweep folder) and, on a
    PostgreSQL storage that other machines share, between machines (an advisory lock of the database, held for
    the claim only and released by the server if this process dies)."""
    with _file_lock(sweep_dir), database_lock(storage, study):
        yield


@contextlib.contextmanager
def _file_lock(sweep_dir: Path) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # Windows: no lock; processes may then overshoot n_trials by one now and then
        yield
        return
    with open(sweep_dir / LOCK_FILE, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def database_lock(storage: str | None, study: str) -> Iterator[None]:
    if not storage or not storage.startswith("postgresql"):
        yield
        return
    import sqlalchemy

    key = int.from_bytes(hashlib.sha256(f"dlkit claim {study}".encode()).digest()[:8], "little", signed=True)
    with _engine(storage).connect() as connection:
        connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"), {"key": key})
        try:
            yield
        finally:
            connection.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:key)"), {"key": key})


@functools.cache
def _engine(url: str) -> Any:
    import sqlalchemy

    return sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)


def process_alive(trial: Any) -> bool | None:
    """Whether the process that runs a trial (its `process` attribute, host:pid) still lives.

    None when that cannot be told: another host, or no process recorded. A pid in use by a process that
    started after the trial did is another process (the pid was reused): the trial's is gone.
    """
    host, _, pid = str(trial.user_attrs.get("process", "")).rpartition(":")
    if not host or not pid.isdigit():
        return None
    started = trial.datetime_start.timestamp() if trial.datetime_start is not None else None
    return records.process_alive(int(pid), host, started_by=started)


def requeue(study, trial_id: int, number: int, params: dict[str, Any]) -> None:
    """Mark a trial failed (interrupted) and queue its very parameters again (a retry). A trial stopped before
    it had parameters is not retried: it did not count, so a new trial takes its place anyway."""
    from optuna.trial import TrialState

    study._storage.set_trial_user_attr(trial_id, "interrupted", True)
    study._storage.set_trial_state_values(trial_id, TrialState.FAIL)
    if params:
        study.enqueue_trial(params, user_attrs={"retry_of": number}, skip_if_exists=False)


def recover_interrupted(study) -> int:
    """Trials left RUNNING by a process that is gone: mark them failed (interrupted) and queue their
    parameters again. A trial whose process still runs on this machine is left alone."""
    from optuna.trial import TrialState

    recovered = 0
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if process_alive(trial):
            continue
        requeue(study, trial._trial_id, trial.number, trial.params)
        recovered += 1
    return recovered


def _counts(trial: Any, with_unfinished: bool) -> bool:
    from optuna.trial import TrialState

    if trial.state == TrialState.FAIL:
        return not trial.user_attrs.get("interrupted")
    finished = (TrialState.COMPLETE, TrialState.PRUNED)
    return trial.state in (*finished, TrialState.RUNNING, TrialState.WAITING) if with_unfinished \
        else trial.state in finished


def counted(study) -> int:
    """Trials that count towards n_trials: complete, pruned, or failed by themselves (not interrupted)."""
    return sum(_counts(t, with_unfinished=False) for t in study.get_trials(deepcopy=False))


def planned(study) -> int:
    """Trials counted, running, or queued: once these reach n_trials, no process claims another.

    One read of the study: counting finished and running trials in two reads would miss a trial that
    another process finishes in between, and claim one trial too many.
    """
    return sum(_counts(t, with_unfinished=True) for t in study.get_trials(deepcopy=False))


def claim(study, sweep_dir: Path, n_trials: int, storage: str | None = None):
    """A new trial for this process (a queued retry first), or None once the study has n_trials planned.

    Under the claim lock, so that two processes (of this machine, or of any on a shared PostgreSQL) never both take
    the last place.
    """
    with claim_lock(sweep_dir, storage, study.study_name):
        if planned(study) >= n_trials:
            return None
        trial = study.ask()
        trial.set_user_attr("process", this_process())
        return trial


def load(sweep: str | Path, output_dir: str | Path = "outputs"):
    """(study, folder, sweep.json) of a sweep folder, or of a sweep under <output_dir>/sweeps by name or latest."""
    import optuna

    path, root = Path(sweep), Path(output_dir) / "sweeps"
    if not (path / SWEEP_FILE).is_file():
        found = root.glob(f"*/{SWEEP_FILE}") if str(sweep) == "latest" else root.glob(f"{sweep}*/{SWEEP_FILE}")
        candidates = sorted(found, key=lambda p: p.stat().st_mtime) if str(sweep) == "latest" else sorted(found)
        if not candidates:
            raise UsageError(f"no sweep {str(sweep)!r} under {root}: give a sweep folder, or --output-dir where "
                             "the sweep ran (its paths.output_dir).")
        path = candidates[-1].parent
    info = json.loads((path / SWEEP_FILE).read_text())
    storage = info["storage"]
    if storage.startswith("sqlite:///") and Path(storage[len("sqlite:///"):]).name == "study.db" \
            and (path / "study.db").is_file():
        storage = f"sqlite:///{path / 'study.db'}"  # the folder's own database, wherever it is looked at from
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(study_name=info["study"], storage=storage_of(storage)), path, info
