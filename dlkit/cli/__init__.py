"""The `dlkit` command line: one small function per command (training.py, configs.py, trained.py, runs.py); the
work happens in the modules they call. main() turns every error into one line and an exit code.

Only typer, rich and dlkit.config are imported at start-up, so `--help` and `config show` stay fast.
"""

from __future__ import annotations

import os
import sys

import typer

from dlkit.cli.app import app
from dlkit.errors import DlkitError, Stopped

# the commands register on the app as they are imported, in the order `dlkit --help` lists them
# isort: off
from dlkit.cli import training, trained, runs, configs  # noqa: E402, F401
# isort: on

__all__ = ["app", "main"]


def main() -> None:
    """Entry point: run the app and turn errors into one line and an exit code."""
    import click
    from typer import exceptions as typer_exceptions

    args = sys.argv[1:]
    # --verbose (-v) may stand anywhere before a `--` (`dlkit train model=x -v`); no command uses -v otherwise
    end = args.index("--") if "--" in args else len(args)
    verbose = any(a in ("--verbose", "-v") for a in args[:end]) or os.environ.get("DLKIT_VERBOSE") == "1"
    if verbose and end:
        args = ["--verbose", *(a for a in args[:end] if a not in ("--verbose", "-v")), *args[end:]]
    if os.environ.get("_DLKIT_COMPLETE") == "complete_bash":
        import shlex

        # bash splits words at `=`: at `model=<TAB>` the cursor word is `=` and bash replaces the empty text after
        # it. Give click that empty word (after `model` and `=`) so complete_override offers the option names.
        try:
            words = shlex.split(os.environ.get("COMP_WORDS", ""))
            cword = int(os.environ.get("COMP_CWORD", ""))
        except ValueError:
            words, cword = [], 0
        if 1 < cword < len(words) and words[cword] == "=" and not words[cword - 1].startswith("-"):
            os.environ["COMP_WORDS"] = shlex.join([*words[:cword + 1], ""])
            os.environ["COMP_CWORD"] = str(cword + 1)
    from dlkit import ui

    ui.set_verbose(verbose)
    # recent Typer raises its own copy of click's exceptions; older versions raise click's
    command_line_errors = (click.ClickException, getattr(typer_exceptions, "TyperException", click.ClickException))
    try:
        # without standalone mode Typer returns the code of an Exit (Ctrl+C gives 130) instead of exiting
        code = app(args=args, standalone_mode=False)
    except DlkitError as err:
        _fail(err, err.exit_code, verbose)
    except command_line_errors as err:  # unknown option, missing argument, bad value: usage errors (exit 2)
        context = getattr(err, "ctx", None)
        if type(err).__name__ == "NoArgsIsHelpError" and context is not None:  # `dlkit`, `dlkit runs`: the help
            typer.echo(context.get_help())
            sys.exit(0)
        hint = f" (see `{context.command_path} --help`)" if context is not None else ""
        typer.secho(f"error: {err.format_message()}{hint}", fg="red", err=True)
        sys.exit(err.exit_code)
    except (click.exceptions.Abort, typer_exceptions.Abort):
        sys.exit(130)
    except Stopped as stop:
        typer.secho(f"Stopped: {stop.reason}.", fg="yellow", err=True)
        sys.exit(stop.exit_code)
    except Exception as err:  # noqa: BLE001 - every failure becomes one line (traceback with --verbose)
        _fail(err, 1, verbose)
    if code == 130:
        typer.secho("Interrupted.", fg="yellow", err=True)
    sys.exit(code if isinstance(code, int) else 0)


def _fail(err: BaseException, code: int, verbose: bool) -> None:
    """Print one line for the error (the real cause, not Hydra's wrapper), the traceback if verbose, and exit."""
    shown = err
    while type(shown).__name__ == "InstantiationException" and shown.__cause__ is not None:
        shown = shown.__cause__  # Hydra wraps the error a constructor raised: show that one
    if isinstance(shown, DlkitError):
        code, prefix = shown.exit_code, ""
    else:
        prefix = f"{type(shown).__name__}: "
    if verbose:
        import traceback

        traceback.print_exception(err)
    message = " ".join(str(shown).split()) or type(shown).__name__  # the whole message, on one line
    typer.secho(f"error: {prefix}{message}", fg="red", err=True)
    sys.exit(code)
