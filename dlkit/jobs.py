"""What `dlkit train` runs: one job, or the jobs of a multirun (-m) one after another here or as a Slurm job array
(launcher=slurm), or an Optuna study (`-m hparams_search=NAME`).

A multirun gets outputs/multirun/<date>/<time>-<id>/<N>/ per job and a multirun.json + summary table in the
multirun folder. Every job is composed and checked before the first one starts; a failing job does not stop a
multirun unless fail_fast is set.
"""

from __future__ import annotations

import os
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import open_dict
from rich.markup import escape
from rich.table import Table

from dlkit import launcher, redact, runner, ui
from dlkit.config import expand_sweep
from dlkit.errors import DlkitError, Stopped, UsageError, stop_on_signals
from dlkit.runs import query, records

console = ui.console


def train(overrides: list[str], multirun: bool = False, config_dir: str | None = None,
          fail_fast: bool = False) -> list[runner.Job]:
    """Run one job, or every job of a multirun; return the jobs with their outcomes."""
    ui.quiet_third_party()
    first = runner.compose_job(expand_sweep(overrides)[0] if multirun else overrides, config_dir)
    folds = _folds_to_run(first, overrides)
    if folds:  # k-fold cross-validation: a multirun over the folds
        overrides, multirun = [*overrides, f"cv.fold={','.join(map(str, range(folds)))}"], True
    if not multirun:
        job = first
        if not job.cfg.get("resume"):
            console.print(f"Training {runner.describe(job)}")
        with ui.status("Importing PyTorch and Lightning, checking the config"):
            runner.check_job(job)
        if job.cfg.get("resume"):
            return [runner.resume(job)]
        runner.run_job(job, runner.new_run_dir(job.cfg))
        return [job]
    if any(o.startswith("hparams_search=") for o in overrides):  # `-m hparams_search=NAME` is an Optuna study
        from dlkit.sweeps import report

        report.run_and_report(overrides, config_dir)  # the same report as `dlkit sweep`
        return []
    jobs = [runner.compose_job(job_overrides, config_dir) for job_overrides in expand_sweep(overrides)]
    with ui.status(f"Importing PyTorch and Lightning, checking {len(jobs)} configs"):
        for job in jobs:
            runner.check_job(job)
    if jobs[0].cfg.launcher.name != "local":
        launcher.check(jobs[0].cfg.launcher)
    root = records.new_folder(jobs[0].cfg.paths.output_dir, multirun=True)
    console.print(f"[bold]Multirun[/] of {len(jobs)} jobs in {escape(str(root))}")
    if jobs[0].cfg.launcher.name != "local":
        return _launch_elsewhere(jobs, root, config_dir)
    for number, job in enumerate(jobs):
        with open_dict(job.cfg):
            job.cfg.paths.multirun_dir = str(root)
        console.rule(escape(f"job {number}: {' '.join(job.overrides) or '(defaults)'}"))
        try:
            runner.run_job(job, records.job_folder(root, number))
        except (KeyboardInterrupt, Stopped):
            _write_multirun(root, jobs)
            raise
        except Exception as err:  # noqa: BLE001 - one failed job must not stop the sweep
            if fail_fast:
                _write_multirun(root, jobs)
                raise
            console.print(f"[red]job {number} failed:[/] {escape(str(job.error or err))}")
    _write_multirun(root, jobs)
    print_jobs(jobs, root)
    return jobs


def _folds_to_run(job: runner.Job, overrides: list[str]) -> int:
    """cv.folds when every fold is to run (cv.fold not given); 0 otherwise."""
    cfg = job.cfg
    cv = cfg.get("cv") or {}
    if not cv.get("folds"):
        return 0
    if "folds" not in cfg.data:
        from dlkit.checks import data_options_for

        raise UsageError(f"cv.folds={cv.folds}: data={job.choices.get('data')} has no folds; "
                         "cross-validation is for text classification data: "
                         f"{', '.join(data_options_for(('text_classification',)))}.")
    if cv.get("fold") is not None:
        return 0
    if any(o.startswith(("hparams_search=", "cv.folds=")) and "," in o for o in overrides):
        raise UsageError("cv.folds runs the folds as a multirun itself: sweep other keys with -m, not cv.folds or "
                         "an hparams_search.")
    return int(cv.folds)


def cross_validation(jobs: list[runner.Job]) -> dict[str, Any] | None:
    """Each test metric's mean and standard deviation (n - 1) over the folds that finished; None: not a CV run."""
    folds = (jobs[0].cfg.get("cv") or {}).get("folds") if jobs else None
    if not folds:
        return None
    done = [j for j in jobs if j.status == "finished"]
    names = sorted({k for j in done for k in j.metrics if k.startswith(("test/", "best/"))})
    metrics = {}
    for name in names:
        values = [j.metrics[name] for j in done if name in j.metrics]
        metrics[name] = {"mean": statistics.fmean(values),
                         "std": statistics.stdev(values) if len(values) > 1 else 0.0, "values": values}
    return {"folds": int(folds), "finished": len(done), "metrics": metrics}


def _launch_elsewhere(jobs: list[runner.Job], root: Path, config_dir: str | None) -> list[runner.Job]:
    """Submit the jobs through the configured launcher (SLURM via submitit) and collect their outcomes."""
    folders = [records.job_folder(root, number) for number in range(len(jobs))]
    console.print(f"Submitting {len(jobs)} jobs with launcher={jobs[0].cfg.launcher.name}; waiting for them.")
    requeues = int(jobs[0].cfg.launcher.get("max_requeues", 3))
    work = [RemoteJob(j.overrides, str(f), config_dir, requeues) for j, f in zip(jobs, folders)]
    results = launcher.submit(jobs[0].cfg.launcher, jobs[0].cfg.trainer, work, root)
    for job, folder, result in zip(jobs, folders, results):
        job.run_dir, job.status, job.metrics, job.error = folder, result["status"], result["metrics"], result["error"]
    _write_multirun(root, jobs)
    print_jobs(jobs, root)
    return jobs


def _write_multirun(root: Path, jobs: list[runner.Job]) -> None:
    """multirun.json (every job's overrides, status, metric, error) and the same as a Markdown table (best marked)."""
    done = [_job_record(n, j) for n, j in enumerate(jobs)]
    folds = cross_validation(jobs)
    records.write_json(root / "multirun.json", {"jobs": done, **({"cross_validation": folds} if folds else {})})
    header = ["job", "overrides", "status", "optimized_metric", "value", "error"]
    rows = [[r["job"], " ".join(r["overrides"]), r["status"], r["optimized_metric"], r["value"], r["error"]]
            for r in done]
    best = query.best_index([r["value"] for r in done], jobs[0].cfg.get("optimized_metric") or "")
    text = ui.render_table(header, rows, "markdown", highlight=best, mark_best=True) + "\n"
    if folds:
        text += "\n" + ui.render_table(["metric", "mean", "std", "folds"], _fold_rows(folds), "markdown") + "\n"
    (root / "summary.md").write_text(text, encoding="utf-8")


def _fold_rows(folds: dict[str, Any]) -> list[list[Any]]:
    return [[name, f"{m['mean']:.4f}", f"{m['std']:.4f}", f"{len(m['values'])}/{folds['folds']}"]
            for name, m in folds["metrics"].items()]


def _job_record(number: int, job: runner.Job) -> dict[str, Any]:
    return {"job": number, "overrides": job.overrides, "status": job.status, "run_dir": str(job.run_dir or ""),
            "optimized_metric": job.cfg.get("optimized_metric"), "value": job.metrics.get("optimized_metric"),
            "error": job.error}


def print_jobs(jobs: list[runner.Job], root: Path) -> None:
    """The summary table of a multirun: job, overrides, metric, status (and why a job failed)."""
    metric = jobs[0].cfg.get("optimized_metric", "metric")
    table = Table(title=escape(f"Multirun: {root}"), header_style="bold")
    for column in ("job", "overrides", f"best {metric}", "status"):
        table.add_column(escape(column))
    best = query.best_index([j.metrics.get("optimized_metric") for j in jobs], metric)
    for number, job in enumerate(jobs):
        value = job.metrics.get("optimized_metric")
        shown = "-" if value is None else f"{value:.4f}"
        if number == best:
            shown = f"[bold green]{shown}[/]"
        status = escape(job.status) if job.status != "failed" else f"[red]failed[/]: {escape(str(job.error))}"
        table.add_row(str(number), escape(redact.text(" ".join(job.overrides)) or "(defaults)"), shown, status)
    console.print(table)
    folds = cross_validation(jobs)
    if folds:
        summary = Table(title=f"Cross-validation over {folds['folds']} folds", header_style="bold")
        for column in ("metric", "mean", "std", "folds"):
            summary.add_column(column)
        for row in _fold_rows(folds):
            summary.add_row(*map(escape, row))
        console.print(summary)


@dataclass
class RemoteJob:
    """What a submitted job runs: the same prepare + run_job as a local job, in its pre-made folder; resumed from
    the folder's last.ckpt when the job was requeued."""

    overrides: list[str]
    run_dir: str
    config_dir: str | None
    max_requeues: int = 3

    def __call__(self) -> dict[str, Any]:
        from dlkit.distributed import global_rank

        stop_on_signals()  # in place of submitit's handlers: a stop saves the training state first
        run_dir = Path(self.run_dir)
        checkpoint = run_dir / "checkpoints" / "last.ckpt"
        restarted = checkpoint.is_file()
        job = runner.Job(list(self.overrides), None, {})  # what is reported if even composing fails
        try:
            # a requeued job resumes as `dlkit train resume=RUN` does: with the run's own config
            job = runner.prepare([f"resume={run_dir}"] if restarted and global_rank() == 0 else list(self.overrides),
                                 self.config_dir)
            if restarted and global_rank() == 0:
                runner.resume(job)
            else:  # a new job, or a rank > 0 of a requeued one: it reads the checkpoint rank 0 resumes from
                runner.run_job(job, run_dir, ckpt_path=str(checkpoint) if restarted else None)
        except Stopped as stop:
            if stop.signal in ("SIGUSR1", "SIGUSR2"):  # the time limit is near
                if int(os.environ.get("SLURM_RESTART_COUNT", "0")) >= self.max_requeues:
                    return {"status": job.status, "metrics": job.metrics,
                            "error": f"{job.error}; not requeued: it was requeued {self.max_requeues} times"}
                if global_rank() == 0:
                    saved = "checkpointed and requeued" if stop.checkpointed else "requeued before its first step"
                    records.mark_requeued(run_dir, f"{stop.reason}: {saved}")
                    launcher.requeue()
            # no result: the waiting side sees the job again once it restarts (Slurm requeues a preempted job
            # itself), or sees it gone (cancelled)
            sys.exit(stop.exit_code)
        except Exception as err:  # noqa: BLE001 - a failure is recorded in the job (and in summary.json once run)
            job.status = "failed" if job.status in ("pending", "running") else job.status
            job.error = job.error or (str(err) if isinstance(err, DlkitError) else f"{type(err).__name__}: {err}")
        return {"status": job.status, "metrics": job.metrics, "error": job.error}
