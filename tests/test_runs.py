"""`dlkit runs list | compare | show` on real run folders: finished, failed and interrupted runs."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import pytest
from conftest import QUICK, dlkit_bin, run_cli, run_folders, summary

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    assert run_cli("train", "-m", *QUICK, "optimizer.lr=1e-2,1e-3", cwd=root).returncode == 0
    failed = run_cli("train", *QUICK, "optimizer.lr=-1", cwd=root)
    assert failed.returncode == 1 and "Invalid learning rate" in failed.stderr
    process = subprocess.Popen([dlkit_bin(), "train", "trainer.max_epochs=100000", "callbacks=minimal", "logger=csv"],
                               cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(list((root / "outputs").rglob("summary.json"))) < 4:
        time.sleep(0.3)
    time.sleep(3)  # inside the training loop
    process.send_signal(signal.SIGKILL)
    process.wait()
    return root


def test_list_shows_every_run_with_its_real_status(workspace):
    result = run_cli("runs", "list", "--format", "json", cwd=workspace)
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert sorted(r["status"] for r in rows) == ["failed", "finished", "finished", "interrupted"]
    assert rows[0]["status"] == "interrupted"  # newest first
    assert {r["model"] for r in rows} == {"mlp"} and {r["data"] for r in rows} == {"digits"}
    only_failed = json.loads(run_cli("runs", "list", "--status", "failed", "-f", "json", cwd=workspace).stdout)
    assert len(only_failed) == 1
    multirun = json.loads(run_cli("runs", "list", "--multirun", "-f", "json", cwd=workspace).stdout)
    assert len(multirun) == 2
    table = run_cli("runs", "list", cwd=workspace)
    assert "interrupted" in table.stdout and "4 runs" in table.stdout


def test_compare_a_multirun_shows_what_differs_and_the_best(workspace):
    [multirun] = {r.parent for r in run_folders(workspace) if "multirun" in r.parts}
    result = run_cli("runs", "compare", "--multirun", str(multirun), "--format", "csv", cwd=workspace)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    header = lines[0].split(",")
    assert "optimizer.lr" in header and "seed" not in header and "best val/acc" in header
    assert len(lines) == 3
    markdown = run_cli("runs", "compare", "--multirun", str(multirun), "--format", "markdown", cwd=workspace)
    assert markdown.stdout.startswith("| run | status | optimizer.lr")


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
    assert f"Run {run_id}: failed" in result.stdout and "Invalid learning rate" in result.stdout
    assert "optimizer:" in result.stdout  # the config
    latest = run_cli("runs", "show", "latest", cwd=workspace)
    assert "interrupted" in latest.stdout.splitlines()[0]
    missing = run_cli("runs", "show", "nope42", cwd=workspace)
    assert missing.returncode == 2 and "no run 'nope42'" in missing.stderr
