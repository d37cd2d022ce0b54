"""`dlkit config show | list | copy`."""

from __future__ import annotations

import sys
from typing import Optional

import typer

from dlkit.cli.app import ConfigDir, config_app, overrides_argument
from dlkit.errors import UsageError


@config_app.command("show")
def config_show(
    overrides: Optional[list[str]] = overrides_argument(),  # noqa: UP045
    config_dir: Optional[str] = ConfigDir,  # noqa: UP045
    resolve: bool = typer.Option(False, "--resolve", help="Resolve ${...} interpolations."),
) -> None:
    """Print the composed config as highlighted YAML (nothing is trained), headed by the recipe the model brings."""
    from dlkit.config import compose_with_choices, recipe_of, to_yaml

    cfg, choices = compose_with_choices(list(overrides or []), config_dir)
    text = to_yaml(cfg, resolve=resolve)
    recipe = recipe_of(choices.get("model", ""), config_dir)
    if recipe is not None:  # what the model option chose besides itself (the command line still wins)
        text = f"# model={choices['model']} brings recipe={recipe.name}: {recipe.description}\n" + text
    if not sys.stdout.isatty():  # piped: plain YAML, and no need to load the highlighter
        sys.stdout.write(text)
        return
    from rich.console import Console
    from rich.syntax import Syntax

    Console().print(Syntax(text, "yaml", theme="ansi_dark", background_color="default"))


@config_app.command("list")
def config_list(
    group: Optional[str] = typer.Argument(None, help="Only this group (e.g. model)."),  # noqa: UP045
    config_dir: Optional[str] = ConfigDir,  # noqa: UP045
) -> None:
    """List config groups and their options, each with a one-line description."""
    from rich.console import Console
    from rich.table import Table

    from dlkit.config import config_groups
    from dlkit.errors import did_you_mean

    groups = config_groups(config_dir)
    if group is not None and group not in groups:
        raise UsageError(f"Unknown group '{group}'.{did_you_mean(group, groups)} Groups: {', '.join(groups)}.")
    table = Table(header_style="bold", show_lines=False)
    table.add_column("group", style="cyan")
    table.add_column("option", style="green")
    table.add_column("description")
    for name, options in groups.items():
        if group is None or name == group:
            for option in options:
                table.add_row(name, option.name, option.description)
    Console(width=max(100, Console().width)).print(table)


@config_app.command("copy")
def config_copy(
    option: str = typer.Argument(..., help="GROUP/OPTION to copy, e.g. model/mlp."),
    config_dir: Optional[str] = typer.Option(None, "--config-dir", "-c", help="Where to copy (default ./conf)."),  # noqa: UP045
) -> None:
    """Copy a built-in config into ./conf/GROUP/ to edit; it then overrides the packaged one."""
    from dlkit.config import copy_option

    target = copy_option(option, config_dir)
    if config_dir is None:
        typer.echo(f"Copied {option} to {target}. Edit it; dlkit uses it from now on in this folder.")
    else:  # only ./conf is picked up by itself
        typer.echo(f"Copied {option} to {target}. Edit it; dlkit uses it when you give --config-dir {config_dir}.")
