"""The `dlkit` Typer app, its command groups and what the commands share: the overrides argument with shell
completion, --config-dir, --format, and printing a rendered table."""

from __future__ import annotations

import typer

from dlkit.errors import UsageError

OVERRIDES_HELP = """Hydra overrides: GROUP=OPTION picks a config (model=lenet), KEY=VALUE sets a value
(optimizer.lr=3e-4), +KEY=VALUE adds a key, ~KEY removes one (~callbacks.early_stopping)."""

EXAMPLES = """
Examples:

  dlkit train                                     # MLP on the bundled digits, offline, about a minute

  dlkit train model=lenet optimizer.lr=3e-4 trainer.max_epochs=5

  dlkit train -m optimizer.lr=1e-2,1e-3 seed=0,1  # a multirun: 4 jobs, one folder each

  dlkit train trainer=ddp_cpu precision=bf16      # 2 processes (DDP, gloo), bf16 autocast

  dlkit config list model                         # what can be chosen
"""

app = typer.Typer(
    name="dlkit",
    help="Train neural networks from YAML configs: Hydra composes them, PyTorch Lightning runs them.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
)
config_app = typer.Typer(help="Show, list and copy configs.", no_args_is_help=True)
app.add_typer(config_app, name="config")
runs_app = typer.Typer(help="List, compare and inspect the runs in run folders.", no_args_is_help=True)
app.add_typer(runs_app, name="runs")
data_app = typer.Typer(help="Prepare a dataset's token store ahead of training, and describe it.", no_args_is_help=True)
app.add_typer(data_app, name="data")


def complete_override(ctx: typer.Context, incomplete: str) -> list[str]:
    """Shell completion for overrides: group names, then the options of `group=`.

    zsh and fish hand over the whole word (`model=l`); bash splits words at `=`, so there the word is `l`
    after the words `model` and `=` (and the reply replaces only the text after `=`: bare option names).
    """
    from dlkit.config import config_groups

    try:
        groups = config_groups((ctx.params or {}).get("config_dir"))
    except Exception:  # noqa: BLE001 - a bad --config-dir: complete from the packaged configs
        groups = config_groups()
    before = [str(word) for word in (ctx.params or {}).get("overrides") or ()]
    if len(before) >= 2 and before[-1] == "=":
        return [o.name for o in groups.get(before[-2].lstrip("+~"), []) if o.name.startswith(incomplete)]
    if "=" in incomplete:
        group, _, prefix = incomplete.partition("=")
        return [f"{group}={o.name}" for o in groups.get(group.lstrip("+~"), []) if o.name.startswith(prefix)]
    sign = incomplete[0] if incomplete[:1] in ("+", "~") else ""
    end = "" if sign == "~" else "="  # `~callbacks` removes the group; `+group=` and `group=` pick an option
    return [f"{sign}{g}{end}" for g in groups if g.startswith(incomplete[len(sign):])]


def overrides_argument() -> typer.models.ArgumentInfo:
    return typer.Argument(None, help=OVERRIDES_HELP, show_default=False, autocompletion=complete_override)


ConfigDir = typer.Option(None, "--config-dir", "-c", help="Folder of your own configs (default: ./conf if present).")


@app.callback()
def root(verbose: bool = typer.Option(False, "--verbose", "-v", help="Show full tracebacks on errors.")) -> None:
    """dlkit: declarative deep learning on Hydra + PyTorch Lightning."""


FormatOption = typer.Option("table", "--format", "-f", help="table, csv, json or markdown.")


def table_format(fmt: str) -> str:
    from dlkit.ui import FORMATS

    if fmt not in FORMATS:
        raise UsageError(f"--format {fmt}: choose one of {', '.join(FORMATS)}.")
    return fmt


def number_text(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def emit(text: str | None) -> None:
    if text is not None:
        typer.echo(text)
