"""Multi-process launch that works from a console script with subcommands and inside multiruns.

Lightning's own launcher re-runs `sys.argv` for ranks > 0, which breaks under `dlkit train -m ...`
(each rank would start its own sweep and its own run folder). dlkit instead starts ranks > 0 itself as
`python -m dlkit.distributed RUN_DIR`: they read the composed config.yaml of the one run folder that
rank 0 created, and Lightning sees the processes as created externally (LOCAL_RANK is set).

Under torchrun or SLURM the processes already exist; dlkit launches nothing and only global rank 0
writes the run folder.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from omegaconf import DictConfig

from dlkit.errors import DlkitError


def external_launcher() -> str | None:
    """'torchrun' or 'slurm' when this process is one of several started from outside, else None."""
    if "TORCHELASTIC_RUN_ID" in os.environ or ("RANK" in os.environ and "WORLD_SIZE" in os.environ):
        return "torchrun"
    if int(os.environ.get("SLURM_NTASKS", "1")) > 1 and os.environ.get("SLURM_JOB_NAME") not in ("bash",
                                                                                                 "interactive"):
        return "slurm"
    return None


def global_rank() -> int:
    """This process's global rank as the launcher set it (0 when not launched from outside)."""
    for name in ("RANK", "SLURM_PROCID"):
        if name in os.environ:
            return int(os.environ[name])
    return 0


def local_processes(trainer: DictConfig) -> int:
    """How many processes this node runs for the trainer config (1 unless a DDP-like strategy asks more)."""
    strategy = str(trainer.get("strategy", "auto"))
    if not any(s in strategy for s in ("ddp", "fsdp", "deepspeed")):
        return 1
    devices = trainer.get("devices", 1)
    if isinstance(devices, str) and devices != "auto":
        devices = [d for d in devices.split(",") if d.strip()] if "," in devices else int(devices)
    if devices in (-1, "auto"):
        if trainer.get("accelerator") == "cpu":
            return 1 if devices == "auto" else os.cpu_count() or 1
        import torch

        return max(1, torch.cuda.device_count())
    return len(devices) if isinstance(devices, (list, tuple)) else int(devices)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def ranks(run_dir: Path, trainer: DictConfig, ckpt_path: str | None = None) -> Iterator[list[subprocess.Popen]]:
    """Make this process rank 0 of `devices` local processes and start the others; stop them afterwards."""
    n = local_processes(trainer)
    if n <= 1 or external_launcher() or "LOCAL_RANK" in os.environ:
        yield []
        return
    env = {
        "MASTER_ADDR": os.environ.get("MASTER_ADDR", "127.0.0.1"),
        "MASTER_PORT": str(_free_port()),
        "NODE_RANK": os.environ.get("NODE_RANK", "0"),
        "WORLD_SIZE": str(n * int(trainer.get("num_nodes", 1))),
    }
    saved = {k: os.environ.get(k) for k in [*env, "LOCAL_RANK"]}
    os.environ.update(env, LOCAL_RANK="0")
    command = [sys.executable, "-m", "dlkit.distributed", str(run_dir), *([ckpt_path] if ckpt_path else [])]
    children = [
        subprocess.Popen(command, env={**os.environ, "LOCAL_RANK": str(rank)}, preexec_fn=_die_with_parent)
        for rank in range(1, n)
    ]
    try:
        try:
            yield children
        except Exception as err:
            dead = _dead_rank(children)
            if dead:  # the collective failed because a rank is gone: say which, not the transport's error
                raise DlkitError(f"{dead}; the other ranks stopped ({type(err).__name__}).") from err
            raise
        for child in children:
            if child.wait() != 0:
                raise DlkitError(f"rank {children.index(child) + 1} {_exit_of(child.returncode)}")
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        end_process_group()


def _exit_of(code: int) -> str:
    if code < 0:
        return f"was killed by {signal.Signals(-code).name}"
    return f"exited with code {code}"


def _dead_rank(children: list[subprocess.Popen], wait_s: float = 5.0) -> str | None:
    """'rank N was killed by SIGKILL' for the first rank that ended badly (waiting a little for a rank whose end
    the others noticed first), else None."""
    deadline = time.monotonic() + wait_s
    while True:
        for rank, child in enumerate(children, start=1):
            if child.poll() not in (None, 0):
                return f"rank {rank} {_exit_of(child.returncode)}"
        if time.monotonic() > deadline:
            return None
        time.sleep(0.1)


def _die_with_parent() -> None:
    """In a rank > 0 before it starts: the kernel kills it when rank 0 dies (Linux), so no rank is left waiting."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def end_process_group() -> None:
    """Destroy the default process group so that the next job of a multirun can start its own."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _worker(run_dir: str, ckpt_path: str | None = None) -> None:
    """Rank > 0: train from the run folder's composed config; rank 0 writes everything."""
    from omegaconf import OmegaConf

    from dlkit import ui
    from dlkit.training import train

    ui.quiet_third_party()  # rank 0 speaks for the run: library notes and warnings of this rank stay out
    cfg = OmegaConf.load(Path(run_dir) / "config.yaml")
    train(cfg, ckpt_path=ckpt_path)


if __name__ == "__main__":
    _worker(*sys.argv[1:3])
