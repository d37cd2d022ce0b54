"""The two kinds of failure dlkit reports: a usage error (exit 2) and a runtime failure (exit 1)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class DlkitError(Exception):
    """A runtime failure with a one-line message for the user (exit code 1)."""

    exit_code = 1


class UsageError(DlkitError):
    """The command line or the configuration asks for something impossible (exit code 2)."""

    exit_code = 2


def did_you_mean(value: str, options: Iterable[str]) -> str:
    """' Did you mean X?' for the closest option, or '' when none is close."""
    close = difflib.get_close_matches(str(value), [str(o) for o in options if str(o) != str(value)], n=1,
                                      cutoff=0.6)
    return f" Did you mean {close[0]}?" if close else ""


class Stopped(BaseException):
    """The process was told to stop by a signal: SIGTERM (what schedulers and `kill` send) or SIGHUP (the terminal
    closed). Like KeyboardInterrupt it is no Exception, so nothing on the way up mistakes it for a failure."""

    REASONS = {"SIGTERM": "terminated (SIGTERM)", "SIGHUP": "hung up (SIGHUP: the terminal closed)"}

    def __init__(self, signum: int) -> None:
        import signal

        self.signal = signal.Signals(signum).name
        self.exit_code = 128 + int(signum)
        self.reason = self.REASONS.get(self.signal, f"stopped by {self.signal}")
        super().__init__(self.reason)


def stop_on_signals() -> None:
    """Turn SIGTERM and SIGHUP into `Stopped` in this process, so a run stopped that way records why."""
    import signal

    def stop(signum: int, _frame: object) -> None:
        raise Stopped(signum)

    for name in ("SIGTERM", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), stop)
