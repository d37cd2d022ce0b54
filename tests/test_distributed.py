"""DDP on the CPU with real processes: from the console script, inside a multirun, and under torchrun."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import QUICK, dlkit_bin, run_cli, run_folders, summary

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# README's command with the default callbacks (progress bar, model summary, early stopping, LR monitor)
DEFAULT_CALLBACKS = [o for o in QUICK if not o.startswith("callbacks=")]


def test_ddp_cpu_runs_two_processes_into_one_run_folder(tmp_path):
    result = run_cli("train", "trainer=ddp_cpu", "precision=bf16", *DEFAULT_CALLBACKS, cwd=tmp_path,
                     env={"TTY_COMPATIBLE": "1", "TTY_INTERACTIVE": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    [run] = run_folders(tmp_path)
    info = summary(run)
    assert info["status"] == "finished" and info["world_size"] == 2
    assert "Starting with 2 processes" in (run / "train.log").read_text()  # rank 1 really joined
    assert result.stderr == ""  # rank 1 adds nothing to the terminal
    assert "Traceback" not in result.stderr
    assert "Epoch 1/1" in result.stdout  # the Rich progress bar of rank 0 drew the last epoch
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert len(list((tmp_path / "outputs").rglob("metrics.csv"))) == 1


def test_ddp_inside_a_multirun_gives_one_folder_per_job(tmp_path):
    result = run_cli("train", "-m", "trainer=ddp_cpu", *QUICK, "seed=0,1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = run_folders(tmp_path)
    assert [r.name for r in runs] == ["0", "1"]
    assert all(summary(r)["world_size"] == 2 and summary(r)["status"] == "finished" for r in runs)
    assert len(list((tmp_path / "outputs").rglob("last.ckpt"))) == 2


def test_torchrun_two_nodes_join_one_job(tmp_path):
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"
    port = _free_port()
    common = [torchrun, "--nnodes", "2", "--nproc-per-node", "1", "--master-addr", "127.0.0.1",
              "--master-port", str(port), "--no-python", dlkit_bin(), "train", "trainer=ddp_cpu",
              "trainer.devices=1", "trainer.num_nodes=2", *QUICK]
    nodes = [subprocess.Popen([*common[:1], "--node-rank", str(rank), *common[1:]], cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env={**os.environ, "COLUMNS": "200"})
             for rank in (0, 1)]
    outputs = [node.communicate(timeout=300)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    [run] = run_folders(tmp_path)
    info = summary(run)
    assert info["status"] == "finished" and info["world_size"] == 2
    assert "Run folder" in outputs[0] and "Run folder" not in outputs[1]


def test_a_rank_killed_mid_training_stops_the_others_at_once_with_one_line_naming_it(tmp_path):
    mark = tmp_path / "killed_at"
    result = run_cli("train", "trainer=ddp_cpu", *QUICK, "trainer.limit_train_batches=40", "trainer.max_epochs=3",
                     "trainer.ddp_timeout_s=60", "+callbacks.kill._target_=faults.KillAt", "+callbacks.kill.step=10",
                     "+callbacks.kill.rank=1", f"+callbacks.kill.mark={mark}", cwd=tmp_path,
                     env={"PYTHONPATH": str(Path(__file__).parent)}, timeout=300)
    after_death = time.time() - float(mark.read_text())
    assert result.returncode == 1, result.stderr[-3000:]
    assert after_death < 30, after_death  # rank 0 stopped at once, not at a collective's timeout
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert errors == ["error: rank 1 was killed by SIGKILL; the other ranks stopped (RuntimeError)."], errors
    [run] = run_folders(tmp_path)
    info = summary(run)
    assert info["status"] == "failed" and "rank 1 was killed by SIGKILL" in info["error"]
