"""Search spaces written in Hydra's sweep syntax, as users of the Hydra Optuna plugin know them.

    optimizer.lr: tag(log, interval(1e-4, 1e-1))   # float, log scale
    model.dropout: interval(0.0, 0.5)             # float
    model.num_filters: int(interval(32, 256))      # integer
    trainer.max_epochs: range(5, 30, 5)            # integers on a grid
    model: choice(lstm, gru)                       # any values, lists included
"""

from __future__ import annotations

import json
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep

from dlkit.errors import UsageError


def parse_space(params: dict[str, str]) -> dict[str, Any]:
    """Each key's sweep object (IntervalSweep, RangeSweep or ChoiceSweep)."""
    parser = OverridesParser.create()
    space = {}
    for key, text in params.items():
        try:
            value = parser.parse_override(f"{key}={text}").value()
        except Exception as err:  # noqa: BLE001 - Hydra's grammar errors are long; one line is enough
            raise UsageError(f"hparams_search.params.{key}={text!r}: not a search space; use interval(a, b), tag(log, "
                             "interval(a, b)), int(interval(a, b)), range(a, b, step) or choice(x, y).") from err
        if not isinstance(value, (IntervalSweep, RangeSweep, ChoiceSweep)):
            value = ChoiceSweep(list=[value])
        space[key] = value
    return space


def check_space(space: dict[str, Any]) -> None:
    """Refuse a space that can give a key a value its schema rule does not allow (an interval's ends, every value of
    a range or a choice), before any trial runs."""
    from dlkit.schema import rule_for

    for key, sweep in space.items():
        rule = rule_for(key)
        if rule is None:
            continue
        values = [sweep.start, sweep.end] if isinstance(sweep, IntervalSweep) else (
            _range(sweep) if isinstance(sweep, RangeSweep) else list(sweep.list))
        for value in values:
            problem = rule.problem(value)
            if problem:
                raise UsageError(f"hparams_search.params.{key} can give {key}={value}, which is {problem}: {key} "
                                 f"takes {rule.describe()}. Example: {key}={rule.example}.")


def suggest(trial: Any, space: dict[str, Any]) -> dict[str, Any]:
    """Ask an Optuna trial for a value of every parameter."""
    values = {}
    for key, sweep in space.items():
        if isinstance(sweep, IntervalSweep):
            if isinstance(sweep.start, int) and isinstance(sweep.end, int):
                values[key] = trial.suggest_int(key, sweep.start, sweep.end, log="log" in sweep.tags)
            else:
                values[key] = trial.suggest_float(key, float(sweep.start), float(sweep.end), log="log" in sweep.tags)
        elif isinstance(sweep, RangeSweep):
            values[key] = trial.suggest_categorical(key, list(_range(sweep)))
        else:
            # categorical values must be plain scalars for Optuna: lists and dicts travel as JSON text
            choices = [_encode(v) for v in sweep.list]
            values[key] = _decode(trial.suggest_categorical(key, choices))
    return values


def _range(sweep: RangeSweep) -> list:
    values, value = [], sweep.start
    while value < sweep.stop:
        values.append(value)
        value += sweep.step
    return values


def _encode(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, (list, dict)) else value


def _decode(value: Any) -> Any:
    if isinstance(value, str) and value[:1] in "[{":
        return json.loads(value)
    return value


def as_override(key: str, value: Any) -> str:
    """`key=value` in Hydra's syntax (lists as [a,b])."""
    if isinstance(value, (list, dict)):
        return f"{key}={json.dumps(value).replace(' ', '')}"
    if isinstance(value, float):
        return f"{key}={value!r}"
    return f"{key}={value}"


def grid(space: dict[str, Any]) -> dict[str, list]:
    """The grid of every parameter (for the grid sampler); intervals cannot be gridded."""
    result = {}
    for key, sweep in space.items():
        if isinstance(sweep, IntervalSweep):
            raise UsageError(f"sampler grid needs choice() or range() for {key}, not an interval.")
        result[key] = _range(sweep) if isinstance(sweep, RangeSweep) else [_encode(v) for v in sweep.list]
    return result


def to_wandb(space: dict[str, Any]) -> dict[str, Any]:
    """The same space as W&B sweep `parameters`."""
    parameters = {}
    for key, sweep in space.items():
        if isinstance(sweep, IntervalSweep):
            ints = isinstance(sweep.start, int) and isinstance(sweep.end, int)
            if "log" in sweep.tags:
                distribution = "q_log_uniform_values" if ints else "log_uniform_values"
            else:
                distribution = "int_uniform" if ints else "uniform"
            entry: dict[str, Any] = {"distribution": distribution, "min": sweep.start, "max": sweep.end}
            if distribution == "q_log_uniform_values":
                entry["q"] = 1
            parameters[key] = entry
        elif isinstance(sweep, RangeSweep):
            parameters[key] = {"values": _range(sweep)}
        else:
            parameters[key] = {"values": [_encode(v) for v in sweep.list]}
    return parameters
