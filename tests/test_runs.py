"""`dlkit runs list | compare | show` on real run folders: finished, failed and interrupted runs."""

from __future__ import annotations

import csv
import io
import json
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import QUICK, dlkit_bin, run_cli, run_folders, summary

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    # a bracketed override first on the line: Rich must print it, not read it as markup
    multirun = run_cli("train", "-m", "tags=[sweep1]", *QUICK, "optimizer.lr=1e-2,1e-3", cwd=root)
    assert multirun.returncode == 0, multirun.stderr[-3000:]
    (root / "multirun_stdout.txt").write_text(multirun.stdout)
    failed = run_cli("train", *QUICK, "optimizer.lr=1e9", cwd=root)  # diverges: a failed run
    assert failed.returncode == 1 and "non-finite loss at step" in failed.stderr
    other = run_cli("train", *QUICK, "model=textcnn", "data=synthetic_sentiment", cwd=root)  # another model and data
    assert other.returncode == 0, other.stderr[-3000:]
    process = subprocess.Popen([dlkit_bin(), "train", "trainer.max_epochs=100000", "callbacks=minimal", "logger=csv"],
                               cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(list((root / "outputs").rglob("summary.json"))) < 5:
        time.sleep(0.3)
    time.sleep(3)  # inside the training loop
    process.send_signal(signal.SIGKILL)
    process.wait()
    return root


def test_list_shows_every_run_with_its_real_status(workspace):
    result = run_cli("runs", "list", "--format", "json", cwd=workspace)
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert sorted(r["status"] for r in rows) == ["failed", "finished", "finished", "finished", "interrupted"]
    assert rows[0]["status"] == "interrupted"  # newest first
    assert {(r["model"], r["data"]) for r in rows} == {("mlp", "digits"), ("textcnn", "synthetic_sentiment")}
    only_failed = json.loads(run_cli("runs", "list", "--status", "failed", "-f", "json", cwd=workspace).stdout)
    assert len(only_failed) == 1
    multirun = json.loads(run_cli("runs", "list", "--multirun", "-f", "json", cwd=workspace).stdout)
    assert len(multirun) == 2
    table = run_cli("runs", "list", cwd=workspace)
    assert "interrupted" in table.stdout and "5 runs" in table.stdout


@pytest.mark.parametrize(("options", "expected"), [
    (["--model", "textcnn"], [("textcnn", "synthetic_sentiment")]),
    (["--model", "mlp"], [("mlp", "digits")] * 4),
    (["--data", "synthetic_sentiment"], [("textcnn", "synthetic_sentiment")]),
    (["--data", "digits", "--status", "finished"], [("mlp", "digits")] * 2),
    (["--model", "textcnn", "--data", "digits"], []),
    (["--model", "lenet"], []),
])
def test_list_filters_by_model_and_data(workspace, options, expected):
    result = run_cli("runs", "list", *options, "-f", "json", cwd=workspace)
    assert result.returncode == 0, result.stderr
    assert [(r["model"], r["data"]) for r in json.loads(result.stdout)] == expected


@pytest.mark.parametrize(("args", "message"), [
    (["list", "--status", "bogus"], "--status bogus: choose running, finished, failed or interrupted."),
    (["list", "--status", "finshed"], "Did you mean finished?"),
    (["list", "/nonexistent"], "PATH /nonexistent: no such folder"),
    (["compare", "--multirun", "/nonexistent"], "--multirun /nonexistent: no such folder"),
    (["compare", "--multirun", "."], "--multirun .: no runs in this folder"),
])
def test_runs_usage_errors_name_the_bad_value(tmp_path, args, message):
    result = run_cli("runs", *args, cwd=tmp_path)
    assert result.returncode == 2 and message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


def test_multirun_output_keeps_bracketed_overrides(workspace):
    printed = (workspace / "multirun_stdout.txt").read_text()
    rules = [line for line in printed.splitlines() if "job 0:" in line or "job 1:" in line]
    assert len(rules) == 2 and all("tags=[sweep1]" in line for line in rules)
    rows = [line for line in printed.splitlines() if line.startswith(("│ 0 ", "│ 1 "))]
    assert len(rows) == 2 and all("tags=[sweep1]" in line for line in rows)
    [multirun] = {r.parent for r in run_folders(workspace) if "multirun" in r.parts}
    table = (multirun / "summary.md").read_text().splitlines()
    assert table[0].endswith("| best |") and "tags=[sweep1]" in table[2]
    records = json.loads((multirun / "multirun.json").read_text())["jobs"]
    best = max(range(2), key=lambda n: records[n]["value"])
    assert [line.endswith("| yes |") for line in table[2:]] == [n == best for n in range(2)]


def test_print_jobs_escapes_overrides_and_errors():
    from omegaconf import OmegaConf

    from dlkit import jobs, runner

    cfg = OmegaConf.create({"name": "mlp-digits", "optimized_metric": "val/acc"})
    done = [runner.Job(["tags=[a]"], cfg, {}, status="finished", metrics={"optimized_metric": 0.5}),
            runner.Job(["logger=[csv]"], cfg, {}, status="failed", error="bad [value]")]
    with jobs.console.capture() as captured:
        jobs.print_jobs(done, Path("outputs/multirun/[x]"))
    printed = captured.get()
    assert "tags=[a]" in printed and "logger=[csv]" in printed and "bad [value]" in printed
    assert "multirun/[x]" in printed


def test_compare_a_multirun_shows_what_differs_and_the_best(workspace):
    [multirun] = {r.parent for r in run_folders(workspace) if "multirun" in r.parts}
    result = run_cli("runs", "compare", "--multirun", str(multirun), "--format", "csv", cwd=workspace)
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert "optimizer.lr" in rows[0] and "seed" not in rows[0] and "best val/acc" in rows[0]
    assert len(rows) == 2
    best = max(rows, key=lambda r: float(r["best val/acc"]))
    assert [r["best"] for r in rows] == ["true" if r is best else "false" for r in rows]
    markdown = run_cli("runs", "compare", "--multirun", str(multirun), "--format", "markdown", cwd=workspace)
    assert markdown.stdout.startswith("| run | status | optimizer.lr") and markdown.stdout.count("| yes |") == 1
    records = json.loads(run_cli("runs", "compare", "--multirun", str(multirun), "-f", "json", cwd=workspace).stdout)
    assert [r["best"] for r in records] == [r["best"] == "true" for r in rows]


def test_compare_orders_multirun_jobs_by_number(workspace, tmp_path):
    [multirun] = {r.parent for r in run_folders(workspace) if "multirun" in r.parts}
    copy = tmp_path / multirun.name
    shutil.copytree(multirun, copy)
    for number in (2, 10):  # real job folders under the numbers that sort wrongly as text
        shutil.copytree(copy / "0", copy / str(number))
    result = run_cli("runs", "compare", "--multirun", str(copy), "-f", "json", cwd=workspace)
    assert result.returncode == 0, result.stderr
    assert [r["run"].rsplit("/", 1)[1] for r in json.loads(result.stdout)] == ["0", "1", "2", "10"]


def test_compare_plot_writes_a_real_png_of_the_curves(workspace):
    from PIL import Image

    [multirun] = {r.parent for r in run_folders(workspace) if "multirun" in r.parts}
    result = run_cli("runs", "compare", "--multirun", str(multirun), "--metric", "val/loss", "--plot", cwd=workspace)
    assert result.returncode == 0, result.stderr
    path = result.stdout.strip().splitlines()[-1].removeprefix("Plot: ")
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size[0] >= 600 and image.size[1] >= 400
        assert len(set(image.convert("RGB").getdata())) > 10  # curves, not a blank canvas


def test_show_by_id_and_latest(workspace):
    failed = next(r for r in run_folders(workspace) if summary(r)["status"] == "failed")
    run_id = failed.name.rsplit("-", 1)[1]
    result = run_cli("runs", "show", run_id, cwd=workspace)
    assert result.returncode == 0, result.stderr
    assert f"Run {run_id}: failed" in result.stdout and "non-finite loss at step" in result.stdout
    assert "optimizer:" in result.stdout  # the config
    latest = run_cli("runs", "show", "latest", cwd=workspace)
    assert "interrupted" in latest.stdout.splitlines()[0]
    missing = run_cli("runs", "show", "nope42", cwd=workspace)
    assert missing.returncode == 2 and "no run 'nope42'" in missing.stderr


def test_show_prints_the_wandb_link_of_an_online_run(workspace, tmp_path):
    finished = next(r for r in run_folders(workspace) if summary(r)["status"] == "finished")
    copy = tmp_path / finished.name
    shutil.copytree(finished, copy)
    info = summary(copy)
    info["wandb"] = {"id": "abc12345", "mode": "online", "url": "https://wandb.ai/me/dlkit/runs/abc12345"}
    (copy / "summary.json").write_text(json.dumps(info))
    result = run_cli("runs", "show", str(copy), cwd=workspace)
    assert result.returncode == 0, result.stderr
    assert "W&B run: https://wandb.ai/me/dlkit/runs/abc12345" in result.stdout


def test_a_run_id_is_never_one_the_command_line_reads_as_a_number(monkeypatch, tmp_path):
    import secrets

    from omegaconf import OmegaConf

    from dlkit.runs import records

    drawn = iter(["4e3810", "123456", "0e0001", "4e38a0"])
    monkeypatch.setattr(secrets, "token_hex", lambda _: next(drawn))
    folder = records.new_folder(tmp_path)
    assert folder.name.endswith("-4e38a0")
    # what Hydra makes of the ids it skipped, and of the one it took
    assert OmegaConf.from_dotlist(["a=4e3810", "b=123456", "c=4e38a0"]) == {"a": float("inf"), "b": 123456,
                                                                              "c": "4e38a0"}
