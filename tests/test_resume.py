"""Resume: a run killed mid-epoch continues in its own folder and ends exactly where an uninterrupted run ends."""

from __future__ import annotations

import csv
import shutil
import signal
import subprocess
import time

import pytest
import torch
from conftest import QUICK, dlkit_bin, run_cli, run_folders, run_main, summary

pytestmark = pytest.mark.slow
RUN = ["seed=3", "trainer.max_epochs=5", "trainer.deterministic=true", "data.batch_size=8", "callbacks=minimal",
       "logger=csv", "model.dropout=0.3"]


def _weights(run) -> tuple[dict, int]:
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    return checkpoint["state_dict"], checkpoint["global_step"]


def test_sigkill_mid_epoch_then_resume_matches_an_uninterrupted_run(tmp_path):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    straight.mkdir(), killed.mkdir()
    assert run_cli("train", *RUN, cwd=straight).returncode == 0

    process = subprocess.Popen([dlkit_bin(), "train", *RUN], cwd=killed, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and not list((killed / "outputs").rglob("last.ckpt")):
        time.sleep(0.05)
    time.sleep(0.4)  # inside the next epoch
    process.send_signal(signal.SIGKILL)
    process.wait()
    [run] = run_folders(killed)
    assert summary(run)["status"] == "running"  # killed hard: nobody could write the end
    _, step_at_kill = _weights(run)

    resumed = run_cli("train", f"resume={run.name.rsplit('-', 1)[1]}", cwd=killed)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert run_folders(killed) == [run]  # continued in its own folder
    info = summary(run)
    assert info["status"] == "finished" and len(info["resumes"]) == 1

    [reference] = run_folders(straight)
    expected, expected_step = _weights(reference)
    got, step = _weights(run)
    assert 0 < step_at_kill < step == expected_step
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.equal(expected[name], got[name]), name
    assert abs(info["metrics"]["test/acc"] - summary(reference)["metrics"]["test/acc"]) < 1e-9


def test_resume_refuses_other_configs_and_missing_checkpoints(tmp_path):
    assert run_cli("train", "debug=limit", "~callbacks.last_checkpoint", "logger=csv", cwd=tmp_path).returncode == 0
    no_ckpt = run_cli("train", "resume=latest", cwd=tmp_path)
    assert no_ckpt.returncode == 1 and "has no checkpoints/last.ckpt" in no_ckpt.stderr
    other = run_main("train", "resume=latest", "model=lenet", cwd=tmp_path)
    assert other.returncode == 2 and "picks another config than the run used" in other.stderr
    missing = run_main("train", "resume=abcdef", cwd=tmp_path)
    assert missing.returncode == 2 and "no run 'abcdef'" in missing.stderr


def test_a_failed_save_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    from dlkit.runs.checkpoint_io import AtomicCheckpointIO

    io = AtomicCheckpointIO()
    target = tmp_path / "last.ckpt"
    io.save_checkpoint({"step": 1, "w": torch.ones(3)}, target)

    def dies_midway(obj, handle, *args, **kwargs):
        handle.write(b"partial garbage")
        raise KeyboardInterrupt  # as a kill during the write would

    monkeypatch.setattr(torch, "save", dies_midway)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"step": 2, "w": torch.zeros(3)}, target)
    monkeypatch.undo()
    assert torch.load(target, weights_only=True)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temporary file left behind


def test_checkpoint_every_n_steps_keeps_step_checkpoints(tmp_path):
    result = run_cli("train", "callbacks=minimal", "logger=csv", "trainer.max_epochs=1",
                     "callbacks.model_checkpoint.every_n_train_steps=7", "callbacks.model_checkpoint.save_top_k=-1",
                     "callbacks.model_checkpoint.monitor=null",
                     "callbacks.model_checkpoint.filename='step{step:04d}'", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    [run] = run_folders(tmp_path)
    steps = sorted(p.name for p in (run / "checkpoints").glob("step*.ckpt"))
    assert "step0007.ckpt" in steps and "step0014.ckpt" in steps


@pytest.mark.parametrize("run_id", ["1889e9", "001234", "123456"])
def test_run_ids_that_look_like_numbers_stay_text(run_id):
    from dlkit.runner import prepare

    assert prepare([f"resume={run_id}"]).cfg.resume == run_id


def test_resuming_a_copied_run_writes_only_into_the_copy(tmp_path):
    assert run_cli("train", *QUICK, cwd=tmp_path).returncode == 0
    [original] = run_folders(tmp_path)
    copy = tmp_path / "outputs" / "copied" / original.name
    shutil.copytree(original, copy)
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in original.rglob("*") if p.is_file()}

    resumed = run_cli("train", f"resume={copy}", "trainer.max_epochs=4", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    after = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in original.rglob("*") if p.is_file()}
    assert after == before  # the original is untouched: no new, changed or removed file

    info = summary(copy)
    assert info["status"] == "finished" and len(info["resumes"]) == 1
    assert torch.load(copy / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 3
    # the copy knows its own best checkpoint: save_top_k=1 still holds there (a stale best would linger)
    assert len(list((copy / "checkpoints").glob("best-*.ckpt"))) == 1
    config = (copy / "config.yaml").read_text()
    assert str(original) not in config and f"dirpath: {copy}/checkpoints" in config
    with open(copy / "metrics.csv", newline="") as handle:
        epochs = [row["epoch"] for row in csv.DictReader(handle)]
    assert "3" in epochs  # the copy's own log continued


def test_resume_from_a_mid_epoch_checkpoint_matches_an_uninterrupted_run(tmp_path):
    run = ["seed=3", "trainer.max_epochs=2", "trainer.limit_train_batches=20", "trainer.deterministic=true",
           "data.batch_size=16", "callbacks=minimal", "logger=csv", "model.dropout=0.3",
           "callbacks.model_checkpoint.every_n_train_steps=7", "callbacks.model_checkpoint.save_top_k=-1",
           "callbacks.model_checkpoint.monitor=null", "callbacks.model_checkpoint.filename='step{step:04d}'"]
    assert run_cli("train", *run, cwd=tmp_path).returncode == 0
    [straight] = run_folders(tmp_path)
    # a run killed right after its step-7 checkpoint (epochs have 20 steps): a copy whose newest state is step 7
    killed = tmp_path / "outputs" / "killed" / straight.name
    shutil.copytree(straight, killed)
    for path in (killed / "checkpoints").glob("*.ckpt"):
        if path.name != "step0007.ckpt":
            path.unlink()
    shutil.copyfile(killed / "checkpoints" / "step0007.ckpt", killed / "checkpoints" / "last.ckpt")

    resumed = run_cli("train", f"resume={killed}", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    expected = torch.load(straight / "checkpoints" / "step0035.ckpt", weights_only=True)
    got = torch.load(killed / "checkpoints" / "step0035.ckpt", weights_only=True)
    assert got["global_step"] == expected["global_step"] == 35
    for name, weights in expected["state_dict"].items():
        assert torch.equal(weights, got["state_dict"][name]), name
