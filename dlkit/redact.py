"""Passwords stay in the process: a URL's password (a study's `postgresql://user:PASSWORD@host/db`) is masked in
everything dlkit writes or prints (config.yaml, overrides, summary.json, sweep.json, checkpoints, W&B config).

Give a database password through the environment instead (PGPASSWORD or ~/.pgpass for PostgreSQL): the URL then
holds none, and every process that opens the study finds it."""

from __future__ import annotations

import re
from typing import Any

MASK = "***"
_PASSWORD = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://[^/:@\s]*:)[^@\s/]+(?=@)")


def text(value: str) -> str:
    """The string with the password of every URL in it masked."""
    return _PASSWORD.sub(lambda match: match.group(1) + MASK, value) if "://" in value else value


def value(data: Any) -> Any:
    """The same data (dicts, lists, tuples, strings, anything else as it is) with passwords in strings masked."""
    if isinstance(data, str):
        return text(data)
    if isinstance(data, dict):
        return {text(k) if isinstance(k, str) else k: value(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return type(data)(value(v) for v in data)
    return data
