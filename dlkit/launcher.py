"""Run the jobs of a multirun elsewhere: SLURM through submitit (or submitit's local executor to try it).

Each job of the array runs the work it is given (jobs.RemoteJob: a dlkit job in its pre-made run folder). Before its
time limit Slurm sends the job SIGUSR2 (`launcher.signal_delay_s` ahead, submitit's `--signal`): the training
finishes its step, writes last.ckpt there, and the job requeues itself (`scontrol requeue`, at most
`launcher.max_requeues` times). A job that Slurm preempts or requeues gets SIGTERM and saves the same way; Slurm
restarts it. A restarted job finds the checkpoint in its folder and resumes it: same folder, same W&B run, one more
segment in summary.json.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from dlkit.errors import UsageError

# what the multirun records for a job that left the queue without a result
GONE = "its Slurm job ended without a result (cancelled, or killed: see {log})"


def requeue() -> None:
    """Put this Slurm job back in the queue; it restarts in the same folder and resumes from last.ckpt."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # Slurm ends this step at once: let it exit as it was going to
    subprocess.run(["scontrol", "requeue", os.environ.get("SLURM_JOB_ID", "")], check=True, timeout=60)


def check(launcher: DictConfig) -> None:
    """Refuse a launcher that cannot work on this machine, before any folder is made."""
    import shutil

    try:
        import submitit  # noqa: F401
    except ImportError as err:
        raise UsageError("launcher=slurm needs submitit: pip install 'dlkit[slurm]'") from err
    if launcher.get("cluster", "slurm") != "slurm":
        return
    try_here = "run it on a cluster's login node, or try the submission path here with launcher.cluster=local."
    if shutil.which("sbatch") is None:
        raise UsageError(f"launcher=slurm submits with SLURM's sbatch, which is not on this machine: {try_here}")
    try:
        answer = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise UsageError(f"launcher=slurm: no Slurm controller answers sinfo ({err}): {try_here}") from err
    if answer.returncode != 0:
        reason = (answer.stderr.strip().splitlines() or ["no answer"])[-1]
        raise UsageError(f"launcher=slurm: Slurm's commands are installed but no cluster answers (sinfo: {reason}): "
                         f"{try_here}")


def _gpus_per_node(launcher: DictConfig, trainer: DictConfig) -> int:
    """launcher.gpus_per_node, or (null) the GPUs the trainer uses on a node: none for a CPU trainer."""
    if launcher.get("gpus_per_node") is not None:
        return int(launcher.gpus_per_node)
    if trainer.get("accelerator") in ("cpu", None):
        return 0
    from dlkit.distributed import local_processes

    return local_processes(trainer)  # (one process per GPU)


def _parameters(launcher: DictConfig, trainer: DictConfig) -> dict[str, Any]:
    from dlkit.distributed import local_processes

    parameters: dict[str, Any] = {
        "timeout_min": launcher.timeout_min, "nodes": launcher.nodes,
        "tasks_per_node": launcher.tasks_per_node or local_processes(trainer),
        "cpus_per_task": launcher.cpus_per_task, "mem_gb": launcher.mem_gb,
        "slurm_array_parallelism": launcher.array_parallelism,
    }
    if launcher.get("cluster", "slurm") == "slurm":
        gpus = _gpus_per_node(launcher, trainer)
        parameters.update(slurm_partition=launcher.partition, slurm_account=launcher.account, slurm_qos=launcher.qos,
                          slurm_signal_delay_s=launcher.signal_delay_s,
                          slurm_additional_parameters=dict(launcher.additional_parameters or {}),
                          **({"gpus_per_node": gpus} if gpus else {}))
    return {k: v for k, v in parameters.items() if v is not None}


def submit(launcher: DictConfig, trainer: DictConfig, work: list[Callable[[], dict[str, Any]]],
           root: Path) -> list[dict[str, Any]]:
    """Submit every piece of work (a picklable callable that returns the job's {"status", "metrics", "error"}) as one
    job array and wait for the results (the caller has check()ed the launcher before making any folder)."""
    import submitit

    logging.getLogger("submitit").setLevel(logging.ERROR)  # its notes on a cluster without accounting (sacct)
    executor = submitit.AutoExecutor(folder=str(launcher.get("folder") or root / ".submitit"),
                                     cluster=launcher.get("cluster", "slurm"))
    executor.update_parameters(**_parameters(launcher, trainer))
    with executor.batch():
        submitted = [executor.submit(piece) for piece in work]
    return [_wait(job) for job in submitted]


def _wait(job: Any, poll_s: float = 1.0) -> dict[str, Any]:
    """The result of one submitted job (of its rank 0 under srun). Where the cluster keeps no accounting (sacct),
    submitit would wait forever for a job that left no result: such a job is reported failed once squeue no longer
    lists it (cancelled, or killed)."""
    tasks = [job.task(i) for i in range(job.num_tasks)] if job.num_tasks > 1 else [job]
    accounting = job.__class__.__name__ != "SlurmJob" or _has_accounting()
    gone_since: float | None = None
    while not all(task.paths.result_pickle.exists() for task in tasks):
        if accounting:
            if job.done():
                break
        elif not _in_queue(job.job_id):
            gone_since = gone_since or time.monotonic()
            # a requeued job shows as ended (CANCELLED) until its step has stopped (Slurm's KillWait, 30 s by
            # default) and then pends again; a result just written may still be on its way: wait before saying gone
            if time.monotonic() - gone_since > GONE_AFTER_S:
                return {"status": "failed", "metrics": {}, "error": GONE.format(log=job.paths.stdout)}
        else:
            gone_since = None
        time.sleep(poll_s)
    try:
        return job.results()[0]
    except Exception as err:  # noqa: BLE001 - the job's own error, one line
        return {"status": "failed", "metrics": {}, "error": str(err).strip().splitlines()[-1][:300]}


def _has_accounting() -> bool:
    """Whether this cluster's sacct answers (submitit asks it for job states)."""
    with contextlib.suppress(Exception):
        return subprocess.run(["sacct", "-n", "-X", "-j", "1"], capture_output=True, timeout=30).returncode == 0
    return False


GONE_AFTER_S = 120
ENDED = {"BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL", "OUT_OF_MEMORY", "TIMEOUT"}


def _in_queue(job_id: str) -> bool:
    """Whether squeue still knows the job in a state it can go on from (pending, running, requeued, completing)."""
    with contextlib.suppress(Exception):
        shown = subprocess.run(["squeue", "-h", "-t", "all", "-j", job_id, "-o", "%T"], capture_output=True,
                               text=True, timeout=30)
        states = set(shown.stdout.split())
        return shown.returncode == 0 and bool(states - ENDED)
    return True  # squeue not answering: assume it is still there
