"""Weights & Biases without Lightning: whether a run goes online (logged in and the server answers) or offline, the
W&B run id of a dlkit run (one W&B run per dlkit run, resumable), its URL, its `wandb sync` command and what
summary.json says about it. The Lightning logger is in wandb_logger.py.

The W&B run id is kept in `<run folder>/wandb_id`, so resuming a dlkit run continues its W&B run. Only
global rank 0 talks to W&B (Lightning's WandbLogger creates the run on rank 0 only).
"""

from __future__ import annotations

import netrc
import os
import secrets
import shlex
import socket
import string
import threading
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from omegaconf import DictConfig, OmegaConf

from dlkit import redact

ID_FILE = "wandb_id"
DEFAULT_BASE_URL = "https://api.wandb.ai"
# How long `mode: auto` waits for the W&B server before it runs offline (wandb itself retries for minutes).
REACH_TIMEOUT_S = 2.5
MODES = ("auto", "online", "offline", "disabled")

# What this process learned about a run folder's W&B run while training it: why it ran offline, its URL.
# wandb_summary() adds it to summary.json once the run has finished.
_notes: dict[str, dict[str, str]] = {}


def _note(run_dir: str | Path, **values: str) -> None:
    _notes.setdefault(str(Path(run_dir).resolve()), {}).update(values)


def base_url() -> str:
    """The W&B server wandb is configured with (WANDB_BASE_URL, a wandb settings file, else wandb's default)."""
    try:
        from wandb.sdk import wandb_setup

        return str(wandb_setup.singleton().settings.base_url)  # reads the settings, starts no process
    except Exception:  # noqa: BLE001 - another wandb version: the environment, else the public server
        return os.environ.get("WANDB_BASE_URL") or DEFAULT_BASE_URL


def logged_in(url: str | None = None) -> bool:
    """True when an API key is in the environment or in ~/.netrc (what `wandb login` writes) for the server."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    hosts = {urlsplit(url or base_url()).hostname, urlsplit(DEFAULT_BASE_URL).hostname}
    try:
        credentials = netrc.netrc()
    except (OSError, netrc.NetrcParseError):
        return False
    return any(host and credentials.authenticators(host) is not None for host in hosts)


def reachable(url: str, timeout: float = REACH_TIMEOUT_S) -> bool:
    """Whether a TCP connection to the URL's host (or to the proxy that serves it) opens within `timeout` seconds.

    Name lookup is included in the time limit (it runs in a thread, as getaddrinfo has no timeout of its own).
    """
    parts = urlsplit(url)
    host, port = parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
    proxy = urllib.request.getproxies().get(parts.scheme or "https")
    if proxy and host and not urllib.request.proxy_bypass(host):
        proxy_parts = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        host, port = proxy_parts.hostname, proxy_parts.port or (443 if proxy_parts.scheme == "https" else 80)
    if not host:
        return False
    opened: list[bool] = []

    def connect() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                opened.append(True)
        except OSError:
            pass

    attempt = threading.Thread(target=connect, name="dlkit-wandb-reachable", daemon=True)
    attempt.start()
    attempt.join(timeout)
    return bool(opened)


def choose_mode(mode: str, setting: str = "logger.mode") -> tuple[str, str]:
    """(online | offline | disabled, why): an explicit WANDB_MODE wins, then the config; `auto` is online only
    when an API key is there and the W&B server answers within a few seconds."""
    explicit = os.environ.get("WANDB_MODE")
    if explicit in ("online", "offline", "disabled", "dryrun"):
        return ("offline" if explicit == "dryrun" else explicit), f"WANDB_MODE={explicit}"
    if mode not in MODES:
        from dlkit.errors import UsageError, did_you_mean

        raise UsageError(f"{setting}={mode!r}: choose auto, online, offline or disabled.{did_you_mean(mode, MODES)}")
    if mode != "auto":
        return mode, f"{setting}={mode}"
    url = base_url()
    if not logged_in(url):
        return "offline", "not logged in"
    if not reachable(url):
        return "offline", f"{urlsplit(url).hostname} did not answer within {REACH_TIMEOUT_S:g} s"
    return "online", "logged in"


def flat_config(cfg: DictConfig) -> dict[str, Any]:
    """The composed config as flat, readable keys (`optimizer.lr`), lists kept whole."""
    flat: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, child in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), child)
        else:
            flat[prefix] = value

    walk("", redact.value(OmegaConf.to_container(cfg, resolve=True)))
    return flat


def run_id(run_dir: Path) -> str:
    """The W&B id of this run folder, created once and kept (so a resumed run continues it)."""
    path = run_dir / ID_FILE
    if path.is_file():
        return path.read_text().strip()
    new_id = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))
    if int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0"))) == 0:
        path.write_text(new_id + "\n")
    return new_id


def decide_mode(mode: str, run_config: DictConfig, folder: Path) -> str:
    """online, offline or disabled (see choose_mode); why a run goes offline is noted for the folder's summary."""
    mode, why = choose_mode(mode, _mode_setting(run_config))
    if mode == "offline":
        _note(folder, offline=why)
    return mode


def display_name(run_config: DictConfig, name: str | None) -> str:
    """The W&B name of a run: `name`, else "<model>-<data>-<run id>" ("...-<multirun id>-<job>" for a multirun
    job)."""
    run_dir, multirun = Path(run_config.paths.run_dir), run_config.paths.get("multirun_dir")
    label = f"{_short_id(Path(multirun))}-{run_dir.name}" if multirun else _short_id(run_dir)
    return name or f"{run_config.get('name') or 'run'}-{label}"


def group_of(run_config: DictConfig, group: str | None) -> str | None:
    """The W&B group: `group`, else the multirun or sweep the run belongs to (None for a single run)."""
    multirun = run_config.paths.get("multirun_dir")
    return group or (Path(multirun).name if multirun else None)


def describe(logger: Any, folder: Path) -> dict[str, Any]:
    """id, mode and the URL (online) or the `wandb sync` command (offline) of a finished eval's W&B run."""
    run = logger.experiment
    record: dict[str, Any] = {"id": run.id, "mode": "offline" if run.offline else "online",
                              "dir": str(Path(run.dir).parent)}
    url = run_url(run)
    if url:
        record["url"] = url
    else:
        record["sync"] = sync_command([Path(run.dir).parent])
        record["offline_reason"] = _notes.get(str(Path(folder).resolve()), {}).get("offline", "")
    return record


def rank() -> int:
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")))


def _mode_setting(run_config: DictConfig) -> str:
    """The key the user sets the mode with: logger.mode, or logger.wandb.mode when that one is set directly."""
    node = (run_config.get("logger") or {}).get("wandb")
    if node is not None and "mode" in node and not OmegaConf.is_interpolation(node, "mode"):
        return "logger.wandb.mode"
    return "logger.mode"


def _short_id(folder: Path) -> str:
    """The hex id at the end of a run folder's name (`14-56-22-9af716` -> `9af716`)."""
    return folder.name.rsplit("-", 1)[-1]


def run_url(run: Any) -> str | None:
    """The web address of a W&B run object, or None when it runs offline or disabled."""
    if run is None or getattr(run, "offline", True) or getattr(run, "disabled", False):
        return None
    return getattr(run, "url", None) or None


def remember_url(run_dir: str | Path, run: Any) -> None:
    """Keep the run's web address for summary.json (called while the W&B run is still open)."""
    url = run_url(run)
    if url:
        _note(run_dir, url=url)


def sync_command(segments: list[Path]) -> str:
    """One `wandb sync` for every offline segment of a run (a resumed run has one per start), oldest first."""
    return "wandb sync " + " ".join(shlex.quote(str(p)) for p in segments)


def wandb_summary(run_dir: Path) -> dict[str, Any] | None:
    """What summary.json says about this run's W&B run: id, mode, and its URL (online) or the command that
    uploads every offline segment (offline; a resumed run has one segment per start)."""
    id_file = run_dir / ID_FILE
    if not id_file.is_file():
        return None
    wandb_id = id_file.read_text().strip()
    folder = run_dir / "wandb"
    offline = sorted(folder.glob(f"offline-run-*-{wandb_id}"), key=_started)
    online = sorted(folder.glob(f"run-*-{wandb_id}"), key=_started)
    if not offline and not online:  # W&B never started (the run failed before training)
        return None
    notes = _notes.get(str(Path(run_dir).resolve()), {})
    latest = max([*offline, *online], key=_started)
    summary: dict[str, Any] = {"id": wandb_id, "mode": "offline" if latest in offline else "online",
                               "dir": str(latest)}
    if summary["mode"] == "online" and notes.get("url"):
        summary["url"] = notes["url"]
    if summary["mode"] == "offline" and notes.get("offline"):
        summary["offline_reason"] = notes["offline"]
    if offline:
        summary["sync"] = sync_command(offline)
    return summary


def _started(segment: Path) -> str:
    """The start time in a W&B run folder's name (`offline-run-20261125_161557-x9hnnacy`)."""
    return segment.name.rsplit("-", 2)[-2]
