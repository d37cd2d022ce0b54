"""Optuna sweeps on a real PostgreSQL server (tests/services.py), as several machines share one study.

Skipped only where PostgreSQL's server binaries are missing; CI installs them (.ci/run), so these run there.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import optuna
import pytest
from conftest import QUICK, dlkit_bin
from optuna.trial import TrialState
from services import postgres_bin, postgres_server

pytestmark = [pytest.mark.slow, pytest.mark.skipif(postgres_bin() is None or os.geteuid() != 0,
                                                   reason="needs PostgreSQL's server binaries (apt-get install "
                                                          "postgresql) and root to run them as `postgres`")]

SECRET = "s3cret-pw"  # trust authentication accepts it; it must never be written anywhere


@pytest.fixture(scope="module")
def database():
    with postgres_server() as server:
        yield server


def _url(database, password: bool = True) -> str:
    return database.url.replace("postgres@", f"postgres:{SECRET}@") if password else database.url


def _sweep(study: str, storage: str, *more: str) -> list[str]:
    return [dlkit_bin(), "sweep", "hparams_search=mlp_optuna", f"hparams_search.study_name={study}",
            f"hparams_search.storage={storage}", "hparams_search.pruner.name=none",
            "hparams_search.recover_interrupted=false", *QUICK, *more]


def _trials(database, study: str) -> list:
    return optuna.load_study(study_name=study, storage=database.url).trials


def test_three_machines_share_one_study_exactly_n_trials_none_twice_and_no_password_written(database, tmp_path):
    machines = [tmp_path / f"machine{n}" for n in range(3)]
    processes = []
    for folder in machines:  # three `dlkit sweep` commands, each in its own folder, as on three machines
        folder.mkdir()
        processes.append(subprocess.Popen(_sweep("shared", _url(database), "hparams_search.n_trials=7"), cwd=folder,
                                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                          env={**os.environ, "COLUMNS": "200"}))
    outputs = [p.communicate(timeout=600)[0] for p in processes]
    assert [p.returncode for p in processes] == [0, 0, 0], outputs
    trials = _trials(database, "shared")
    assert len(trials) == 7 and all(t.state == TrialState.COMPLETE for t in trials)  # exactly n_trials
    assert len({tuple(sorted(t.params.items())) for t in trials}) == 7  # none ran twice
    ran_on = {t.user_attrs["process"] for t in trials}
    assert len(ran_on) >= 2, ran_on  # the machines did share the work
    for folder, output in zip(machines, outputs):
        assert SECRET not in output
        for path in folder.rglob("*"):
            if path.is_file():
                assert SECRET.encode() not in path.read_bytes(), path  # config, summary, sweep.json, checkpoints
    sweep_json = next(machines[0].rglob("sweep.json")).read_text()
    assert "postgres:***@127.0.0.1" in sweep_json


def test_a_worker_killed_mid_trial_has_its_trial_retried_and_none_is_lost(database, tmp_path):
    command = _sweep("killed", _url(database, password=False), "hparams_search.n_trials=3",
                     "hparams_search.recover_interrupted=true", "trainer.max_epochs=200", "trainer.limit_val_batches=1")
    process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    deadline = time.time() + 180
    while time.time() < deadline and not list((tmp_path / "outputs").rglob("trial_000/metrics.csv")):
        time.sleep(0.2)
    time.sleep(1.5)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    [running] = [t for t in _trials(database, "killed") if t.state == TrialState.RUNNING]
    command[command.index("trainer.max_epochs=200")] = "trainer.max_epochs=2"
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "1 interrupted trial(s) queued again" in result.stdout
    trials = _trials(database, "killed")
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    [failed] = [t for t in trials if t.state == TrialState.FAIL]
    assert failed.number == running.number and failed.user_attrs["interrupted"]
    assert len(complete) == 3 and len(trials) == 4  # zero lost, none extra
    [retry] = [t for t in complete if t.user_attrs.get("retry_of") == failed.number]
    assert retry.params == failed.params
