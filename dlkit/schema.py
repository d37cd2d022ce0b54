"""The valid values of config keys, declared once and checked on the composed config before any work.

Each `Rule` names a key (the rule applies wherever the composed config has it: `model.dropout` covers every model
with a dropout), what it holds (an integer or a number), its range, the special values it also takes (`-1`: no
limit) and an example. A bad value stops `dlkit train` and `dlkit sweep` before a run folder exists, with one line
naming the key, the value, the range and an example (exit 2). The configuration reference shows the same ranges.
Nothing here imports torch.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from dlkit.errors import UsageError


@dataclass(frozen=True)
class Rule:
    """What one key may hold: an integer or a number between bounds (open or closed), null if `null` says what null
    means, any of `also` (special values, each with its meaning), every item of a list when `items` is set."""

    key: str
    kind: type  # int or float
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    null: str | None = None
    also: tuple[tuple[Any, str], ...] = ()
    items: bool = False
    unit: str = ""
    example: str = ""

    def describe(self) -> str:
        """The valid values in words: 'an integer >= 1 (examples per batch), or -1 (no limit), or null (...)'."""
        noun = "an integer" if self.kind is int else "a number"
        if self.items:
            noun = "a list of " + ("integers" if self.kind is int else "numbers")
        text = noun + self._bounds()
        if self.unit:
            text += f" ({self.unit})"
        for value, meaning in self.also:
            text += f", or {value} ({meaning})"
        if self.null is not None:
            text += f", or null ({self.null})"
        return text

    def _bounds(self) -> str:
        each = " each" if self.items else ""
        if self.low is not None and self.high is not None:
            left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
            return f"{each} in {left}{_number(self.low)}, {_number(self.high)}{right}"
        if self.low is not None:
            return f"{each} {'>' if self.low_open else '>='} {_number(self.low)}"
        if self.high is not None:
            return f"{each} {'<' if self.high_open else '<='} {_number(self.high)}"
        return ""

    def problem(self, value: Any) -> str | None:
        """Why a value does not fit (None when it does)."""
        if value is None:
            return None if self.null is not None else "null is not allowed"
        if any(_same(value, special) for special, _ in self.also):
            return None
        if self.items:
            if not isinstance(value, (list, tuple, ListConfig)) or not value:
                return "not a list"
            return next((self.problem_of_one(v) for v in value if self.problem_of_one(v)), None)
        return self.problem_of_one(value)

    def problem_of_one(self, value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return "not " + ("an integer" if self.kind is int else "a number")
        if self.kind is int and not isinstance(value, int):
            return "not an integer"
        if not math.isfinite(value):
            return "not finite"
        too_low = self.low is not None and (value <= self.low if self.low_open else value < self.low)
        too_high = self.high is not None and (value >= self.high if self.high_open else value > self.high)
        return "out of range" if too_low or too_high else None


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e15 else f"{value:g}"


def _same(value: Any, special: Any) -> bool:
    return type(value) is type(special) and value == special


def _int(key: str, low: float | None = None, *, example: Any, **kw: Any) -> Rule:
    return Rule(key, int, low, example=str(example), **kw)


def _num(key: str, low: float | None = None, high: float | None = None, *, example: Any, **kw: Any) -> Rule:
    return Rule(key, float, low, high, example=str(example), **kw)


UNLIMITED = ((-1, "no limit"),)
FRACTION = {"low": 0.0, "high": 1.0, "high_open": True}

RULES: tuple[Rule, ...] = (
    _int("seed", 0, high=2**32 - 1, null="do not seed", example=42),
    # optimizer
    _num("optimizer.lr", 0.0, low_open=True, unit="learning rate", example="3e-4"),
    _num("optimizer.weight_decay", 0.0, example=0.01),
    _num("optimizer.momentum", **FRACTION, example=0.9),
    _num("optimizer.eps", 0.0, low_open=True, example="1e-8"),
    _num("optimizer.betas", **FRACTION, items=True, example="[0.9,0.999]"),
    # scheduler
    _int("scheduler.warmup_steps", 0, unit="optimizer steps", example=500),
    _num("scheduler.warmup_ratio", **FRACTION, unit="share of all steps", example=0.1),
    _num("scheduler.min_lr_ratio", 0.0, 1.0, unit="share of the peak rate", example=0.0),
    _num("scheduler.pct_start", 0.0, 1.0, low_open=True, high_open=True, example=0.3),
    _num("scheduler.max_lr_factor", 0.0, low_open=True, example=10.0),
    _num("scheduler.factor", 0.0, 1.0, low_open=True, high_open=True, example=0.5),
    _int("scheduler.patience", 0, unit="epochs", example=3),
    # data
    _int("data.batch_size", 1, unit="examples per batch", example=64),
    _int("data.num_workers", 0, unit="loader processes", null="as many as the cores allow, up to 4", example=2),
    _num("data.val_fraction", **FRACTION, unit="share of the training file", example=0.1),
    _num("data.test_fraction", **FRACTION, unit="share of the training file", example=0.1),
    _int("data.max_length", 1, unit="tokens", null="no limit", example=256),
    _int("data.num_examples", 1, example=6000),
    _int("data.min_length", 1, unit="words", example=3),
    _int("data.max_words", 1, unit="words", example=10),
    _int("data.synthetic_documents", 2, example=600),
    _num("data.mask_probability", 0.0, 1.0, low_open=True, high_open=True, example=0.15),
    _int("data.crop_padding", 0, unit="pixels", example=4),
    _int("data.channels", 1, example=3),
    _int("data.image_size", 1, items=True, unit="pixels", example="[64,64]"),
    _int("data.tokenizer.vocab_size", 8, unit="tokens, the 7 special ones included", example=30000),
    _int("data.tokenizer.min_frequency", 1, unit="occurrences", example=2),
    # model
    _num("model.dropout", **FRACTION, example=0.1),
    _num("model.hidden_dropout_prob", **FRACTION, example=0.1),
    _num("model.attention_probs_dropout_prob", **FRACTION, example=0.1),
    _num("model.classifier_dropout", **FRACTION, example=0.1),
    _int("model.hidden_sizes", 1, items=True, example="[256,128]"),
    _int("model.channels", 1, items=True, example="[6,16]"),
    _num("model.width", 0.0, low_open=True, unit="share of AlexNet's channels", example=0.25),
    _int("model.fc_size", 1, example=4096),
    _int("model.hidden_size", 1, example=256),
    _int("model.num_layers", 1, example=2),
    _int("model.embedding_dim", 1, example=128),
    _int("model.num_filters", 1, unit="feature maps per width", example=100),
    _int("model.filter_sizes", 1, items=True, unit="tokens", example="[3,4,5]"),
    _int("model.d_model", 1, example=512),
    _int("model.d_ff", 1, example=2048),
    _int("model.heads", 1, example=8),
    _int("model.layers", 1, example=6),
    _int("model.max_length", 1, unit="positions", example=256),
    _int("model.intermediate_size", 1, example=3072),
    _int("model.num_attention_heads", 1, example=12),
    _int("model.num_hidden_layers", 1, example=12),
    _int("model.max_position_embeddings", 1, example=512),
    _int("model.type_vocab_size", 1, example=2),
    # task
    _num("task.label_smoothing", **FRACTION, example=0.1),
    _int("task.beam_size", 1, example=4),
    _num("task.length_penalty", 0.0, example=0.6),
    _int("task.max_decode_length", 1, unit="tokens", null="the longest training target plus a margin", example=64),
    _int("task.samples", 0, unit="decoded examples logged per validation", example=3),
    # trainer
    _int("trainer.max_epochs", 1, also=UNLIMITED, null="Lightning's default: 1000 unless max_steps is set",
         example=30),
    _int("trainer.min_epochs", 0, null="no minimum", example=1),
    _int("trainer.max_steps", 1, also=UNLIMITED, unit="optimizer steps", example=1000),
    _int("trainer.accumulate_grad_batches", 1, unit="batches per optimizer step", example=4),
    _num("trainer.gradient_clip_val", 0.0, null="no clipping", example=1.0),
    _int("trainer.log_every_n_steps", 1, unit="optimizer steps", example=10),
    _int("trainer.check_val_every_n_epoch", 1, null="validate by val_check_interval alone", example=1),
    _int("trainer.num_nodes", 1, example=2),
    _num("trainer.ddp_timeout_s", 1.0, null="Lightning's default (30 minutes)", unit="seconds", example=600),
    _int("trainer.num_sanity_val_steps", 0, also=((-1, "the whole validation set"),), unit="batches", example=2),
    # callbacks
    _int("callbacks.early_stopping.patience", 0, unit="validations without improvement", example=10),
    _num("callbacks.early_stopping.min_delta", 0.0, example=0.0),
    _int("callbacks.model_checkpoint.save_top_k", 0, also=((-1, "keep every checkpoint"),), example=1),
    _int("callbacks.model_checkpoint.every_n_train_steps", 1, null="at epoch ends", unit="optimizer steps",
         example=500),
    _int("callbacks.last_checkpoint.every_n_train_steps", 1, null="at epoch ends", unit="optimizer steps",
         example=500),
    _num("callbacks.progress_bar.update_interval", 0.0, unit="seconds", example=0.1),
    _int("callbacks.progress_bar.refresh_rate", 0, unit="redraws per second, 0 hides the bar", example=1),
    # sweeps
    _int("hparams_search.n_trials", 1, example=20),
    _int("hparams_search.n_jobs", 1, unit="trials at a time", example=2),
    _num("hparams_search.timeout", 0.0, low_open=True, unit="seconds", null="no limit", example=3600),
)
# Lightning takes an integer (a number of batches) or a float (a share of the batches) for these
BATCH_LIMITS = ("trainer.limit_train_batches", "trainer.limit_val_batches", "trainer.limit_test_batches",
                "trainer.val_check_interval", "trainer.overfit_batches")
# key -> (its options, what null means; None: null is not allowed)
CHOICES: dict[str, tuple[tuple[str, ...], str | None]] = {
    "logger.mode": (("auto", "online", "offline", "disabled"), None),
    "matmul_precision": (("highest", "high", "medium"), "torch's default"),
    # the formats of data/tables.py
    "data.format": (("csv", "tsv", "jsonl", "parquet", "label_text"), "from the file's suffix"),
    "data.text_per": (("file", "line"), "file for data.root, line for data.files"),
    "data.tokenizer.clean": (("kim2014",), "no cleaning"),
}
WANDB_MODES = ("online", "offline", "disabled", "dryrun", "run", "shared")


def rule_for(key: str) -> Rule | None:
    """The rule of a key, if it has one."""
    return next((r for r in RULES if r.key == key), None)


_ABSENT = object()


def _present(cfg: DictConfig, key: str) -> tuple[bool, Any]:
    """(whether the composed config has the key, its value with interpolations resolved, lists as lists)."""
    value = OmegaConf.select(cfg, key, default=_ABSENT)
    if value is _ABSENT:
        return False, None
    return True, OmegaConf.to_container(value, resolve=True) if isinstance(value, (DictConfig, ListConfig)) else value


def problems(cfg: DictConfig) -> Iterator[str]:
    """One line for each key of the composed config whose value is not valid."""
    for rule in RULES:
        present, value = _present(cfg, rule.key)
        if present and rule.problem(value) is not None:
            yield (f"{rule.key}={_show(value)} is {rule.problem(value)}: it takes {rule.describe()}. "
                   f"Example: {rule.key}={rule.example}.")
    for key in BATCH_LIMITS:
        present, value = _present(cfg, key)
        if present and value is not None and not _batch_limit(value):
            yield (f"{key}={_show(value)} is out of range: it takes an integer >= 0 (batches) or a number in [0, 1] "
                   f"(a share of the batches), or null (all). Example: {key}=0.25.")
    for key, (options, null) in CHOICES.items():
        present, value = _present(cfg, key)
        if present and value not in options and (value is not None or null is None):
            also = f", or null ({null})" if null else ""
            yield f"{key}={_show(value)}: choose {', '.join(options)}{also}. Example: {key}={options[0]}."
    yield from _together(cfg)


def _batch_limit(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return value >= 0 if isinstance(value, int) else 0.0 <= value <= 1.0


def _together(cfg: DictConfig) -> Iterator[str]:
    """Values that are each valid but do not fit together, and the environment's say."""
    data = cfg.get("data") or {}
    val, test = data.get("val_fraction"), data.get("test_fraction")
    if isinstance(val, (int, float)) and isinstance(test, (int, float)) and val + test >= 1:
        yield (f"data.val_fraction={val} and data.test_fraction={test} leave nothing to train on: together they "
               "must stay below 1. Example: data.val_fraction=0.1 data.test_fraction=0.1.")
    trainer = cfg.get("trainer") or {}
    low, high = trainer.get("min_epochs"), trainer.get("max_epochs")
    if isinstance(low, int) and isinstance(high, int) and high != -1 and low > high:
        yield (f"trainer.min_epochs={low} is more than trainer.max_epochs={high}. "
               f"Example: trainer.min_epochs={high}.")
    mode = os.environ.get("WANDB_MODE")
    if mode and mode not in WANDB_MODES and (cfg.get("logger") or {}).get("wandb"):
        yield (f"WANDB_MODE={mode} (in the environment) is not a W&B mode: set online, offline or disabled, or "
               "unset it. Example: WANDB_MODE=offline.")


def _show(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_show(v) for v in value) + "]"
    return str(value)


def check(cfg: DictConfig) -> None:
    """Raise a UsageError (exit 2) naming the first invalid value of the composed config."""
    first = next(problems(cfg), None)
    if first is not None:
        raise UsageError(first)
