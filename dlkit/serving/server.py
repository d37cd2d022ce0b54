"""`dlkit serve`: a trained run behind an HTTP server (uvicorn running the FastAPI app of serving/app.py).

One worker serves in this process; `workers > 1` starts that many worker processes (uvicorn's supervisor), each
with its own copy of the model and its own batcher, sharing the port. SIGTERM or Ctrl+C stops taking new
connections, answers the requests in flight (for up to DRAIN_SECONDS), then exits 0.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
from typing import Any

from dlkit import inference
from dlkit.errors import DlkitError, UsageError

DRAIN_SECONDS = 30  # how long a stopping server waits for the requests in flight
SETTINGS = "DLKIT_SERVE_SETTINGS"  # how the worker processes get the run and the batching settings


def load(ref: str, output_dir: str = "outputs") -> inference.Loaded:
    """The run as predict rebuilds it (from its checkpoint alone: the training data need not exist)."""
    return inference.load(ref, [], output_dir, for_predict=True)


def serve(loaded: inference.Loaded, host: str = "127.0.0.1", port: int = 8000, workers: int = 1,
          max_batch_size: int = 64, batch_timeout_ms: float = 2.0, threads: int | None = None) -> None:
    """Serve until SIGTERM or Ctrl+C; returns once the requests in flight are answered. (Call check_free first for
    a one-line refusal of a busy port.) Each worker computes with `threads` torch threads (default: the cores
    shared out among the workers: more would have the workers' threads fight over the cores)."""
    import uvicorn

    threads = threads or compute_threads(workers)

    options: dict[str, Any] = {"host": host, "port": port, "log_level": "warning", "access_log": False,
                               "timeout_graceful_shutdown": DRAIN_SECONDS}
    # uvicorn re-raises the signal that stopped it once it has restored the handlers it found: these, which only
    # note it, so that a drained server exits 0
    for name in ("SIGINT", "SIGTERM"):
        signal.signal(getattr(signal, name), lambda *_: None)
    if workers == 1:
        import torch

        from dlkit.serving.app import create_app

        torch.set_num_threads(threads)
        uvicorn.run(create_app(loaded, max_batch_size, batch_timeout_ms), **options)
        return
    # the checkpoint itself: a run folder would give its best checkpoint, which need not be the one asked for
    os.environ[SETTINGS] = json.dumps({"ref": str(loaded.checkpoint.resolve()), "max_batch_size": max_batch_size,
                                       "batch_timeout_ms": batch_timeout_ms, "threads": threads})
    uvicorn.run("dlkit.serving.server:app_from_environment", factory=True, workers=workers, **options)


def app_from_environment() -> Any:
    """The app of one worker process, from the settings the parent process left in the environment."""
    import torch

    from dlkit.serving.app import create_app

    settings = json.loads(os.environ[SETTINGS])
    torch.set_num_threads(settings["threads"])
    return create_app(load(settings["ref"]), settings["max_batch_size"], settings["batch_timeout_ms"])


def compute_threads(workers: int) -> int:
    """Torch threads per worker: this machine's cores (those this process may use) shared out among the workers."""
    return max(1, len(os.sched_getaffinity(0)) // workers)


def check_free(host: str, port: int) -> None:
    """Refuse, in one line, an address that cannot be served on (port in use, host not on this machine)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind((host, port))
        except PermissionError as err:
            raise UsageError(f"--port {port}: not allowed here ({err.strerror}); choose a port above 1023.") from err
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                raise DlkitError(f"port {port} on {host} is in use; choose another with --port.") from err
            raise UsageError(f"--host {host}: cannot serve there ({err.strerror}); 127.0.0.1 serves this "
                             "machine only, 0.0.0.0 every network it is on.") from err
