"""Every key the schema declares is checked on the composed config before any work: a bad value stops with one line
naming the key, the value, the range and an example (exit 2, no run folder); the example itself is accepted."""

from __future__ import annotations

import functools

import pytest
from conftest import run_main
from omegaconf import DictConfig, OmegaConf

from dlkit import schema
from dlkit.config import compose, config_groups
from dlkit.errors import UsageError


@functools.cache
def _configs() -> tuple[DictConfig, ...]:
    """The default config and one config per option of every group (so each declared key appears in one)."""
    found = [compose([])]
    for group, options in config_groups().items():
        if group in ("debug", "experiment", "paths", "launcher", "precision", "recipe"):
            continue
        found += [compose([f"{group}={option.name}"]) for option in options]
    return tuple(found)


def _context(key: str) -> DictConfig:
    for cfg in _configs():
        if OmegaConf.select(cfg, key, default="<absent>") != "<absent>":
            return cfg.copy()
    raise AssertionError(f"no packaged config has {key}: the schema declares a key nobody uses")


def _bad_values(rule: schema.Rule) -> list:
    """Values just outside the rule's range, of the wrong kind, and null where null is not allowed."""
    step = 1 if rule.kind is int else 0.5
    values: list = []
    if rule.low is not None:
        values.append(rule.low if rule.low_open else rule.low - step)
    if rule.high is not None:
        values.append(rule.high if rule.high_open else rule.high + step)
    values = [int(v) if rule.kind is int else float(v) for v in values]
    values = [v for v in values if not any(schema._same(v, special) for special, _ in rule.also)]
    values.append("text")
    if rule.kind is int:
        values.append(2.5)
    if rule.null is None:
        values.append(None)
    return [[v] if rule.items else v for v in values]


def _set(cfg: DictConfig, key: str, value) -> DictConfig:
    OmegaConf.update(cfg, key, value, force_add=True)
    return cfg


@pytest.mark.parametrize("rule", schema.RULES, ids=[r.key for r in schema.RULES])
def test_every_declared_key_refuses_what_is_outside_its_range_and_takes_its_example(rule):
    for bad in _bad_values(rule):
        cfg = _set(_context(rule.key), rule.key, bad)
        with pytest.raises(UsageError) as refused:
            schema.check(cfg)
        message = str(refused.value)
        assert message.startswith(f"{rule.key}={schema._show(bad)} is "), message
        assert rule.describe() in message and f"Example: {rule.key}={rule.example}." in message
        assert "\n" not in message
    example = OmegaConf.create({"v": OmegaConf.create(f"v: {rule.example}").v}).v
    example = OmegaConf.to_container(example) if not isinstance(example, (int, float, str)) else example
    assert rule.problem(example) is None, rule.example
    for special, _ in rule.also:
        assert rule.problem(special) is None
    if rule.null is not None:
        assert rule.problem(None) is None


@pytest.mark.parametrize("key", schema.BATCH_LIMITS)
def test_batch_limits_take_a_count_or_a_share(key):
    cfg = _context(key)
    for good in (None, 0, 5, 0.0, 0.25, 1.0):
        assert not list(schema.problems(_set(cfg, key, good)))
    for bad in (-1, 1.5, "all", True):
        [line] = schema.problems(_set(cfg, key, bad))
        assert line.startswith(f"{key}={schema._show(bad)} is out of range") and f"Example: {key}=0.25." in line


@pytest.mark.parametrize("key", sorted(schema.CHOICES))
def test_choices_name_their_options(key):
    options, null = schema.CHOICES[key]
    cfg = _context(key)
    for good in options:
        assert not list(schema.problems(_set(cfg, key, good)))
    assert bool(list(schema.problems(_set(cfg, key, None)))) == (null is None)
    [line] = schema.problems(_set(cfg, key, "bogus"))
    assert line.startswith(f"{key}=bogus: choose {', '.join(options)}")


def test_values_that_do_not_fit_together_and_the_environment(monkeypatch):
    cfg = compose(["data.val_fraction=0.5", "data.test_fraction=0.5"])
    assert any("leave nothing to train on" in line for line in schema.problems(cfg))
    assert any("is more than trainer.max_epochs=2" in line
               for line in schema.problems(compose(["trainer.min_epochs=3", "trainer.max_epochs=2"])))
    monkeypatch.setenv("WANDB_MODE", "bogus")
    assert any(line.startswith("WANDB_MODE=bogus (in the environment)") for line in schema.problems(compose([])))
    assert not list(schema.problems(compose(["logger=csv"])))  # no W&B logger: W&B's mode does not matter
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert not list(schema.problems(compose([])))


@pytest.mark.parametrize(("args", "expected"), [
    (["optimizer.lr=-1"], "optimizer.lr=-1 is out of range: it takes a number > 0"),
    (["data.batch_size=0"], "data.batch_size=0 is out of range: it takes an integer >= 1 (examples per batch)"),
    (["seed=-1"], "seed=-1 is out of range: it takes an integer in [0, 4294967295], or null (do not seed)"),
    (["trainer.accumulate_grad_batches=0"], "trainer.accumulate_grad_batches=0 is out of range"),
    (["data.num_workers=-1"], "data.num_workers=-1 is out of range: it takes an integer >= 0"),
    (["trainer.max_epochs=-5"], "trainer.max_epochs=-5 is out of range: it takes an integer >= 1, or -1 (no limit)"),
    (["trainer.max_epochs=0"], "trainer.max_epochs=0 is out of range"),
    (["data.val_fraction=1.5"], "data.val_fraction=1.5 is out of range: it takes a number in [0, 1)"),
    (["model=lstm", "data.max_length=0"], "data.max_length=0 is out of range: it takes an integer >= 1 (tokens)"),
    (["trainer=ddp_cpu", "trainer.devices=64"], "trainer.devices=64 starts 64 processes on this machine's"),
])
def test_out_of_range_values_stop_the_cli_before_any_run_folder(tmp_path, args, expected):
    result = run_main("train", *args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"error: {expected}") and result.stderr.count("\n") == 1, result.stderr
    assert "Example: " in result.stderr or "use at most" in result.stderr
    assert not (tmp_path / "outputs").exists()
