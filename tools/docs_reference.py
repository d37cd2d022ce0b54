"""Generate the configuration reference (docs/reference/config.md) from the YAML files in conf/.

Every group, option and key is listed with its default. Descriptions are the comments in the files: the
first comment line of a file describes the option, and the comment lines directly above a key (or after it
on the same line) describe the key; when a rule of dlkit/schema.py covers the key, its valid values follow.
Every key needs a comment (`_target_` and `_partial_` are described here): a key without one is an error.

    python tools/docs_reference.py            # write docs/reference/config.md
    python tools/docs_reference.py --check    # exit 1 when that file does not match conf/
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # dlkit of this checkout (its schema imports no torch)
from dlkit.schema import rule_for  # noqa: E402

CONF_DIR = ROOT / "conf"
OUTPUT = ROOT / "docs" / "reference" / "config.md"
COMMAND = "python tools/docs_reference.py"
_KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z0-9_][\w.\-/@]*):(?: +(?P<rest>.*))?$")


@dataclass(frozen=True)
class Key:
    """One key of an option: its full dotted path in the composed config, default and description."""

    path: str
    default: str
    description: str


@dataclass(frozen=True)
class Option:
    """One YAML file: a group option (or the primary config when group is empty)."""

    group: str
    name: str
    description: str
    package: str | None
    defaults: list[tuple[str, str]]
    keys: list[Key]
    uncommented: list[str]  # the keys of the file without a comment, by their path in it


def show(value: Any) -> str:
    """A value as it would be written on the command line (null, true, [1, 2], {a: 1})."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "[" + ", ".join(show(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {show(v)}" for k, v in value.items()) + "}"
    return str(value) if value != "" else '""'


def _inline_comment(rest: str) -> str:
    """The text of a ` # comment` after a value, ignoring # inside quotes."""
    quote = ""
    for index, char in enumerate(rest):
        if char in "'\"" and (not quote or quote == char):
            quote = "" if quote else char
        elif char == "#" and not quote and (index == 0 or rest[index - 1] == " "):
            return rest[index + 1:].strip()
    return ""


def _prefix(group: str, package: str | None) -> list[str]:
    """Where an option's keys land in the composed config (Hydra's `# @package` header decides)."""
    if package in (None, "_group_"):
        return group.split("/") if group else []
    return [] if package == "_global_" else package.split(".")


# the keys every config may have, described here rather than in each file
BUILT = {
    "_target_": "The class or function this config builds (null: nothing is built).",
    "_partial_": "Built as a partial: dlkit passes the remaining arguments when training starts.",
}


def _with_range(comment: str, key: str) -> str:
    """A key's comment, followed by its valid values when a rule of dlkit.schema covers the key."""
    rule = rule_for(key)
    return f"{comment.rstrip('.')}. Takes {rule.describe()}." if rule else comment


BLOCKS = "_blocks"  # shared parents (`- /_blocks/loader@_here_`): their keys are listed in each option that names one


def parse_option(file: Path, group: str, conf_dir: Path | None = None) -> Option:
    """Read one YAML file: description, package, defaults list, and every key with its comment; the keys of the
    shared blocks it names come first, as they do in the composed config, with the values it sets itself."""
    text = file.read_text(encoding="utf-8")
    data = yaml.safe_load(text) or {}
    shared = _block_keys(data.get("defaults") or [], group, conf_dir or file.parent.parent)
    description, package, pending = "", None, []
    stack: list[tuple[int, str]] = []
    keys: list[Key] = []
    uncommented: list[str] = []
    in_header = True
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped:
            pending = []
        elif stripped.startswith("#"):
            comment = stripped.lstrip("#").strip()
            if comment.startswith("@package"):
                package = comment.split()[1]
            elif in_header and not description:
                description = comment
            else:
                pending.append(comment)
        elif (match := _KEY.match(line)) is None:
            pending = []  # a list item or a continuation line: its comment belongs to no key
        else:
            in_header = False
            indent, key, rest = len(match["indent"]), match["key"], match["rest"] or ""
            while stack and stack[-1][0] >= indent:
                stack.pop()
            path = [k for _, k in stack] + [key]
            comment = " ".join([*pending, _inline_comment(rest)]).strip()
            pending = []
            parent = _lookup(data, path[:-1])
            value = parent.get(key) if isinstance(parent, dict) else None
            if isinstance(value, (dict, list)) and not rest.split("#")[0].strip():
                stack.append((indent, key))  # a block mapping or list: its children follow
                if not comment or path == ["defaults"]:
                    continue
            if path[0] == "defaults":
                continue
            full = ".".join(_prefix(group, package) + path)
            inherited = shared.pop(full, None)
            if comment:
                described = _with_range(comment, full)
            elif inherited is not None:  # a block's key: the block's comment (a missing one is the block's error)
                described = inherited.description
            else:
                described = BUILT.get(key, "")
                if not described:
                    uncommented.append(".".join(path))
            keys.append(Key(full, show(value), described))
    if shared:  # the option's _target_ first, then the blocks' keys it does not set itself, then its own
        target = ".".join([*_prefix(group, package), "_target_"])
        keys = ([k for k in keys if k.path == target] + list(shared.values())
                + [k for k in keys if k.path != target])
    return Option(group, file.stem, description, package, _defaults(data.get("defaults") or [], group), keys,
                  uncommented)


def _block_keys(entries: list[Any], group: str, conf_dir: Path) -> dict[str, Key]:
    """The keys of the shared blocks a defaults list names, by their path in the including option."""
    keys: dict[str, Key] = {}
    for entry in entries:
        if isinstance(entry, str) and entry.startswith(f"/{BLOCKS}/"):
            name = entry.removeprefix(f"/{BLOCKS}/").split("@")[0]
            keys |= {key.path: key for key in parse_option(conf_dir / BLOCKS / f"{name}.yaml", group).keys}
    return keys


def _lookup(data: Any, path: list[str]) -> Any:
    """The node at path in parsed YAML, or None when a step is missing."""
    for key in path:
        data = data.get(key) if isinstance(data, dict) else None
    return data


def _defaults(entries: list[Any], own_group: str = "") -> list[tuple[str, str]]:
    """(group, option) pairs of a defaults list; `override /data@_global_.data: x` gives ('data', 'x'), and a bare
    name in a group's option (`- cpu` in trainer/gpu.yaml: it extends that option) gives ('trainer', 'cpu')."""
    pairs = []
    for entry in entries:
        if isinstance(entry, str) and entry.startswith(f"/{BLOCKS}/"):
            continue
        if isinstance(entry, str) and entry.startswith("/") and entry.count("/") >= 2:  # `/recipe/bert_finetune`
            group, _, option = entry.lstrip("/").rpartition("/")
            pairs.append((group, option))
        elif isinstance(entry, str) and own_group and entry != "_self_" and "/" not in entry:
            pairs.append((own_group, entry))
        elif isinstance(entry, dict):
            for key, value in entry.items():
                group = str(key).removeprefix("override ").strip().lstrip("/").split("@")[0]
                pairs.append((group, show(value)))
    return pairs


def collect(conf_dir: Path) -> tuple[list[Option], dict[str, list[Option]]]:
    """The primary configs (top-level files) and every group's options, sorted by name."""
    primary = [parse_option(f, "", conf_dir) for f in sorted(conf_dir.glob("*.yaml"))]
    groups: dict[str, list[Option]] = {}
    for file in sorted(conf_dir.rglob("*.yaml")):
        group = file.parent.relative_to(conf_dir).as_posix()
        if group != "." and not group.startswith(BLOCKS):
            groups.setdefault(group, []).append(parse_option(file, group, conf_dir))
    return primary, dict(sorted(groups.items()))


def uncommented(conf_dir: Path) -> list[str]:
    """One line for each key of conf_dir (shared blocks included) that has no comment to describe it."""
    conf_dir = Path(conf_dir)
    lines = []
    for file in sorted(conf_dir.rglob("*.yaml")):
        group = file.parent.relative_to(conf_dir).as_posix()
        name = f"{conf_dir.name}/{file.relative_to(conf_dir).as_posix()}"
        lines += [f"{name}: key `{key}` has no comment: describe it in the line above"
                  for key in parse_option(file, "" if group == "." else group, conf_dir).uncommented]
    return lines


def _md(text: str) -> str:
    """Text for a Markdown table cell: code spans kept, |, <, > and * escaped outside them."""
    parts = text.split("`")
    for index in range(0, len(parts), 2):
        parts[index] = (parts[index].replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")
                        .replace("*", "\\*"))
    return "`".join(parts)


def _code(value: str) -> str:
    """A value as a Markdown code span that is safe inside a table."""
    return "`" + value.replace("|", "\\|") + "`"


def _anchor(group: str, name: str) -> str:
    """A stable heading id such as `model-mlp`."""
    return re.sub(r"[^a-z0-9]+", "-", f"{group}-{name}".lower()).strip("-")


def _key_table(keys: list[Key]) -> list[str]:
    """The Markdown table of an option's keys."""
    if not keys:
        return ["No keys of its own.", ""]
    lines = ["| key | default | description |", "|---|---|---|"]
    lines += [f"| {_code(k.path)} | {_code(k.default)} | {_md(k.description)} |" for k in keys]
    return [*lines, ""]


def _package_note(option: Option) -> str:
    """One sentence on where a `# @package` header puts the option's keys."""
    if option.package == "_global_":
        return "Its keys are set at the top of the config (`# @package _global_`), so it can change any group."
    if option.package and option.package != "_group_":
        return f"Its keys go under `{option.package}` (`# @package {option.package}`)."
    return ""


def render(conf_dir: Path = CONF_DIR) -> str:
    """The whole reference page as Markdown."""
    primary, groups = collect(Path(conf_dir))
    lines = [
        "# Configuration reference", "",
        f"Generated from the YAML files in `conf/` by `{COMMAND}`; do not edit it by hand. Each description is",
        "the comment above the key in its file, followed by the values it takes when `dlkit/schema.py` checks",
        "them. A test fails when this page and `conf/` disagree, or when a key has no comment.", "",
        "Choose an option with `GROUP=OPTION` and set a key with `KEY=VALUE`, using the dotted path shown",
        "(see [Concepts](../concepts.md)). `dlkit config show ...` prints the composed result.", "",
        "| group | options |", "|---|---|",
    ]
    for group, options in groups.items():
        links = ", ".join(f"[{o.name}](#{_anchor(group, o.name)})" for o in options)
        lines.append(f"| [`{group}`](#{_anchor('group', group)}) | {links} |")
    lines.append("")
    for option in primary:
        lines += [f"## Primary config `{option.name}.yaml` {{#{_anchor('primary', option.name)}}}", "",
                  _md(option.description), ""]
        if option.defaults:
            lines += ["Default option of each group (`null`: the group is off unless chosen):", "",
                      "| group | default |", "|---|---|"]
            lines += [f"| `{group}` | `{value}` |" for group, value in option.defaults] + [""]
        lines += _key_table(option.keys)
    in_train = {group for option in primary for group, _ in option.defaults}
    for group, options in groups.items():
        # a group the train config does not list is added with `+group=NAME` (or picked by other configs)
        choose = f"`{group}=NAME`" if group in in_train or not in_train else f"`+{group}=NAME`"
        lines += [f"## `{group}` {{#{_anchor('group', group)}}}", "",
                  f"Choose with {choose}: " + ", ".join(f"`{o.name}`" for o in options) + ".", ""]
        for option in options:
            lines += [f"### `{group}={option.name}` {{#{_anchor(group, option.name)}}}", "", _md(option.description)]
            note = _package_note(option)
            lines += [note] if note else []
            extends = [v for g, v in option.defaults if g == group]
            picks = [(g, v) for g, v in option.defaults if g != group]
            if extends:
                lines.append("Extends " + ", ".join(f"[`{group}={v}`](#{_anchor(group, v)})" for v in extends)
                             + ": its keys, with the ones below set here.")
            if picks:
                lines.append("Also picks: " + ", ".join(f"`{g}={v}`" for g, v in picks) + ".")
            lines += ["", *_key_table(option.keys)]
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write the reference, or with --check report whether the written one is up to date (exit 1 if not); either
    way, a key without a comment is an error (exit 1, one line naming each such key and its file)."""
    parser = argparse.ArgumentParser(prog=COMMAND, description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="Do not write; exit 1 when the file is out of date.")
    parser.add_argument("--conf-dir", type=Path, default=CONF_DIR, help="The config folder to document.")
    parser.add_argument("--output", type=Path, default=OUTPUT, help="The Markdown file to write or check.")
    args = parser.parse_args(argv)
    missing = uncommented(args.conf_dir)
    if missing:
        print("\n".join(missing), file=sys.stderr)
        return 1
    text = render(args.conf_dir)
    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.is_file() else ""
        if current != text:
            print(f"{args.output} is out of date with {args.conf_dir}: run `{COMMAND}` and commit the result.",
                  file=sys.stderr)
            return 1
        return 0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text, encoding="utf-8")
    print(f"Wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
