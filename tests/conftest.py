"""Shared test setup: hermetic caches, offline W&B, helpers to run the real console script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

if os.environ.get("PYTEST_XDIST_WORKER"):
    # test processes run side by side, one per core: one compute thread each (and in the trainings they start),
    # or their threads fight over the cores
    os.environ.setdefault("OMP_NUM_THREADS", "1")

# Small, quick trainings through the real code path (checkpoints written, test run).
QUICK = ["trainer.max_epochs=2", "trainer.limit_train_batches=4", "trainer.limit_val_batches=2",
         "trainer.limit_test_batches=2", "callbacks=minimal", "logger=csv"]


@pytest.fixture(autouse=True, scope="session")
def _hermetic_env(tmp_path_factory: pytest.TempPathFactory) -> None:
    cache = tmp_path_factory.mktemp("dlkit-cache")
    os.environ.setdefault("DLKIT_CACHE_DIR", str(cache / "cache"))
    os.environ.setdefault("DLKIT_DATA_DIR", str(cache / "data"))
    os.environ["WANDB_MODE"] = "offline"
    os.environ.setdefault("WANDB_SILENT", "true")
    os.environ.pop("WANDB_API_KEY", None)
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_DATASETS_OFFLINE"] = "1"


def dlkit_bin() -> str:
    """The installed console script (next to this Python)."""
    candidate = Path(sys.executable).with_name("dlkit")
    return str(candidate) if candidate.exists() else "dlkit"


def run_cli(*args: str, cwd: Path, timeout: float = 300, env: dict | None = None,
            script: bool = False) -> subprocess.CompletedProcess:
    """Run `dlkit ARGS...` in a process of its own, capturing its output: forked from a server that imported the
    training stack (tests/forked.py), or with script=True the installed console script in a new interpreter."""
    env = {**os.environ, "COLUMNS": "200", **(env or {})}
    if not script:
        import forked

        return forked.run(list(args), cwd, env, timeout)
    return subprocess.run([dlkit_bin(), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


def start_cli(*args: str, cwd: Path, **popen: Any) -> subprocess.Popen:
    """Start `dlkit ARGS...` without waiting, as a terminal starts it: Ctrl+C (SIGINT) reaches it even when pytest
    itself runs as a script's background job (`cmd &`), which makes it and its children ignore SIGINT."""
    import signal

    return subprocess.Popen([dlkit_bin(), *args], cwd=cwd, **popen,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def run_main(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """`dlkit ARGS...` through the console script's own entry point, in this process: the same output and exit
    code as run_cli without a new interpreter importing torch (for the many quick error checks)."""
    import contextlib
    import io

    from dlkit import cli

    out, err = io.StringIO(), io.StringIO()
    argv, here = sys.argv, os.getcwd()
    code: int = 0
    sys.argv = ["dlkit", *args]
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            cli.main()
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    finally:
        sys.argv = argv
        os.chdir(here)
    return subprocess.CompletedProcess(["dlkit", *args], code, out.getvalue(), err.getvalue())


def run_folders(root: Path) -> list[Path]:
    """Every run folder (one holding summary.json) under root/outputs."""
    return sorted(p.parent for p in (root / "outputs").rglob("summary.json"))


def summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())
