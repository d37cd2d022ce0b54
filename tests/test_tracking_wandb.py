"""W&B for real, offline: what was logged is read back with `wandb leet inspect --summary --json`."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import QUICK, run_cli, run_folders, summary

pytestmark = pytest.mark.slow
WANDB_QUICK = [o for o in QUICK if not o.startswith("logger=")]


def inspect_run(run: Path) -> dict:
    """The W&B run's state, config and summary as wandb itself reads them from the .wandb log."""
    [offline] = (run / "wandb").glob("offline-run-*")
    return inspect_run_dir(offline)


def run_record(run: Path) -> dict:
    """The `run` record of the W&B log (name, group, job type), as `wandb leet inspect --json` prints it."""
    [offline] = (run / "wandb").glob("offline-run-*")
    wandb = shutil.which("wandb", path=str(Path(sys.executable).parent)) or "wandb"
    lines = subprocess.run([wandb, "leet", "inspect", "--json", str(offline)], capture_output=True, text=True,
                           timeout=120).stdout.splitlines()
    return next(json.loads(line)["run"] for line in lines if '"type":"run"' in line)


def test_offline_run_logs_flat_config_and_final_metrics(tmp_path):
    result = run_cli("train", *WANDB_QUICK, "tags=[smoke,wandb]", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    [run] = run_folders(tmp_path)
    info = summary(run)
    assert "Upload the run with: wandb sync" in result.stdout.replace("\n", "")
    assert info["wandb"]["mode"] == "offline" and info["wandb"]["sync"].startswith("wandb sync ")
    logged = inspect_run(run)
    assert logged["state"] == "finished" and logged["run_id"] == (run / "wandb_id").read_text().strip()
    assert logged["config"]["optimizer.lr"] == 0.001 and logged["config"]["model._target_"].endswith("MLP")
    assert logged["name"] == f"mlp-digits-{run.name.rsplit('-', 1)[1]}"
    assert set(logged["tags"]) == {"smoke", "wandb"}
    assert abs(logged["summary"]["test/acc"] - info["metrics"]["test/acc"]) < 1e-6
    assert (run / "metrics.csv").is_file()  # CSV stays on beside W&B
    assert run_record(run)["job_type"] == "train"
    saved = next((run / "wandb").glob("offline-run-*/files/dlkit_config.yaml"))
    assert saved.read_text() == (run / "config.yaml").read_text()


def test_multirun_jobs_are_separate_wandb_runs_in_one_group(tmp_path):
    result = run_cli("train", "-m", *WANDB_QUICK, "seed=0,1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = run_folders(tmp_path)
    logged = [inspect_run(r) for r in runs]
    assert len({entry["run_id"] for entry in logged}) == 2
    assert all(entry["state"] == "finished" for entry in logged)
    groups = {entry["config"].get("paths.multirun_dir") for entry in logged}
    assert len(groups) == 1
    groups = {run_record(r)["run_group"] for r in runs}
    assert groups == {runs[0].parent.name}
    assert {run_record(r)["display_name"] for r in runs} == {f"mlp-digits-{runs[0].parent.name[-6:]}-{n}"
                                                               for n in (0, 1)}


def test_api_key_never_reaches_the_run_folder(tmp_path):
    key = "0123456789abcdef0123456789abcdef0123dead"
    result = run_cli("train", *WANDB_QUICK, cwd=tmp_path, env={"WANDB_API_KEY": key, "WANDB_MODE": "offline"})
    assert result.returncode == 0, result.stderr[-3000:]
    [run] = run_folders(tmp_path)
    assert (run / "wandb").is_dir()
    for file in run.rglob("*"):
        if file.is_file():
            assert key.encode() not in file.read_bytes(), file


def test_logger_mode_disabled_switches_wandb_off(tmp_path):
    result = run_cli("train", *WANDB_QUICK, "logger.wandb.mode=disabled", cwd=tmp_path, env={"WANDB_MODE": ""})
    assert result.returncode == 0, result.stderr[-3000:]
    [run] = run_folders(tmp_path)
    assert not (run / "wandb").exists() and (run / "metrics.csv").is_file()


def test_resumed_run_continues_the_same_wandb_run(tmp_path):
    assert run_cli("train", *WANDB_QUICK, cwd=tmp_path).returncode == 0
    [run] = run_folders(tmp_path)
    first_id = (run / "wandb_id").read_text().strip()
    resumed = run_cli("train", "resume=latest", "trainer.max_epochs=3", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    offline = sorted((run / "wandb").glob("offline-run-*"))
    assert len(offline) == 2 and all(p.name.endswith(first_id) for p in offline)
    assert inspect_run_dir(offline[-1])["run_id"] == first_id


def inspect_run_dir(offline: Path) -> dict:
    wandb = shutil.which("wandb", path=str(Path(sys.executable).parent)) or "wandb"
    result = subprocess.run([wandb, "leet", "inspect", "--summary", "--json", str(offline)], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_tensorboard_and_csv_together_with_the_gradient_norm(tmp_path):
    quick = [o for o in WANDB_QUICK if not o.startswith("callbacks=")]
    result = run_cli("train", *quick, "logger=[csv,tensorboard]", "callbacks=[minimal,grad_norm]",
                     "trainer.log_every_n_steps=1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    [run] = run_folders(tmp_path)
    assert list((run / "tensorboard").rglob("events.out.tfevents.*"))
    header = (run / "metrics.csv").read_text().splitlines()[0]
    assert "train/grad_norm" in header
    assert not (run / "wandb").exists()
