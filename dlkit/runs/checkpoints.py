"""Checkpoints of a run: read safely (weights only, no code runs from the file), the best one found by the score its
callback recorded, and the checkpoint a user names located (written atomically by checkpoint_io.py).

Nothing here imports torch before it reads a file: `dlkit train` and `dlkit sweep` import this before torch.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

from dlkit.errors import DlkitError, UsageError
from dlkit.runs import query


def torch_load(path: Path, mmap: bool = False) -> Any:
    """torch.load with weights_only safety (no code runs from the file), quiet about pickle protocols; with mmap
    the tensors are read only when touched (torch's zip format only)."""
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)


def torch_load_lazily(path: Path) -> Any:
    """torch_load memory-mapped where the file's format allows, else read whole: cheap for reading metadata."""
    try:
        return torch_load(path, mmap=True)
    except RuntimeError:  # not in torch's zip format
        return torch_load(path)


def _checkpoint_callbacks(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """(key, state) of each ModelCheckpoint callback recorded in a checkpoint; [] for an unreadable file."""
    try:
        checkpoint = torch_load_lazily(path)
    except Exception:  # noqa: BLE001 - any unreadable file just has no recorded state
        return []
    callbacks = checkpoint.get("callbacks") if isinstance(checkpoint, dict) else None
    return [(str(k), v) for k, v in (callbacks or {}).items()
            if str(k).startswith("ModelCheckpoint") and isinstance(v, dict)]


def best_checkpoint(checkpoints: Path) -> Path | None:
    """The checkpoint a run's ModelCheckpoint ranked best by its monitored score; None when there is none.

    last.ckpt records which file was best (found by name, so a copied or moved run still finds it); without that
    record each best-*.ckpt's own stored score decides (min or max, as recorded); without scores, last.ckpt, else
    the newest checkpoint.
    """
    if not checkpoints.is_dir():
        return None
    files = sorted(checkpoints.glob("*.ckpt"), key=lambda p: p.stat().st_mtime_ns, reverse=True)
    last = checkpoints / "last.ckpt"
    if last.is_file():
        for _, state in _checkpoint_callbacks(last):
            if state.get("monitor") is None:
                continue  # saves every N steps or epochs, ranked by nothing
            name = Path(str(state.get("best_model_path") or "")).name
            if name and (checkpoints / name).is_file():
                return checkpoints / name
    scored = []
    for path in (f for f in files if f.name != "last.ckpt"):
        for key, state in _checkpoint_callbacks(path):
            if state.get("monitor") is not None and state.get("current_score") is not None:
                sign = -1.0 if "'mode': 'max'" in key else 1.0
                scored.append((sign * float(state["current_score"]), path))
                break
    if scored:
        return min(scored, key=lambda item: item[0])[1]
    return last if last.is_file() else (files[0] if files else None)


def dlkit_checkpoint(ref: str | Path) -> dict[str, Any] | None:
    """The checkpoint of a dlkit run folder (its best, else last) or .ckpt file; None for anything else."""
    path = Path(ref).expanduser()
    if path.is_dir():
        found = best_checkpoint(path / "checkpoints")
        if found is None:
            return None
        path = found
    if path.suffix != ".ckpt" or not path.is_file():
        return None
    checkpoint = torch_load_lazily(path)
    return checkpoint if isinstance(checkpoint, dict) and "dlkit" in checkpoint else None


# -- a checkpoint to use: found from what the user gave, read safely ----------------------------------------------
CHECKPOINT_SUFFIXES = (".ckpt", ".pt", ".pth")
GIVE = "give a run folder, a run id, latest, or a .ckpt written by dlkit train"


def not_a_checkpoint(path: Path, reason: str) -> DlkitError:
    """The one error for a file that is not a dlkit checkpoint, with the reason in a few words."""
    return DlkitError(f"{path} is not a dlkit checkpoint ({reason}); {GIVE}.")


def read_checkpoint(path: Path) -> dict[str, Any]:
    """A dlkit checkpoint, loaded with torch's weights_only safety; any other file is refused in one line."""
    if not path.is_file():
        raise UsageError(f"checkpoint {path} does not exist; {GIVE}.")
    if path.stat().st_size == 0:
        raise not_a_checkpoint(path, "the file is empty")
    try:
        checkpoint = torch_load(path)
    except OSError as err:
        raise not_a_checkpoint(path, f"cannot read it: {err.strerror or type(err).__name__}") from err
    except pickle.UnpicklingError as err:
        unsafe = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(err))
        reason = f"it pickles {unsafe.group(1)}, which torch will not load safely" if unsafe else \
            "not a file torch can load safely"
        raise not_a_checkpoint(path, reason) from err
    except Exception as err:  # noqa: BLE001 - arbitrary bytes make torch's readers fail in many ways
        raise not_a_checkpoint(path, "not a file torch can load safely") from err
    if not isinstance(checkpoint, dict):
        raise not_a_checkpoint(path, f"it holds a {type(checkpoint).__name__}, not a checkpoint")
    if "dlkit" not in checkpoint or "state_dict" not in checkpoint:
        lightning = "state_dict" in checkpoint and "pytorch-lightning_version" in checkpoint
        raise not_a_checkpoint(path, "a Lightning checkpoint without dlkit metadata" if lightning
                               else "no dlkit metadata")
    return checkpoint


def locate(ref: str, output_dir: str = "outputs") -> tuple[Path | None, Path]:
    """(run folder or None, checkpoint): any existing file as given (whatever its suffix), else the run's best
    checkpoint (or last.ckpt)."""
    path = Path(ref).expanduser()
    if path.is_file():
        parent = query.folder_of_file(path)
        return (parent.resolve() if query.is_run_folder(parent) else None), path
    if path.suffix in CHECKPOINT_SUFFIXES and not path.is_dir():
        raise UsageError(f"checkpoint {path} does not exist; {GIVE}.")
    run_dir = query.find_run(ref, output_dir)
    chosen = best_checkpoint(run_dir / "checkpoints")
    if chosen is None:
        raise DlkitError(f"{run_dir} has no checkpoint (checkpoints/best-*.ckpt or last.ckpt) to load.")
    return run_dir, chosen
