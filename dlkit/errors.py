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


class CheckpointWriteError(DlkitError):
    """A checkpoint could not be written: the disk is full, or the folder cannot be written."""


def did_you_mean(value: str, options: Iterable[str]) -> str:
    """' Did you mean X?' for the closest option, or '' when none is close."""
    close = difflib.get_close_matches(str(value), [str(o) for o in options if str(o) != str(value)], n=1,
                                      cutoff=0.6)
    return f" Did you mean {close[0]}?" if close else ""


class Stopped(BaseException):
    """The process was told to stop by a signal: SIGTERM (what schedulers and `kill` send), SIGHUP (the terminal
    closed) or SIGUSR2 / SIGUSR1 (Slurm's warning before a job's time limit: dlkit's launcher asks for SIGUSR2). Like
    KeyboardInterrupt it is no Exception, so nothing on the way up mistakes it for a failure."""

    REASONS = {"SIGTERM": "terminated (SIGTERM)", "SIGHUP": "hung up (SIGHUP: the terminal closed)",
               "SIGUSR1": "the job's time limit is near (SIGUSR1)", "SIGUSR2": "the job's time limit is near (SIGUSR2)"}

    def __init__(self, signum: int) -> None:
        import signal

        self.signal = signal.Signals(signum).name
        self.exit_code = 128 + int(signum)
        self.reason = self.REASONS.get(self.signal, f"stopped by {self.signal}")
        self.checkpointed = False  # set once the training state was saved on the way out
        super().__init__(self.reason)


class StopRequest:
    """Signals that stop a run, at once or, while training, at the end of the current step.

    While a training loop is between steps (dlkit's LastCheckpoint opens that window), a signal is only noted: the
    step finishes, last.ckpt is written at that exact place, then `Stopped` is raised (so a scheduler's SIGTERM or
    time-limit warning costs no work). Anywhere else, or on a second signal, `Stopped` is raised at once; a time-limit
    warning (SIGUSR1/2), which comes ahead of time, waits for the first step even before training starts.
    """

    SIGNALS = ("SIGTERM", "SIGHUP", "SIGUSR1", "SIGUSR2")

    def __init__(self) -> None:
        self.pending: Stopped | None = None
        self.graceful = False

    def install(self) -> None:
        import signal

        for name in self.SIGNALS:
            if hasattr(signal, name):
                signal.signal(getattr(signal, name), self._handle)

    def _handle(self, signum: int, _frame: object) -> None:
        import signal

        warning = signum in (getattr(signal, "SIGUSR1", None), getattr(signal, "SIGUSR2", None))
        if (self.graceful or warning) and self.pending is None:  # a warning comes ahead of time: wait for a step
            self.pending = Stopped(signum)
            return
        raise self.pending if self.pending is not None else Stopped(signum)

    def take(self) -> Stopped | None:
        """The pending stop, if a signal came, and forget it."""
        pending, self.pending = self.pending, None
        return pending


stop_request = StopRequest()


def stop_on_signals() -> None:
    """Turn SIGTERM, SIGHUP, SIGUSR1 and SIGUSR2 into `Stopped` in this process (see StopRequest)."""
    stop_request.install()
