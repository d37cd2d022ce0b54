"""README's commands run as written, top to bottom, in one fresh folder, offline, the way a new user types them.

The folder gets a `./conf` that makes the trainings short (the packaged trainer with 2 epochs of 5 batches, a sweep
of 2 trials): the commands are README's own, through dlkit's documented way of changing a packaged config. The full
length default training is tested on its own (test_cli_core). Lines that need hardware this machine lacks (marked
in README) must be refused before any work with their one-line reason, exit 2. A plain `dlkit ...` line runs
through the console script's entry point in this process (the same argv, exit code and output; without a new
interpreter importing PyTorch and Lightning for each of them); a line with shell syntax runs in bash.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import dlkit_bin, run_main

from dlkit.config import packaged_conf_dir

pytestmark = pytest.mark.slow
README = Path(__file__).resolve().parent.parent / "README.md"
COMMANDS = ("dlkit ", "pip install ", "printf ", "torchrun ")
# README's marks -> (what this machine must have to run the line, what dlkit says where it lacks it)
NEEDS = {
    "on a GPU machine": (lambda: _has_gpu(), "needs a CUDA GPU and none is visible"),
    "on a SLURM login node": (lambda: _slurm_answers(), "launcher=slurm"),
}
QUICK_TRAINER = {"max_epochs": 2, "limit_train_batches": 5, "limit_val_batches": 2, "limit_test_batches": 2}


def _slurm_answers() -> bool:
    """Whether a Slurm cluster answers here (sbatch alone is not enough: the tests' own cluster is not running)."""
    if shutil.which("sinfo") is None:
        return False
    return subprocess.run(["sinfo", "-h"], capture_output=True, timeout=30).returncode == 0


def _has_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def readme_commands(text: str) -> list[str]:
    """The command lines of README's indented code blocks, continued lines joined."""
    lines, joined = [], ""
    for raw in text.splitlines():
        if not raw.startswith("    "):
            joined = ""
            continue
        line = raw.strip()
        joined = f"{joined} {line}".strip() if joined else line
        if joined.endswith("\\"):
            joined = joined[:-1].rstrip()
            continue
        if joined.startswith(COMMANDS):
            lines.append(joined)
        joined = ""
    return lines


def _quick_conf(folder: Path) -> None:
    """./conf/trainer/cpu.yaml (every trainer extends it) and a 2-trial textcnn_optuna: README's commands, short."""
    (folder / "conf" / "trainer").mkdir(parents=True)
    text = (packaged_conf_dir() / "trainer" / "cpu.yaml").read_text()
    for key, value in QUICK_TRAINER.items():
        text, count = re.subn(rf"^{key}:.*$", f"{key}: {value}", text, flags=re.M)
        assert count == 1, key
    (folder / "conf" / "trainer" / "cpu.yaml").write_text(text)
    (folder / "conf" / "hparams_search").mkdir()
    search = (packaged_conf_dir() / "hparams_search" / "textcnn_optuna.yaml").read_text()
    (folder / "conf" / "hparams_search" / "textcnn_optuna.yaml").write_text(
        re.sub(r"n_trials: \d+", "n_trials: 2", search))


def test_readme_lists_the_commands_a_user_types():
    commands = readme_commands(README.read_text())
    assert commands[0] == "pip install torch==2.13.0 && pip install . && dlkit train"
    assert any("pytest" in c for c in commands) and len(commands) > 25
    assert all(c.startswith(COMMANDS) for c in commands)


def test_every_readme_command_runs_as_written_in_order(tmp_path):
    _quick_conf(tmp_path)
    env = {**os.environ, "COLUMNS": "200", "PATH": f"{Path(dlkit_bin()).parent}{os.pathsep}{os.environ['PATH']}"}
    ran = []
    for command in readme_commands(README.read_text()):
        if "pytest" in command:  # the test command: this suite
            continue
        command = re.sub(r"^pip install .*?&& (dlkit .*)$", r"\1", command)  # installed already: the environment
        mark = next((m for m in NEEDS if m in command), None)
        if "on each machine" in command:  # several machines: compose what each of them would run
            args = command.split("dlkit train", 1)[1].split("#", 1)[0].split()
            result = subprocess.run([dlkit_bin(), "config", "show", *args], cwd=tmp_path, env=env,
                                    capture_output=True, text=True, timeout=120)
            assert result.returncode == 0, (command, result.stderr)
            continue
        words = command.split("#", 1)[0]
        if words.startswith("dlkit ") and not re.search(r"[|&;<>$`]", words):
            result = run_main(*shlex.split(words)[1:], cwd=tmp_path)
        else:
            result = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True,
                                    timeout=600)
        if mark is not None and not NEEDS[mark][0]():
            assert result.returncode == 2, (command, result.stdout[-2000:], result.stderr[-2000:])
            assert NEEDS[mark][1] in result.stderr and result.stderr.count("\n") == 1, (command, result.stderr)
        else:
            assert result.returncode == 0, (command, result.stdout[-2000:], result.stderr[-2000:])
            assert "Traceback" not in result.stderr, (command, result.stderr)
        ran.append(command)
    assert len(ran) >= 25
    assert (tmp_path / "conf" / "model" / "mlp.yaml").is_file()  # config copy
    assert list((tmp_path / "outputs" / "multirun").rglob("compare-val_acc.png"))  # runs compare --plot
    assert (tmp_path / "translated.txt").read_text().strip()  # predict -f text > translated.txt
    assert list((tmp_path / "outputs").rglob("export/onnx/model.onnx"))
    assert list((tmp_path / "outputs" / "sweeps" / "textcnn_optuna").glob("study.db"))
