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
    close = difflib.get_close_matches(str(value), [str(o) for o in options], n=1, cutoff=0.6)
    return f" Did you mean {close[0]}?" if close else ""
