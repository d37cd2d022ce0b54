"""W&B for real, offline: what was logged is read back with `wandb leet inspect --summary --json`."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import QUICK, run_cli, run_folders, start_cli, summary

slow = pytest.mark.slow
WANDB_QUICK = [o for o in QUICK if not o.startswith("logger=")]
FAKE_KEY = "0123456789abcdef0123456789abcdef0123dead"


def wandb_bin() -> str:
    return shutil.which("wandb", path=str(Path(sys.executable).parent)) or "wandb"


def inspect_run(run: Path) -> dict:
    """The W&B run's state, config and summary as wandb itself reads them from the .wandb log."""
    [offline] = (run / "wandb").glob("offline-run-*")
    return inspect_run_dir(offline)


def inspect_run_dir(offline: Path) -> dict:
    result = subprocess.run([wandb_bin(), "leet", "inspect", "--summary", "--json", str(offline)], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def run_record(run: Path) -> dict:
    """The `run` record of the W&B log (name, group, job type), as `wandb leet inspect --json` prints it."""
    [offline] = (run / "wandb").glob("offline-run-*")
    lines = subprocess.run([wandb_bin(), "leet", "inspect", "--json", str(offline)], capture_output=True, text=True,
                           timeout=120).stdout.splitlines()
    return next(json.loads(line)["run"] for line in lines if '"type":"run"' in line)


def closed_port_url() -> str:
    """A W&B server address nothing listens on (a port just freed)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@slow
def test_offline_run_logs_flat_config_and_final_metrics(tmp_path):
    result = run_cli("train", *WANDB_QUICK, "tags=[smoke,wandb]", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    [run] = run_folders(tmp_path)
    info = summary(run)
    assert "Upload the run with: wandb sync" in result.stdout.replace("\n", "")
    assert info["wandb"]["mode"] == "offline" and info["wandb"]["sync"].startswith("wandb sync ")
    logged = inspect_run(run)
    assert logged["state"] == "finished" and logged["exit_code"] == 0
    assert logged["run_id"] == (run / "wandb_id").read_text().strip()
    assert logged["config"]["optimizer.lr"] == 0.001 and logged["config"]["model._target_"].endswith("MLP")
    assert logged["name"] == f"mlp-digits-{run.name.rsplit('-', 1)[1]}"
    assert set(logged["tags"]) == {"smoke", "wandb"}
    assert abs(logged["summary"]["test/acc"] - info["metrics"]["test/acc"]) < 1e-6
    # the optimized metric's best value, named after the metric it is
    assert logged["summary"]["best/val/acc"] == pytest.approx(info["metrics"]["best/val/acc"], abs=1e-6)
    assert info["metrics"]["best/val/acc"] == info["metrics"]["optimized_metric"]
    assert (run / "metrics.csv").is_file()  # CSV stays on beside W&B
    assert run_record(run)["job_type"] == "train"
    saved = next((run / "wandb").glob("offline-run-*/files/dlkit_config.yaml"))
    assert saved.read_text() == (run / "config.yaml").read_text()

    # eval of this run is a W&B run of its own, job_type eval, tied to the training run by name and config
    evaluated = run_cli("eval", str(run), cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert "Upload the eval run with: wandb sync" in evaluated.stdout.replace("\n", "")
    [record] = [json.loads(p.read_text()) for p in run.glob("eval-*.json")]
    segment = Path(record["wandb"]["dir"])
    assert segment.parent == run / "wandb" and record["wandb"]["id"] != logged["run_id"]
    eval_logged = inspect_run_dir(segment)
    assert eval_logged["state"] == "finished" and eval_logged["exit_code"] == 0
    assert eval_logged["name"] == f"{logged['name']}-eval"
    assert eval_logged["config"]["eval.train_wandb_id"] == logged["run_id"]
    assert eval_logged["summary"]["test/acc"] == pytest.approx(record["metrics"]["test/acc"], abs=1e-6)
    assert abs(record["metrics"]["test/acc"] - info["metrics"]["test/acc"]) < 1e-6
    lines = subprocess.run([wandb_bin(), "leet", "inspect", "--json", str(segment)], capture_output=True,
                           text=True, timeout=120).stdout.splitlines()
    assert next(json.loads(line)["run"] for line in lines if '"type":"run"' in line)["job_type"] == "eval"
    assert summary(run)["wandb"]["id"] == logged["run_id"]  # the training run's record is untouched


@slow
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


@slow
def test_failed_run_ends_its_wandb_run_as_failed(tmp_path):
    result = run_cli("train", *WANDB_QUICK, "optimizer.lr=1e9", cwd=tmp_path)  # diverges
    assert result.returncode == 1 and "non-finite loss at step" in result.stderr
    [run] = run_folders(tmp_path)
    assert summary(run)["status"] == "failed"
    logged = inspect_run(run)
    assert logged["state"] == "failed" and logged["exit_code"] == 1


@slow
def test_interrupted_run_ends_its_wandb_run_as_failed(tmp_path):
    log = tmp_path / "stderr.txt"
    with log.open("w") as stderr:
        process = start_cli("train", "trainer.max_epochs=100000", "callbacks=minimal", "-v", cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=stderr)
    deadline = time.time() + 180
    while time.time() < deadline and not list((tmp_path / "outputs").rglob("checkpoints/last.ckpt")):
        time.sleep(0.3)  # an epoch has ended: training is under way
    process.send_signal(signal.SIGINT)  # Ctrl+C
    try:
        code = process.wait(timeout=120)
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail(f"still running 120 s after Ctrl+C; its stderr ends with:\n{log.read_text()[-3000:]}")
    assert code != 0
    [run] = run_folders(tmp_path)
    assert summary(run)["status"] == "interrupted"
    logged = inspect_run(run)
    assert logged["state"] == "failed" and logged["exit_code"] == 1


@slow
def test_api_key_without_a_reachable_server_runs_offline_quickly_and_never_reaches_the_run_folder(tmp_path):
    # A key but no W&B server: wandb alone retries for about 95 s, then fails; dlkit checks first and runs offline.
    started = time.monotonic()
    result = run_cli("train", *WANDB_QUICK, cwd=tmp_path,
                     env={"WANDB_API_KEY": FAKE_KEY, "WANDB_MODE": "", "WANDB_BASE_URL": closed_port_url()})
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr[-3000:]
    [run] = run_folders(tmp_path)
    info = summary(run)
    assert info["status"] == "finished" and info["wandb"]["mode"] == "offline"
    assert "127.0.0.1 did not answer" in info["wandb"]["offline_reason"]
    assert "W&B ran offline (127.0.0.1 did not answer within" in result.stdout.replace("\n", "")
    assert inspect_run(run)["state"] == "finished"
    assert elapsed < 90, f"{elapsed:.0f} s: the run waited for the unreachable W&B server"
    assert (run / "wandb").is_dir()
    for file in run.rglob("*"):
        if file.is_file():
            assert FAKE_KEY.encode() not in file.read_bytes(), file


def test_reachable_answers_within_its_timeout():
    from dlkit.loggers.wandb_runs import reachable

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        assert reachable(f"http://127.0.0.1:{server.getsockname()[1]}", timeout=2)
    assert not reachable(closed_port_url(), timeout=2)
    started = time.monotonic()
    assert not reachable("https://192.0.2.1", timeout=0.5)  # TEST-NET-1: never routed
    assert time.monotonic() - started < 1.5


@slow
def test_logger_mode_disabled_switches_wandb_off(tmp_path):
    # the spelling: logger=wandb logger.mode=disabled
    result = run_cli("train", *WANDB_QUICK, "logger=wandb", "logger.mode=disabled", cwd=tmp_path,
                     env={"WANDB_MODE": ""})
    assert result.returncode == 0, result.stderr[-3000:]
    [run] = run_folders(tmp_path)
    assert not (run / "wandb").exists() and not (run / "wandb_id").exists() and (run / "metrics.csv").is_file()
    assert summary(run)["wandb"] is None and "W&B" not in result.stdout


@pytest.mark.parametrize("overrides", [["logger.mode=disabled"], ["logger.wandb.mode=disabled"],
                                       ["logger=csv", "+logger.mode=disabled"]])
def test_logger_mode_builds_only_the_csv_logger(tmp_path, monkeypatch, overrides):
    from omegaconf import open_dict

    from dlkit.build import build_loggers
    from dlkit.config import compose
    from dlkit.loggers.csv_logger import RunCSVLogger

    monkeypatch.delenv("WANDB_MODE", raising=False)
    cfg = compose(overrides)
    with open_dict(cfg):
        cfg.paths.run_dir = str(tmp_path)
    assert [type(lg) for lg in build_loggers(cfg)] == [RunCSVLogger]
    assert not (tmp_path / "wandb_id").exists()


def test_bad_logger_mode_names_the_key_it_was_set_with(monkeypatch):
    from dlkit.config import compose
    from dlkit.errors import UsageError
    from dlkit.loggers.wandb_runs import _mode_setting, choose_mode

    monkeypatch.delenv("WANDB_MODE", raising=False)
    with pytest.raises(UsageError, match=r"^logger\.mode='ofline': choose auto, online, offline or disabled\. Did "):
        choose_mode("ofline", _mode_setting(compose(["logger.mode=ofline"])))
    assert _mode_setting(compose(["logger.wandb.mode=ofline"])) == "logger.wandb.mode"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert choose_mode("online") == ("disabled", "WANDB_MODE=disabled")


def test_run_url_only_for_an_online_run():
    from dlkit.loggers.wandb_runs import run_url

    online = SimpleNamespace(offline=False, disabled=False, url="https://wandb.ai/me/dlkit/runs/abc12345")
    assert run_url(online) == "https://wandb.ai/me/dlkit/runs/abc12345"
    assert run_url(SimpleNamespace(offline=True, disabled=False, url=None)) is None
    assert run_url(SimpleNamespace(offline=False, disabled=True, url=None)) is None
    assert run_url(None) is None


def test_wandb_summary_records_the_url_and_syncs_every_offline_segment(tmp_path):
    from dlkit.loggers.wandb_runs import remember_url, wandb_summary

    (tmp_path / "wandb_id").write_text("abc12345\n")
    first = tmp_path / "wandb" / "offline-run-20261124_090000-abc12345"
    second = tmp_path / "wandb" / "run-20261124_100000-abc12345"  # resumed online
    first.mkdir(parents=True)
    second.mkdir()
    url = "https://wandb.ai/me/dlkit/runs/abc12345"
    remember_url(tmp_path, SimpleNamespace(offline=False, disabled=False, url=url))
    record = wandb_summary(tmp_path)
    assert record["mode"] == "online" and record["url"] == url and record["dir"] == str(second)
    assert record["sync"] == f"wandb sync {first}"  # the offline start still waits for its upload


@slow
def test_resumed_run_continues_the_same_wandb_run(tmp_path):
    assert run_cli("train", *WANDB_QUICK, cwd=tmp_path).returncode == 0
    [run] = run_folders(tmp_path)
    first_id = (run / "wandb_id").read_text().strip()
    resumed = run_cli("train", "resume=latest", "trainer.max_epochs=3", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    offline = sorted((run / "wandb").glob("offline-run-*"))
    assert len(offline) == 2 and all(p.name.endswith(first_id) for p in offline)
    assert inspect_run_dir(offline[-1])["run_id"] == first_id
    # one command uploads both segments, oldest first; wandb itself agrees (a dry run needs no network)
    command = summary(run)["wandb"]["sync"]
    assert command == f"wandb sync {offline[0]} {offline[1]}"
    assert command in resumed.stdout.replace("\n", "")
    dry = subprocess.run([wandb_bin(), "sync", "--dry-run", str(offline[0]), str(offline[1])], capture_output=True,
                         text=True, timeout=120)
    assert dry.returncode == 0 and "Would sync 2 run(s)" in dry.stdout + dry.stderr


@slow
def test_tensorboard_keeps_metrics_csv_with_the_gradient_norm(tmp_path):
    quick = [o for o in WANDB_QUICK if not o.startswith("callbacks=")]
    result = run_cli("train", *quick, "logger=tensorboard", "callbacks=[minimal,grad_norm]",
                     "trainer.log_every_n_steps=1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    [run] = run_folders(tmp_path)
    assert list((run / "tensorboard").rglob("events.out.tfevents.*"))
    header = (run / "metrics.csv").read_text().splitlines()[0]  # csv is part of every logger option
    assert "train/grad_norm" in header
    assert not (run / "wandb").exists()
    from dlkit.runs.query import Run

    assert Run.load(run).curve("val/loss")  # what `dlkit runs compare --plot` draws


@slow
def test_tensorboard_hparams_compare_the_jobs_of_a_multirun(tmp_path):
    """TensorBoard's HParams view (read as the plugin reads it, through tensorboard's event multiplexer): one
    session per job with the flat config as hyperparameters, and the test metrics and best/val/acc as metrics."""
    import yaml
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.backend.event_processing.plugin_event_multiplexer import EventMultiplexer
    from tensorboard.plugins.hparams import plugin_data_pb2

    result = run_cli("train", "-m", *WANDB_QUICK, "logger=tensorboard", "optimizer.lr=0.001,0.003", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = run_folders(tmp_path)
    multiplexer = EventMultiplexer()
    multiplexer.AddRunsFromDirectory(str(runs[0].parent))
    multiplexer.Reload()
    content = multiplexer.PluginRunToTagToContent("hparams")
    sessions = {}
    for run_name, tags in content.items():
        start = plugin_data_pb2.HParamsPluginData.FromString(tags["_hparams_/session_start_info"])
        experiment = plugin_data_pb2.HParamsPluginData.FromString(tags["_hparams_/experiment"])
        metrics = {m.name.tag for m in experiment.experiment.metric_infos}
        hparams = start.session_start_info.hparams
        sessions[hparams["optimizer.lr"].number_value] = (run_name, metrics, hparams)
    assert sorted(sessions) == [0.001, 0.003]
    for lr, (run_name, metrics, hparams) in sessions.items():
        assert {"test/acc", "test/loss", "best/val/acc"} <= metrics
        assert hparams["model._target_"].string_value == "dlkit.models.mlp.MLP"
        [run] = [r for r in runs if run_name.startswith(r.name)]
        events = EventAccumulator(str(run / "tensorboard")).Reload()
        best = summary(run)["metrics"]["best/val/acc"]
        assert events.Scalars("best/val/acc")[-1].value == pytest.approx(best, abs=1e-6)
        saved = yaml.safe_load((run / "tensorboard" / "hparams.yaml").read_text())
        assert saved["optimizer.lr"] == lr and saved["data._target_"].endswith("DigitsDataModule")
        assert "best/val/acc" in (run / "metrics.csv").read_text().splitlines()[0]


def test_print_result_shows_the_wandb_link_or_the_sync_command():
    from omegaconf import OmegaConf

    from dlkit import runner

    job = runner.Job([], OmegaConf.create({"name": "mlp-digits"}), {}, run_dir=Path("outputs/x"), status="finished",
                     wandb={"id": "abc12345", "mode": "online", "url": "https://wandb.ai/me/dlkit/runs/abc12345"})
    with runner.console.capture() as captured:
        runner.print_result(job)
    assert "W&B run: https://wandb.ai/me/dlkit/runs/abc12345" in captured.get()
    job.wandb = {"id": "abc12345", "mode": "offline", "offline_reason": "not logged in", "sync": "wandb sync a b"}
    with runner.console.capture() as captured:
        runner.print_result(job)
    assert "W&B ran offline (not logged in). Upload the run with: wandb sync a b" in captured.get()
