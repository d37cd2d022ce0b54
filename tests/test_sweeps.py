"""Optuna sweeps and grid multiruns, for real: studies in SQLite, kill and resume, pruning, failures, W&B files."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import optuna
import pytest
import yaml
from conftest import QUICK, dlkit_bin, run_cli, run_folders, run_main, summary
from optuna.trial import TrialState

pytestmark = pytest.mark.slow
FAST = [*QUICK, "trainer.max_epochs=3"]


def _study(root, name="mlp_optuna"):
    return optuna.load_study(study_name=name, storage=f"sqlite:///{root / 'outputs/sweeps' / name / 'study.db'}")


def _params(trial) -> tuple:
    return tuple(sorted(trial.params.items()))


def test_optuna_study_records_every_trial_and_reports_the_best(tmp_path):
    result = run_cli("sweep", "hparams_search=mlp_optuna", "hparams_search.n_trials=4",
                     "hparams_search.pruner.name=none", *FAST, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    study = _study(tmp_path)
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 4 and len(study.trials) == 4
    for trial in complete:
        run = Path(trial.user_attrs["run_dir"])
        assert run.is_absolute() and run.parent == (tmp_path / "outputs/sweeps/mlp_optuna").resolve()
        assert summary(run)["metrics"]["optimized_metric"] == pytest.approx(trial.value)
        assert yaml.safe_load((run / "config.yaml").read_text())["optimizer"]["lr"] == pytest.approx(
            trial.params["optimizer.lr"])
    # the trial reported as best is the one whose run folder holds the highest val/acc of all the runs
    best_line = next(line for line in result.stdout.splitlines() if line.startswith("Best: trial"))
    number = int(best_line.split()[2].rstrip(","))
    by_folder = {t.number: summary(Path(t.user_attrs["run_dir"]))["metrics"]["optimized_metric"] for t in complete}
    assert by_folder[number] == max(by_folder.values())
    assert f"val/acc = {by_folder[number]:.4f}" in best_line
    hidden = json.loads(study.trials[number].params["model.hidden_sizes"])
    assert f"model.hidden_sizes={hidden}" in best_line and "'[" not in best_line  # the value, not JSON text
    assert "Reproduce: dlkit train model=mlp data=digits" in result.stdout
    assert re.search(r"│ \d+\.\d s ", result.stdout) and not re.search(r"\d\.\d{4} +│ +outputs", result.stdout)
    status = run_cli("sweep", "status", "outputs/sweeps/mlp_optuna", cwd=tmp_path)
    assert status.returncode == 0 and status.stdout.count("complete") == 4
    folder = tmp_path / "outputs/sweeps/mlp_optuna"
    assert (folder / "optimization_history.png").stat().st_size > 10_000
    history = (folder / "optimization_history.html").read_text()
    assert "plotly.min.js" in history and (folder / "plotly.min.js").stat().st_size > 1_000_000
    assert all(repr(t.value)[:6] in history for t in complete)  # every trial's value is plotted
    coordinates = (folder / "parallel_coordinate.html").read_text()
    assert "optimizer.lr" in coordinates and "model.dropout" in coordinates
    # the same command again: the study is complete, nothing new runs
    again = run_cli("sweep", "hparams_search=mlp_optuna", "hparams_search.n_trials=4",
                    "hparams_search.pruner.name=none", *FAST, cwd=tmp_path)
    assert again.returncode == 0 and len(_study(tmp_path).trials) == 4
    # continued with more trials (and W&B, offline): new parameters, never a replay of the first trials' draws
    more = run_cli("sweep", "hparams_search=mlp_optuna", "hparams_search.n_trials=6",
                   "hparams_search.pruner.name=none", *FAST, "logger=wandb", cwd=tmp_path)
    assert more.returncode == 0, more.stderr[-3000:]
    trials = _study(tmp_path).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 6
    assert len({_params(t) for t in trials}) == 6
    for trial in trials[4:]:  # the W&B sync command works from any directory
        run = summary(Path(trial.user_attrs["run_dir"]))
        assert run["wandb"]["sync"].startswith(f"wandb sync {folder.resolve()}/trial_{trial.number:03d}/wandb/")


def test_sigkill_mid_trial_then_the_same_command_resumes_without_duplicates(tmp_path):
    command = [dlkit_bin(), "sweep", "hparams_search=mlp_optuna", "hparams_search.n_trials=3",
               "hparams_search.pruner.name=none", *QUICK, "trainer.max_epochs=200", "trainer.limit_val_batches=1"]
    process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    deadline = time.time() + 180
    while time.time() < deadline and not (tmp_path / "outputs/sweeps/mlp_optuna/trial_000/metrics.csv").exists():
        time.sleep(0.2)
    time.sleep(1.5)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    interrupted = [t for t in _study(tmp_path).trials if t.state == TrialState.RUNNING]
    assert len(interrupted) == 1 and interrupted[0].user_attrs["process"].endswith(f":{process.pid}")
    status = run_cli("sweep", "status", "latest", cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    assert "interrupted" in status.stdout and "running" not in status.stdout
    assert _study(tmp_path).trials[0].state == TrialState.RUNNING  # status only looked
    command[command.index("trainer.max_epochs=200")] = "trainer.max_epochs=2"
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "1 interrupted trial(s) queued again" in result.stdout
    trials = _study(tmp_path).trials
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert len(complete) == 3 and len(failed) == 1 and failed[0].user_attrs["interrupted"]
    retried = [t for t in complete if t.user_attrs.get("retry_of") == failed[0].number]
    assert len(retried) == 1 and retried[0].params == failed[0].params
    # the trials after the retry drew new parameters (the resumed sampler does not replay trial 0's draws)
    assert len(trials) == 4 and len({_params(t) for t in complete}) == 3


def test_train_multirun_study_reports_and_status_finds_it_under_another_output_dir(tmp_path):
    result = run_cli("train", "-m", "hparams_search=mlp_optuna", "hparams_search.n_trials=2",
                     "hparams_search.pruner.name=none", "paths.output_dir=elsewhere", *QUICK, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    # `train -m hparams_search=...` prints the report `dlkit sweep` prints
    assert result.stdout.count("complete") == 2 and "Best: trial" in result.stdout
    assert "Reproduce: dlkit train" in result.stdout and "Plot: " in result.stdout
    folder = tmp_path / "elsewhere/sweeps/mlp_optuna"
    assert (folder / "study.db").is_file() and not (tmp_path / "outputs").exists()
    for how in (["latest"], ["mlp"]):
        status = run_cli("sweep", "status", *how, "--output-dir", "elsewhere", cwd=tmp_path)
        assert status.returncode == 0, status.stderr
        assert status.stdout.count("complete") == 2 and "Best: trial" in status.stdout
    # the folder itself, looked at from another directory (its SQLite path was written relative to the sweep's)
    (tmp_path / "other").mkdir()
    status = run_cli("sweep", "status", str(folder), cwd=tmp_path / "other")
    assert status.returncode == 0, status.stderr
    assert status.stdout.count("complete") == 2 and not (tmp_path / "other/elsewhere").exists()
    missing = run_cli("sweep", "status", "latest", cwd=tmp_path)
    assert missing.returncode == 2 and "under outputs/sweeps" in missing.stderr and "--output-dir" in missing.stderr


def _custom_search(tmp_path, params: str, pruner: str = "none", seed: int = 0, n_trials: int = 2) -> None:
    folder = tmp_path / "conf" / "hparams_search"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "custom.yaml").write_text(
        f"# @package _global_\n# test search\nhparams_search:\n  n_trials: {n_trials}\n"
        f"  sampler: {{name: grid, seed: {seed}}}\n"
        f"  pruner: {pruner}\n  params:\n{params}")


def test_failed_trials_an_error_and_a_nan_loss_are_recorded_and_the_study_goes_on(tmp_path):
    _custom_search(tmp_path, "    optimizer.lr: choice(0.001, -1.0)\n", n_trials=2)
    refused = run_main("sweep", "hparams_search=custom", *FAST, cwd=tmp_path)  # checked before any trial
    assert refused.returncode == 2 and not (tmp_path / "outputs").exists()
    assert refused.stderr.startswith("error: hparams_search.params.optimizer.lr can give optimizer.lr=-1.0, which "
                                     "is out of range: optimizer.lr takes a number > 0 (learning rate).")
    # a setting only Lightning checks (when the trainer is built): that trial fails, the study goes on
    _custom_search(tmp_path, "    optimizer.lr: choice(0.001, 1e30)\n"
                             "    trainer.gradient_clip_algorithm: choice(norm, bogus)\n", n_trials=4)
    result = run_cli("sweep", "hparams_search=custom", *FAST, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    trials = {(t.params["optimizer.lr"], t.params["trainer.gradient_clip_algorithm"]): t
              for t in _study(tmp_path, "custom").trials}
    assert trials[0.001, "norm"].state == TrialState.COMPLETE
    error, nan = trials[0.001, "bogus"], trials[1e30, "norm"]
    assert error.state == TrialState.FAIL and "gradient_clip_algorithm" in error.user_attrs["error"]
    assert summary(Path(error.user_attrs["run_dir"]))["status"] == "failed"
    # lr=1e30: the loss stops being finite; the run stops there and fails, the trial with it, both say why
    assert nan.state == TrialState.FAIL and nan.user_attrs["fail_reason"] == "non-finite loss"
    run = summary(Path(nan.user_attrs["run_dir"]))
    assert run["status"] == "failed" and run["error"].startswith("non-finite loss at step ")
    assert "Trial" in result.stdout and "failed: non-finite loss at step" in " ".join(result.stdout.split())
    status = run_cli("sweep", "status", "custom", cwd=tmp_path)
    assert status.stdout.count("non-finite loss") == 1 and status.stdout.count("fail ") == 3


def test_a_hopeless_trial_is_pruned(tmp_path):
    _custom_search(tmp_path, "    optimizer.lr: choice(0.01, 1e-7)\n",
                   "{name: median, n_startup_trials: 1, n_warmup_steps: 0}", seed=1)
    result = run_cli("sweep", "hparams_search=custom", *FAST, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    ordered = sorted(_study(tmp_path, "custom").trials, key=lambda t: t.number)
    # the grid sampler with seed 1 runs the good rate first; the hopeless one then falls below the median
    assert [t.params["optimizer.lr"] for t in ordered] == [0.01, 1e-7]
    assert [t.state for t in ordered] == [TrialState.COMPLETE, TrialState.PRUNED]
    pruned_run = tmp_path / ordered[1].user_attrs["run_dir"]
    assert summary(pruned_run)["status"] == "finished"  # stopped early, cleanly


def test_wandb_sweep_yaml_is_what_wandb_sweep_accepts(tmp_path):
    from wandb.sdk.launch.sweeps.utils import create_sweep_command, load_sweep_config

    result = run_cli("sweep", "--backend", "wandb", "hparams_search=textcnn_optuna", "trainer.max_epochs=5",
                     "logger.wandb.project=reviews", "logger.wandb.entity=lab",
                     cwd=tmp_path, env={"WANDB_API_KEY": "", "WANDB_MODE": "offline"})
    assert result.returncode == 0, result.stderr
    path = tmp_path / "outputs/sweeps/textcnn_optuna/wandb_sweep.yaml"
    assert f"Wrote {path.relative_to(tmp_path)}" in result.stdout or str(path) in result.stdout
    config = load_sweep_config(str(path))
    assert config["method"] == "bayes" and config["metric"] == {"name": "val/acc", "goal": "maximize"}
    assert config["parameters"]["optimizer.lr"] == {"distribution": "log_uniform_values", "min": 1e-4, "max": 1e-2}
    assert config["parameters"]["model.num_filters"] == {"distribution": "int_uniform", "min": 32, "max": 200}
    assert config["parameters"]["model.embedding_dim"] == {"values": [64, 128, 300]}
    command = create_sweep_command(config["command"])
    assert command[:4] == ["dlkit", "train", "model=textcnn", "data=synthetic_sentiment"]
    assert "trainer.max_epochs=5" in command and command[-1] == "${args_no_hyphens}"
    assert config["project"] == "reviews" and config["entity"] == "lab"  # `wandb sweep FILE` creates it there
    allowed = {"uniform", "log_uniform_values", "int_uniform", "q_log_uniform_values"}
    assert all("values" in p or p["distribution"] in allowed for p in config["parameters"].values())


def _one_value(parameter: dict):
    """A value an agent could be given for a W&B sweep parameter."""
    if "values" in parameter:
        return parameter["values"][-1]
    low, high = parameter["min"], parameter["max"]
    if parameter["distribution"] == "int_uniform":
        return (low + high) // 2
    if parameter["distribution"].endswith("log_uniform_values"):
        value = (low * high) ** 0.5
        return round(value) if "q" in parameter else value
    return (low + high) / 2


@pytest.mark.parametrize(("preset", "model"), [
    ("mlp_optuna", "MLP"), ("textcnn_optuna", "TextCNN"), ("lstm_optuna", "RNNClassifier"),
    ("bert_finetune_optuna", "BertClassifier")])
def test_wandb_agent_command_composes_the_trials_config(preset, model, tmp_path, monkeypatch):
    from omegaconf import OmegaConf
    from wandb.sdk.launch.sweeps.utils import create_sweep_command_args

    from dlkit import runner
    from dlkit.sweeps import wandb_sweep
    from dlkit.sweeps.space import as_override

    monkeypatch.chdir(tmp_path)
    overrides = [f"hparams_search={preset}", "seed=7"]
    path, sweep_id = wandb_sweep.write(overrides)
    assert sweep_id is None  # not logged in: the file only
    config = yaml.safe_load(path.read_text())
    assert config["command"][:2] == ["dlkit", "train"]
    values = {key: _one_value(parameter) for key, parameter in config["parameters"].items()}
    agent_args = create_sweep_command_args({"args": {k: {"value": v} for k, v in values.items()}})["args_no_hyphens"]
    # what `wandb agent` runs: the command's arguments, then key=value for every sampled parameter
    agent = runner.prepare([*config["command"][2:-1], *agent_args])
    assert agent.cfg.model._target_.endswith(f".{model}")
    assert agent.cfg.seed == 7
    for key, value in values.items():
        assert OmegaConf.select(agent.cfg, key) == (yaml.safe_load(value) if isinstance(value, str) else value), key
    # the config a trial of the Optuna backend composes with the same values
    trial = runner.prepare([*overrides, *(as_override(k, yaml.safe_load(v) if isinstance(v, str) else v)
                                          for k, v in values.items())])
    expected = OmegaConf.to_container(trial.cfg)
    expected.pop("hparams_search")
    assert OmegaConf.to_container(agent.cfg) == expected
    assert config["project"] == "dlkit"  # logger.wandb.project


def test_wandb_agent_command_keeps_what_a_users_preset_sets(tmp_path, monkeypatch):
    from dlkit import runner
    from dlkit.sweeps import wandb_sweep

    _custom_search(tmp_path, "    optimizer.lr: choice(0.001, 0.01)\n")
    preset = tmp_path / "conf/hparams_search/custom.yaml"
    preset.write_text(preset.read_text().replace("# test search\n", "defaults:\n  - override /model: lenet\n"
                                                 "  - override /scheduler: cosine\ntrainer:\n  max_epochs: 7\n"))
    monkeypatch.chdir(tmp_path)
    path, _ = wandb_sweep.write(["hparams_search=custom"])
    command = yaml.safe_load(path.read_text())["command"]
    assert command[:2] == ["dlkit", "train"] and command[-1] == "${args_no_hyphens}"
    assert sorted(command[2:-1]) == ["data=digits", "model=lenet", "scheduler=cosine", "trainer.max_epochs=7"]
    agent = runner.prepare([*command[2:-1], "optimizer.lr=0.01"])
    assert agent.cfg.model._target_.endswith(".LeNet") and agent.cfg.trainer.max_epochs == 7
    assert agent.choices["scheduler"] == "cosine"


def test_grid_multirun_summary_and_failing_jobs(tmp_path):
    result = run_cli("train", "-m", *QUICK, "optimizer.lr=1e-3,1e9", "seed=0,1", cwd=tmp_path)
    assert result.returncode == 1  # some jobs failed, the sweep went on
    runs = run_folders(tmp_path)
    assert len(runs) == 4
    assert sorted(summary(r)["status"] for r in runs) == ["failed", "failed", "finished", "finished"]
    root = runs[0].parent
    jobs = json.loads((root / "multirun.json").read_text())["jobs"]
    assert [j["status"] for j in jobs] == ["finished", "finished", "failed", "failed"]
    assert jobs[2]["error"].startswith("non-finite loss at step")
    table = (root / "summary.md").read_text()
    assert table.count("| failed |") == 2 and "non-finite loss at step" in table
    assert "non-finite loss at step" in result.stdout


def test_slurm_launcher_path_runs_jobs_through_submitit_locally(tmp_path):
    result = run_cli("train", "-m", "launcher=slurm", "launcher.cluster=local", *QUICK, "seed=0,1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = run_folders(tmp_path)
    assert [r.name for r in runs] == ["0", "1"] and all(summary(r)["status"] == "finished" for r in runs)
    assert any((runs[0].parent / ".submitit").rglob("*_submitted.pkl"))  # really went through submitit


def test_parallel_trials_run_in_worker_processes_without_clashes(tmp_path):
    # a user config folder given with --config-dir: the workers must find it too
    (tmp_path / "my_conf/hparams_search").mkdir(parents=True)
    (tmp_path / "my_conf/hparams_search/custom.yaml").write_text(
        "# @package _global_\nhparams_search:\n  n_trials: 6\n  n_jobs: 2\n  sampler: {name: random, seed: 0}\n"
        "  pruner: none\n  params:\n    optimizer.lr: tag(log, interval(1e-3, 3e-2))\n")
    result = run_cli("sweep", "--config-dir", "my_conf", "hparams_search=custom",
                     *QUICK, "trainer.max_epochs=4", "trainer.limit_train_batches=8", cwd=tmp_path, timeout=600,
                     script=True)  # the main process starts as slowly as its worker, so both get trials
    assert result.returncode == 0, result.stderr[-3000:]
    trials = _study(tmp_path, "custom").trials
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 6 and len(trials) == 6  # exactly n_trials, no overshoot
    processes = {t.user_attrs["process"] for t in complete}
    assert len(processes) == 2, processes  # the main process and one worker both ran trials
    first, second = ([t for t in complete if t.user_attrs["process"] == p] for p in processes)
    assert any(a.datetime_start < b.datetime_complete and b.datetime_start < a.datetime_complete
               for a in first for b in second)  # at the same time
    # each process has its own sampler seed: no worker replays the main process's draws
    assert len({_params(t) for t in trials}) == 6
    folders = [t.user_attrs["run_dir"] for t in complete]
    root = (tmp_path / "outputs/sweeps/custom").resolve()
    assert sorted(folders) == sorted(str(root / f"trial_{t.number:03d}") for t in complete)
    assert all(summary(Path(f))["status"] == "finished" for f in folders)
    assert result.stdout.count("Best: trial") == 1  # only the main process reports


@pytest.mark.parametrize("preset", ["mlp_optuna", "textcnn_optuna", "lstm_optuna", "bert_finetune_optuna"])
def test_every_preset_composes_and_its_space_parses(preset):
    from omegaconf import OmegaConf

    from dlkit.config import compose
    from dlkit.sweeps.space import parse_space

    cfg = compose([f"hparams_search={preset}"])
    space = parse_space(OmegaConf.to_container(cfg.hparams_search.params))
    assert space
    for key in space:  # every searched key exists in the config it searches
        assert OmegaConf.select(cfg, key, default="__missing__") != "__missing__", key


@pytest.mark.parametrize("preset", ["mlp_optuna", "textcnn_optuna", "lstm_optuna", "bert_finetune_optuna"])
def test_wandb_sweep_yaml_passes_wandbs_own_schema(preset, tmp_path, monkeypatch):
    """W&B's sweep config schema ships in its `sweeps` package (the `wandb[sweeps]` extra). That package pins
    numpy<2, so it is not part of dlkit's test dependencies (it would downgrade numpy); where it is importable
    (e.g. `pip install --no-deps sweeps jsonschema jsonref`), every preset's file is checked against it."""
    sweeps = pytest.importorskip("sweeps", reason="W&B's schema package `sweeps` (wandb[sweeps]) is not installed")
    from dlkit.sweeps import wandb_sweep

    monkeypatch.chdir(tmp_path)
    path, _ = wandb_sweep.write([f"hparams_search={preset}"])
    config = yaml.safe_load(path.read_text())
    assert sweeps.schema_violations_from_proposed_config(config) == []
    sweeps.SweepConfig(config)  # fills defaults and validates each parameter, raising on a bad one
    broken = {**config, "parameters": {**config["parameters"], "optimizer.lr": {"distribution": "loguniform"}}}
    assert sweeps.schema_violations_from_proposed_config(broken)  # the check does refuse a bad file


def test_each_process_of_a_study_has_its_own_sampler_seed():
    from dlkit.sweeps.study import sampler_seed

    assert sampler_seed(0, "tpe", 0, 0, shared=False) == 0  # a new study is reproducible
    assert sampler_seed(None, "tpe", 5, 1, shared=False) is None
    seeds = {sampler_seed(0, "tpe", before, worker, shared=False) for before in (0, 3, 4) for worker in (0, 1, 2)}
    assert len(seeds) == 9
    assert sampler_seed(0, "tpe", 3, 0, shared=False) == sampler_seed(0, "tpe", 3, 0, shared=False)
    assert sampler_seed(1, "grid", 3, 1, shared=False) == 1  # every process must share the grid's order


def test_a_trials_process_is_alive_or_gone():
    from datetime import datetime, timedelta

    from dlkit.sweeps.report import duration_text
    from dlkit.sweeps.storage import process_alive, this_process

    class Trial:
        def __init__(self, process: str, started: datetime) -> None:
            self.user_attrs, self.datetime_start = {"process": process}, started

    now = datetime.now()
    assert process_alive(Trial(this_process(), now)) is True
    gone = subprocess.Popen(["true"])
    gone.wait()
    assert process_alive(Trial(f"{this_process().rpartition(':')[0]}:{gone.pid}", now)) is False
    assert process_alive(Trial("another-host:1", now)) is None and process_alive(Trial("", now)) is None
    # a pid taken again by a process that started after the trial did: the trial's process is gone
    assert process_alive(Trial(this_process(), now - timedelta(days=365))) is False
    assert [duration_text(s) for s in (21.6, 185, 7620, None)] == ["21.6 s", "3 min 05 s", "2 h 07 min", None]


_CLAIMING = """
import random, sys, time
from pathlib import Path
import optuna
from dlkit.sweeps import storage as studies
optuna.logging.set_verbosity(optuna.logging.ERROR)
folder = Path(sys.argv[1])
study = optuna.load_study(study_name="claims", storage=studies.storage_of(f"sqlite:///{folder / 'study.db'}"))
while (trial := studies.claim(study, folder, 40)) is not None:
    trial.suggest_float("x", 0, 1)
    time.sleep(random.random() * 0.005)  # short trials: many claims right after a finish
    study.tell(trial, 1.0)
"""


def test_processes_claiming_trials_at_once_take_exactly_n_trials(tmp_path):
    """Three processes finish and claim trials in quick succession: the study holds exactly n_trials."""
    import sys

    optuna.create_study(study_name="claims", storage=f"sqlite:///{tmp_path / 'study.db'}")
    processes = [subprocess.Popen([sys.executable, "-c", _CLAIMING, str(tmp_path)]) for _ in range(3)]
    assert [p.wait(timeout=300) for p in processes] == [0, 0, 0]
    trials = optuna.load_study(study_name="claims", storage=f"sqlite:///{tmp_path / 'study.db'}").trials
    assert len(trials) == 40 and all(t.state == TrialState.COMPLETE for t in trials)
    assert len({t.user_attrs["process"] for t in trials}) == 3


def test_a_pruner_setting_the_chosen_pruner_does_not_take_is_one_clear_line():
    """`hparams_search.pruner.name=hyperband` on a preset with median settings: named, not a TypeError."""
    from omegaconf import OmegaConf

    from dlkit.errors import UsageError
    from dlkit.sweeps.study import _pruner

    assert type(_pruner(OmegaConf.create({"pruner": {"name": "hyperband", "reduction_factor": 3}}))).__name__ == \
        "HyperbandPruner"
    with pytest.raises(UsageError, match=r"pruner.n_startup_trials is not a setting of the hyperband pruner .*"
                                         r"min_resource.*pruner=\{name: hyperband\}"):
        _pruner(OmegaConf.create({"pruner": {"name": "hyperband", "n_startup_trials": 5, "n_warmup_steps": 2}}))
    # no pruning: a preset's median settings left beside pruner.name=none do not apply
    assert type(_pruner(OmegaConf.create({"pruner": {"name": "none", "n_startup_trials": 5}}))).__name__ == "NopPruner"
