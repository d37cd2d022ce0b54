"""The Lightning checkpoint plugin of every run: a checkpoint is written to a temporary file beside its target,
fsynced and renamed over it, so a crash mid-write never leaves a half file under the final name."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

from dlkit.errors import CheckpointWriteError


class AtomicCheckpointIO(TorchCheckpointIO):
    """Save to a temporary file beside the target, fsync, then rename over it; a failed write leaves the previous
    file as it was and raises CheckpointWriteError (torch's own error names its C++ source file, not the cause)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any = None) -> None:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "wb") as handle:
                torch.save(checkpoint, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, target)
        except OSError as err:
            raise CheckpointWriteError(f"could not write the checkpoint {target} ({err.strerror})") from err
        except RuntimeError as err:  # torch's writer: "[enforce fail at inline_container.cc:N] ... write failed"
            if "inline_container" not in str(err) and "write" not in str(err):
                raise
            raise CheckpointWriteError(f"could not write the checkpoint {target} (the write failed)") from err
        finally:
            tmp.unlink(missing_ok=True)
