"""`dlkit ARGS...` in a process forked from a server that has imported the training stack once.

A new Python interpreter spends about 8 s importing PyTorch, Lightning and their dependencies before dlkit's code
runs; a process forked from a server that imported them starts in milliseconds. It is still a process of its own:
its own exit code (negative for a signal), its own stdout and stderr, environment, working directory and signal
handlers, and dlkit's console entry point (dlkit.cli.main) runs in it exactly as the installed script runs it.
Processes it starts (DDP ranks, sweep workers) are ordinary new interpreters.
"""

from __future__ import annotations

import atexit
import multiprocessing
import os
import subprocess
import sys
import tempfile
from pathlib import Path

# imported once by the server; a forked process finds them loaded
PRELOAD = ["dlkit.cli", "dlkit.runner", "dlkit.build", "dlkit.training", "dlkit.checks", "dlkit.inference",
           "dlkit.sweeps.study"]
_context = None


def _server():
    global _context
    if _context is None:
        _context = multiprocessing.get_context("forkserver")
        _context.set_forkserver_preload(PRELOAD)
    return _context


def _main(args: list[str], cwd: str, env: dict[str, str], out: str, err: str) -> None:
    """What the forked process runs: the console entry point, with this command's argv, folder and environment."""
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    for entry in reversed([p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]):
        sys.path.insert(0, entry)  # the interpreter read PYTHONPATH when the server started
    for fd, path in ((1, out), (2, err)):
        handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(handle, fd)
        os.close(handle)
    from dlkit import ui

    ui.console.width = int(env.get("COLUMNS", "80"))  # the console was made when the server imported dlkit
    sys.argv = ["dlkit", *args]
    code = 0
    try:
        from dlkit.cli import main

        main()
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    finally:
        atexit._run_exitfuncs()  # as an interpreter does on exit (W&B ends its service there)
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)


def run(args: list[str], cwd: Path, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    """Run `dlkit ARGS...` in a forked process and wait for it, like subprocess.run(capture_output=True)."""
    with tempfile.TemporaryDirectory(prefix="dlkit-forked-") as tmp:
        out, err = os.path.join(tmp, "stdout"), os.path.join(tmp, "stderr")
        process = _server().Process(target=_main, args=(list(args), str(cwd), dict(env), out, err))
        process.start()
        process.join(timeout)
        if process.is_alive():
            process.kill()
            process.join()
            raise subprocess.TimeoutExpired(["dlkit", *args], timeout)
        read = lambda path: Path(path).read_text(encoding="utf-8", errors="replace")  # noqa: E731
        return subprocess.CompletedProcess(["dlkit", *args], process.exitcode, read(out), read(err))
