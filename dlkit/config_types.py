"""The type of each value given on the command line, checked against the default it replaces (or, where the default
is null, the annotation of the parameter that takes it), so that `optimizer.lr=abc` stops with one line."""

from __future__ import annotations

import json
import typing

from omegaconf import DictConfig, ListConfig, OmegaConf

from dlkit.errors import UsageError

_NUMBER = (int, float)


def check_types(loader, config_name: str, parsed, cfg: DictConfig, groups: dict, run_mode) -> None:
    """A value given on the command line must have the type of the default it replaces (`groups`: the config groups,
    whose overrides pick options rather than set values)."""
    from hydra.core.override_parser.types import OverrideType

    plain = [o for o in parsed if o.type == OverrideType.CHANGE and o.key_or_group not in groups
             and not o.key_or_group.startswith("hydra")]
    if not plain:
        return
    base_overrides = [o.input_line for o in parsed if o not in plain]
    base = loader.load_configuration(config_name=config_name, overrides=base_overrides, run_mode=run_mode,
                                     from_shell=False)
    for override in plain:
        key = override.key_or_group
        default = OmegaConf.select(base, key, throw_on_missing=False)
        value = OmegaConf.select(cfg, key, throw_on_missing=False)
        if value is None or (default is not None and _same_kind(default, value)):
            continue
        if default is None and isinstance(value, int) and not isinstance(value, bool):
            continue  # an integer is rarely wrong where null stands: spare importing the code that takes it
        annotation = _annotation(base, key)
        fits = _fits(annotation, value)
        if default is not None and fits is not True:
            raise UsageError(f"{key}={_given(override)} should be {_kind_name(default)} "
                             f"(default: {_show(default)}). Example: {key}={_show(default)}.")
        if default is None and fits is False:
            kind, detail, example = _expected(annotation)
            raise UsageError(f"{key}={_given(override)} should be {kind} ({detail}default: null). "
                             f"Example: {key}={example}.")


def _given(override) -> str:
    """The value as typed: strings quoted (so 'abc' reads as a string), anything else as YAML would write it."""
    value = override.value()
    return repr(value) if isinstance(value, str) else _show(OmegaConf.create({"v": value}).v)


# Config nodes without a `_target_` whose keys are the parameters of this callable.
_TAKEN_BY = {"trainer": "pytorch_lightning.Trainer"}


def _annotation(cfg: DictConfig, key: str):
    """The type annotation of the parameter a key is passed to (its node's `_target_`), or None if unknown.

    Imports the target's module (torch, Lightning): only called when the default does not tell the type.
    """

    from hydra.utils import get_object

    parent, _, name = key.rpartition(".")
    node = OmegaConf.select(cfg, parent, throw_on_missing=False) if parent else None
    if not isinstance(node, DictConfig):
        return None
    target = node.get("_target_") or _TAKEN_BY.get(parent)
    if not isinstance(target, str):
        return None
    try:
        taker = get_object(target)
        return typing.get_type_hints(taker.__init__ if isinstance(taker, type) else taker).get(name)
    except Exception:  # noqa: BLE001 - an annotation that cannot be read checks nothing
        return None


def _fits(annotation, value) -> bool | None:
    """Whether a command-line value fits an annotation: True, False, or None when the annotation is not plain."""
    import types

    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        verdicts = [_fits(member, value) for member in typing.get_args(annotation)]
        return True if True in verdicts else None if None in verdicts else False
    if origin is typing.Literal:
        return any(type(value) is type(choice) and value == choice for choice in typing.get_args(annotation))
    checks = {type(None): lambda v: v is None, bool: lambda v: isinstance(v, bool),
              int: lambda v: isinstance(v, int) and not isinstance(v, bool),
              float: lambda v: isinstance(v, _NUMBER) and not isinstance(v, bool), str: lambda v: isinstance(v, str),
              list: lambda v: isinstance(v, ListConfig), tuple: lambda v: isinstance(v, ListConfig),
              dict: lambda v: isinstance(v, DictConfig)}
    check = checks.get(origin or annotation) if isinstance(origin or annotation, type) else None
    return check(value) if check else None


def _expected(annotation) -> tuple[str, str, str]:
    """What an annotation admits, in words: (kind, detail for the parentheses, an example value)."""

    members = set(typing.get_args(annotation)) if typing.get_origin(annotation) is not typing.Literal else set()
    members = members or {annotation}
    numbers = {int, float} & members
    described = []  # (kind, example)
    if numbers:
        described.append(("an integer", "10") if numbers == {int} else ("a number", "0.5"))
    if bool in members:
        described.append(("true or false", "true"))
    literals = [choice for m in members if typing.get_origin(m) is typing.Literal for choice in typing.get_args(m)]
    if literals:
        described.append(("one of " + ", ".join(_show(c) for c in literals), _show(literals[0])))
    for kind, name, example in ((str, "a string", "text"), (list, "a list", "[1,2]"), (dict, "a mapping", "{a:1}")):
        if kind in members or any(typing.get_origin(m) is kind for m in members):
            described.append((name, example))
    detail = "int or float; " if numbers == {int, float} else ""
    return " or ".join(k for k, _ in described) or "another kind of value", detail, (described or [("", "...")])[0][1]


def _same_kind(default, value) -> bool:
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(default, bool) and isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, _NUMBER)
    if isinstance(default, int):
        return isinstance(value, int)
    if isinstance(default, (DictConfig, dict)):
        return isinstance(value, (DictConfig, dict))
    if isinstance(default, (ListConfig, list)):
        return isinstance(value, (ListConfig, list))
    return True


def _kind_name(default) -> str:
    if isinstance(default, bool):
        return "true or false"
    if isinstance(default, float):
        return "a number"
    if isinstance(default, int):
        return "an integer"
    if isinstance(default, (DictConfig, dict)):
        return "a mapping"
    if isinstance(default, (ListConfig, list)):
        return "a list"
    return type(default).__name__


def _show(value) -> str:
    if isinstance(value, (DictConfig, ListConfig)):
        return json.dumps(OmegaConf.to_container(value, resolve=False)).replace(" ", "").replace('"', "")
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)
