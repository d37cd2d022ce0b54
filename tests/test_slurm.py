"""dlkit on a real Slurm cluster: one node on this machine (tests/services.py), submitted to through submitit.

Skipped only where Slurm's binaries are missing; CI installs them (.ci/run), so these run there.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
import torch
from conftest import QUICK, run_cli, start_cli, summary
from services import SLURM_BINARIES, missing, slurm_cluster
from test_tracking_wandb import inspect_run_dir

pytestmark = [pytest.mark.slurm, pytest.mark.slow,
              pytest.mark.skipif(bool(missing(SLURM_BINARIES)) or os.geteuid() != 0,
                                 reason=f"needs Slurm's daemons and root: missing {missing(SLURM_BINARIES)}")]

# what each job asks of the one 2-CPU node (the packaged defaults are a GPU node's)
SMALL = ["launcher=slurm", "launcher.cpus_per_task=1", "launcher.mem_gb=1", "launcher.timeout_min=10"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with slurm_cluster(tmp_path_factory.mktemp("slurm")) as running:
        yield running


def slurm_env(cluster) -> dict[str, str]:
    # the ranks of a DDP job meet on 127.0.0.1 (Lightning reads MASTER_ADDR before the node's name)
    return {**cluster.env, "MASTER_ADDR": "127.0.0.1", "GLOO_SOCKET_IFNAME": "lo"}


def multirun_jobs(tmp_path: Path) -> tuple[Path, list[dict]]:
    [record] = list((tmp_path / "outputs" / "multirun").rglob("multirun.json"))
    return record.parent, json.loads(record.read_text())["jobs"]


def test_a_multirun_is_one_job_array_on_the_cluster_each_job_in_its_own_folder(cluster, tmp_path):
    result = run_cli("train", "-m", *SMALL, *QUICK, "optimizer.lr=1e-2,1e-3", cwd=tmp_path, env=slurm_env(cluster),
                     timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    root, jobs = multirun_jobs(tmp_path)
    assert [j["status"] for j in jobs] == ["finished", "finished"]
    assert [j["overrides"][-1] for j in jobs] == ["optimizer.lr=0.01", "optimizer.lr=0.001"]
    slurm_jobs = []
    for job in jobs:
        record = summary(Path(job["run_dir"]))
        assert record["status"] == "finished" and record["metrics"]["test/acc"] > 0.1
        assert Path(job["run_dir"]).parent == root
        [segment] = record["segments"]
        slurm_jobs.append(segment["slurm_job"])
    array = {job.split("_")[0] for job in slurm_jobs}
    assert len(array) == 1 and sorted(job.split("_")[1] for job in slurm_jobs) == ["0", "1"]  # one array, 2 tasks
    assert "optimizer.lr=0.01" in result.stdout and result.stdout.count("finished") >= 2  # the multirun table
    script = next((root / ".submitit").rglob("*_submission.sh")).read_text()
    assert "--gpus-per-node" not in script and "--signal=USR2@120" in script  # a CPU trainer asks for no GPU


def test_ddp_under_srun_is_two_ranks_lightning_sees_as_slurm_and_one_run_folder(cluster, tmp_path):
    result = run_cli("train", "-m", *SMALL, *QUICK, "trainer=ddp_cpu", "seed=3", cwd=tmp_path,
                     env=slurm_env(cluster), timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    root, [job] = multirun_jobs(tmp_path)
    assert job["status"] == "finished", job
    run = Path(job["run_dir"])
    record = summary(run)
    assert record["world_size"] == 2 and record["status"] == "finished"
    script = next((root / ".submitit").rglob("*_submission.sh")).read_text()
    assert "--ntasks-per-node=2" in script  # the trainer's two processes, each a task of its own
    log = (run / "train.log").read_text()
    assert "MEMBER: 1/2" in log and "SLURM auto-requeueing enabled" in log  # Lightning sees a SLURM environment
    assert sorted(p.name for p in root.iterdir() if not p.name.startswith(".")) == ["0", "multirun.json",
                                                                                    "summary.md"]


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]


# 6 epochs of 158 steps; the warning asked 50 s ahead of the 1-minute limit comes 10 to 40 s after the start (Slurm
# looks at time limits every 30 s), and on the cluster each step also sleeps 50 ms (faults.SlowSteps: 47 s at the
# least, on however fast a machine), so no start can train it all: the job must requeue at least once
LONG = ["model=mlp", "data.batch_size=8", "trainer.max_epochs=6", "trainer.deterministic=true",
        "callbacks=minimal", "logger=[csv,wandb]", "seed=5", "test=false"]
SLOW = ["+callbacks.slow._target_=faults.SlowSteps", "+callbacks.slow.seconds=0.05"]


def test_a_job_at_its_time_limit_checkpoints_requeues_and_ends_as_if_never_stopped(cluster, tmp_path):
    reference_dir, slurm_dir = tmp_path / "straight", tmp_path / "cluster"
    reference_dir.mkdir()
    slurm_dir.mkdir()
    # the same training straight through, beside it
    straight = start_cli("train", *LONG, cwd=reference_dir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    started = time.monotonic()
    result = run_cli("train", "-m", *SMALL, "launcher.timeout_min=1", "launcher.signal_delay_s=50",
                     "launcher.max_requeues=10", *LONG, *SLOW, cwd=slurm_dir, timeout=900,
                     env={**slurm_env(cluster), "PYTHONPATH": str(Path(__file__).parent)})
    took = time.monotonic() - started
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    _, [job] = multirun_jobs(slurm_dir)
    run = Path(job["run_dir"])
    record = summary(run)
    assert record["status"] == "finished", record
    segments = record["segments"]
    assert len(segments) >= 2, segments  # it did reach its time limit, and went on after it
    assert all(s["status"] == "requeued" and "time limit" in s["reason"] for s in segments[:-1]), segments
    assert segments[-1]["status"] == "finished"
    assert len({s["slurm_job"] for s in segments}) == 1  # the same job, requeued

    _, errors = straight.communicate(timeout=900)
    assert straight.returncode == 0, errors[-2000:]
    [reference] = [p.parent for p in (reference_dir / "outputs").rglob("summary.json")]
    mine, theirs = _weights(run), _weights(reference)
    assert max((mine[k] - theirs[k]).abs().max().item() for k in theirs) == 0.0, f"requeued run differs ({took:.0f} s)"
    rows = (run / "metrics.csv").read_text().splitlines()
    assert rows == (reference / "metrics.csv").read_text().splitlines()  # every step logged once, same values
    wandb_id = (run / "wandb_id").read_text().strip()
    offline = sorted((run / "wandb").glob("offline-run-*"))
    assert len(offline) == len(segments)  # one offline segment per start, each of the one W&B run, as W&B reads it
    assert [inspect_run_dir(segment)["run_id"] for segment in offline] == [wandb_id] * len(offline)
    assert summary(run)["wandb"]["sync"] == "wandb sync " + " ".join(str(p) for p in offline)
