"""Run the jobs of a multirun elsewhere: SLURM through submitit (or submitit's local executor to try it)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from dlkit.errors import UsageError


def run_remote(overrides: list[str], run_dir: str, config_dir: str | None) -> dict[str, Any]:
    """What a submitted job runs: the same prepare + run_job as a local job, in its pre-made folder."""
    from dlkit import runner

    job = runner.prepare(overrides, config_dir)
    with contextlib.suppress(Exception):  # a failure is recorded in the job and its summary.json
        runner.run_job(job, Path(run_dir))
    return {"status": job.status, "metrics": job.metrics, "error": job.error}


def check(launcher: DictConfig) -> None:
    """Refuse a launcher that cannot work on this machine, before any folder is made."""
    import shutil

    try:
        import submitit  # noqa: F401
    except ImportError as err:
        raise UsageError("launcher=slurm needs submitit: pip install 'dlkit[slurm]'") from err
    if launcher.get("cluster", "slurm") == "slurm" and shutil.which("sbatch") is None:
        raise UsageError("launcher=slurm submits with SLURM's sbatch, which is not on this machine: run it on a "
                         "cluster's login node, or try the submission path here with launcher.cluster=local.")


def submit(launcher: DictConfig, jobs: list[tuple[list[str], Path]], root: Path,
           config_dir: str | None) -> list[dict[str, Any]]:
    """Submit every (overrides, run folder) as one job array and wait for the results."""
    import submitit

    check(launcher)
    executor = submitit.AutoExecutor(folder=str(launcher.get("folder") or root / ".submitit"),
                                     cluster=launcher.get("cluster", "slurm"))
    parameters: dict[str, Any] = {
        "timeout_min": launcher.timeout_min, "nodes": launcher.nodes, "tasks_per_node": launcher.tasks_per_node,
        "cpus_per_task": launcher.cpus_per_task, "mem_gb": launcher.mem_gb,
        "slurm_array_parallelism": launcher.array_parallelism,
    }
    if launcher.get("cluster", "slurm") == "slurm":
        parameters.update(gpus_per_node=launcher.gpus_per_node, slurm_partition=launcher.partition,
                          slurm_account=launcher.account, slurm_qos=launcher.qos,
                          slurm_additional_parameters=dict(launcher.additional_parameters or {}))
    executor.update_parameters(**{k: v for k, v in parameters.items() if v is not None})
    with executor.batch():
        submitted = [executor.submit(run_remote, overrides, str(run_dir), config_dir) for overrides, run_dir in jobs]
    results = []
    for job in submitted:
        result = job.result()
        results.append(result[0] if isinstance(result, list) else result)  # one entry per task under srun
    return results
