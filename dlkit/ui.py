"""What dlkit shows a person in the terminal: one Rich console, a status line while a run starts, and how much
third-party output gets through.

Without --verbose, Python warnings and Lightning's notes ("GPU available: ...", "Restoring states ...") go to the
run's train.log only (run_folder.log_to); with --verbose they reach the terminal as well. Nothing here imports torch.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console

console = Console()
_verbose = False
# the loggers of the libraries whose notes dlkit keeps out of the terminal unless asked
THIRD_PARTY = ("pytorch_lightning", "lightning_fabric", "lightning.pytorch", "lightning.fabric", "py.warnings")


def set_verbose(verbose: bool) -> None:
    """--verbose: tracebacks, warnings and every library note on the terminal."""
    global _verbose
    _verbose = verbose


def verbose() -> bool:
    return _verbose


def quiet_third_party() -> None:
    """Let library notes reach the terminal only at WARNING (all of them with --verbose), and warnings only with
    --verbose; both still reach train.log, whose handler run_folder.log_to attaches to the same loggers.

    A handler on the root logger, made before Lightning is imported, keeps Lightning from adding its own; where it
    was imported already, its own handler is turned down instead.
    """
    level = logging.INFO if _verbose else logging.WARNING
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        root.addHandler(handler)
    for handler in root.handlers:
        if _is_terminal_handler(handler):
            handler.setLevel(level)
    for name in THIRD_PARTY[:-1]:
        for handler in logging.getLogger(name).handlers:
            if _is_terminal_handler(handler):
                handler.setLevel(level)
    logging.captureWarnings(True)
    warnings_logger = logging.getLogger("py.warnings")
    warnings_logger.propagate = _verbose
    if not warnings_logger.handlers:  # no handler at all would make logging print them anyway (its last resort)
        warnings_logger.addHandler(logging.NullHandler())


def _is_terminal_handler(handler: logging.Handler) -> bool:
    return isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler)


@contextmanager
def status(text: str) -> Iterator[None]:
    """A spinner with `text` while the block runs, on a terminal; nothing elsewhere (logs, pipes, tests)."""
    if not console.is_terminal:
        yield
        return
    with console.status(text, spinner="dots"):
        yield
