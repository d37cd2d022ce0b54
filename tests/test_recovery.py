"""Nothing lost: last.ckpt is the newest state, a killed run resumes to exactly what an uninterrupted run gives
(weights, metrics.csv, epoch means), one process writes a run folder, and signals and diverging losses end a run with
the status and exit code they deserve."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from conftest import run_cli, run_folders, run_main, start_cli, summary

pytestmark = pytest.mark.slow
TESTS = str(Path(__file__).parent)
EXACT = ["seed=3", "trainer.deterministic=true", "data.batch_size=16", "trainer.limit_train_batches=20",
         "trainer.limit_val_batches=4", "trainer.limit_test_batches=4", "callbacks=minimal", "logger=csv",
         "model.dropout=0.3"]


def _state(run: Path, name: str = "last.ckpt") -> dict:
    return torch.load(run / "checkpoints" / name, map_location="cpu", weights_only=True)


def _same_weights(a: dict, b: dict) -> None:
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key


def _rows(run: Path) -> list[dict[str, str]]:
    with open(run / "metrics.csv", newline="") as handle:
        return [{k: v for k, v in row.items() if v} for row in csv.DictReader(handle)]


def test_last_ckpt_is_the_newest_state_when_the_metric_gets_worse_and_resuming_it_is_exact(tmp_path):
    # mode=min on an accuracy that rises: from epoch 1 on every epoch is "worse", so no best checkpoint is written
    worse = [*EXACT, "callbacks.model_checkpoint.mode=min"]
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    straight.mkdir(), stopped.mkdir()
    assert run_cli("train", *worse, "trainer.max_epochs=4", cwd=straight).returncode == 0
    assert run_cli("train", *worse, "trainer.max_epochs=3", cwd=stopped).returncode == 0
    [run] = run_folders(stopped)
    last = _state(run)
    assert (last["epoch"], last["global_step"]) == (2, 60)  # the end of the third epoch, not the best (first) one
    assert [p.name for p in (run / "checkpoints").glob("best-*")] == ["best-epoch000.ckpt"]

    resumed = run_cli("train", "resume=latest", "trainer.max_epochs=4", cwd=stopped)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "from last.ckpt (step 60)" in resumed.stdout
    [reference] = run_folders(straight)
    _same_weights(_state(reference), _state(run))
    assert _state(run)["global_step"] == 80
    rows, expected = _rows(run), _rows(reference)
    tests = [r for r in rows if "test/acc" in r]
    assert [r["step"] for r in tests] == ["60", "80"]  # the first segment's test is history; the last is the run's
    assert [r for r in rows if r is not tests[0]] == expected  # no epoch trained twice, every row once


@pytest.mark.parametrize("data", [[], ["model=textcnn", "data.bucketing=true"]], ids=["images", "text-store-buckets"])
def test_sigkill_after_a_step_checkpoint_then_resume_gives_the_uninterrupted_metrics(tmp_path, data):
    run_args = [*EXACT, "trainer.max_epochs=2", "trainer.log_every_n_steps=2",
                "callbacks.last_checkpoint.every_n_train_steps=7", *data]
    env = {"PYTHONPATH": TESTS}
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    straight.mkdir(), killed.mkdir()
    assert run_cli("train", *run_args, cwd=straight).returncode == 0
    # killed at step 32 (epoch 2 of 2), after the step-28 checkpoint, with the rows of steps 29-31 on disk
    crash = run_cli("train", *run_args, "+callbacks.kill._target_=faults.KillAt", "+callbacks.kill.step=32",
                    cwd=killed, env=env)
    assert crash.returncode == -signal.SIGKILL
    [run] = run_folders(killed)
    assert summary(run)["status"] == "running"
    assert _state(run)["global_step"] == 28
    assert max(int(r["step"]) for r in _rows(run)) > 28  # the lost segment logged past its checkpoint

    resumed = run_cli("train", f"resume={run}", cwd=killed, env=env)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    [reference] = run_folders(straight)
    _same_weights(_state(reference), _state(run))
    rows, expected = _rows(run), _rows(reference)
    assert len(rows) == len(expected)  # nothing logged twice
    assert rows == expected  # the resumed epoch's means cover all of its batches: equal to the uninterrupted run's
    means = [r for r in rows if "train/loss_epoch" in r]
    assert len(means) == 2 and all("train/acc" in r for r in means)


def test_resume_removes_what_an_interrupted_segment_left_behind(tmp_path):
    assert run_cli("train", *EXACT, "trainer.max_epochs=2", cwd=tmp_path).returncode == 0
    [run] = run_folders(tmp_path)
    folder = run / "checkpoints"
    [best] = folder.glob("best-*.ckpt")
    later = time.time() + 5
    (folder / ".last.ckpt.4242.tmp").write_bytes(b"half a checkpoint")
    stale = folder / "best-epoch009.ckpt"  # written after last.ckpt by the segment that was lost
    stale.write_bytes(best.read_bytes())
    os.utime(stale, (later, later))

    resumed = run_cli("train", "resume=latest", "trainer.max_epochs=3", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    names = sorted(p.name for p in folder.iterdir())
    assert not [n for n in names if n.endswith(".tmp")]
    assert len([n for n in names if n.startswith("best-")]) == 1 and "best-epoch009.ckpt" not in names  # top_k=1


def test_a_damaged_last_ckpt_is_refused_with_the_checkpoint_to_resume_from(tmp_path):
    assert run_cli("train", *EXACT, "trainer.max_epochs=2", cwd=tmp_path).returncode == 0
    [run] = run_folders(tmp_path)
    last = run / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:5000])
    [best] = (run / "checkpoints").glob("best-*.ckpt")
    refused = run_main("train", "resume=latest", "trainer.max_epochs=3", cwd=tmp_path)
    assert refused.returncode == 1
    assert f"{last} cannot be read, it is damaged or truncated" in refused.stderr
    assert f"dlkit train resume={best}" in refused.stderr and "Traceback" not in refused.stderr
    again = run_cli("train", f"resume={best}", "trainer.max_epochs=3", cwd=tmp_path)  # the offered command works
    assert again.returncode == 0, again.stderr[-2000:]
    assert _state(run)["epoch"] == 2 and summary(run)["status"] == "finished"


def _wait_for(predicate, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and not predicate():
        time.sleep(0.2)
    assert predicate(), "timed out"


def test_one_writer_per_run_folder_and_killed_runs_show_as_interrupted(tmp_path):
    process = start_cli("train", "trainer.max_epochs=100000", "logger=csv", "callbacks=minimal", cwd=tmp_path,
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(lambda: list((tmp_path / "outputs").rglob("last.ckpt")))
        [run] = run_folders(tmp_path)
        second = run_main("train", f"resume={run}", cwd=tmp_path)
        assert second.returncode == 1
        assert f"{run} is being written by process {process.pid} on" in second.stderr
        listed = run_main("runs", "list", "--format", "csv", cwd=tmp_path)
        assert ",running," in listed.stdout
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert summary(run)["status"] == "running"  # nobody could write the end
    listed = run_main("runs", "list", "--format", "csv", cwd=tmp_path)
    assert ",interrupted," in listed.stdout and ",running," not in listed.stdout
    assert "interrupted" in run_main("runs", "list", "--status", "interrupted", cwd=tmp_path).stdout
    # the lock died with its process: the run can be resumed now
    epochs = _state(run)["epoch"] + 2
    resumed = run_cli("train", f"resume={run}", f"trainer.max_epochs={epochs}", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]


@pytest.mark.parametrize(("sig", "code", "reason"), [
    (signal.SIGTERM, 143, "terminated (SIGTERM)"),
    (signal.SIGHUP, 129, "hung up (SIGHUP: the terminal closed)"),
])
def test_sigterm_and_sighup_end_the_run_interrupted_with_their_own_exit_code(tmp_path, sig, code, reason):
    process = start_cli("train", "trainer.max_epochs=100000", "logger=csv", "callbacks=minimal", cwd=tmp_path,
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: list((tmp_path / "outputs").rglob("last.ckpt")))
    process.send_signal(sig)
    _, err = process.communicate(timeout=120)
    assert process.returncode == code, err[-2000:]
    assert f"Stopped: {reason}." in err and "Traceback" not in err
    [run] = run_folders(tmp_path)
    info = summary(run)
    assert info["status"] == "interrupted" and info["error"] == reason


def test_a_diverging_run_fails_naming_the_step_alone_and_in_a_multirun(tmp_path):
    single = run_cli("train", "optimizer.lr=1e9", "trainer.max_epochs=3", "logger=csv", "callbacks=minimal",
                     cwd=tmp_path)
    assert single.returncode == 1
    assert "error: non-finite loss at step" in single.stderr and "Traceback" not in single.stderr
    [run] = run_folders(tmp_path)
    info = summary(run)
    assert info["status"] == "failed" and info["error"].startswith("non-finite loss at step ")
    step = int(info["error"].split("step ", 1)[1].split(":")[0])
    assert 1 <= step <= 3 * 23

    (tmp_path / "m").mkdir()
    multi = run_cli("train", "-m", "optimizer.lr=1e9,1e-3", "trainer.max_epochs=1", "logger=csv",
                    "callbacks=minimal", cwd=tmp_path / "m")
    assert multi.returncode == 1
    [record] = (tmp_path / "m" / "outputs" / "multirun").rglob("multirun.json")
    jobs = json.loads(record.read_text())["jobs"]
    assert [j["status"] for j in jobs] == ["failed", "finished"]
    assert jobs[0]["error"].startswith("non-finite loss at step")
    assert "failed: non-finite loss at step" in " ".join(multi.stdout.split())
