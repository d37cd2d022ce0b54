"""The documentation: the generated configuration reference matches conf/, and the site builds in strict mode."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import docs_reference  # noqa: E402 - a script of the checkout (tools/), not part of the package

from dlkit import schema  # noqa: E402

# a row of an option's key table: | `key` | `default` | description |
ROW = re.compile(r"^\| `(?P<key>[^`]+)` \| `(?P<default>.*)` \| (?P<description>.*) \|$")
# what the generator used to write for a key without a comment
FALLBACKS = ("Argument of `", "given to `", "(no comment in the file)", "The value this option sets.",
             "Search space of `")


def test_reference_is_up_to_date(capsys):
    code = docs_reference.main(["--check"])
    assert code == 0, capsys.readouterr().err


@pytest.mark.parametrize(("old", "new"), [
    ("lr: 0.001", "lr: 0.002"),  # a default
    ("# AdamW (decoupled weight decay).", "# AdamW with decoupled weight decay."),  # the option's description
    ("# learning rate (the peak with a warm-up schedule)", "# the learning rate"),  # a key's comment
])
def test_check_fails_when_a_config_changes_without_the_docs(tmp_path, capsys, old, new):
    conf = tmp_path / "conf"
    shutil.copytree(docs_reference.CONF_DIR, conf)
    target = conf / "optimizer" / "adamw.yaml"
    text = target.read_text(encoding="utf-8")
    assert old in text
    target.write_text(text.replace(old, new), encoding="utf-8")

    assert docs_reference.render(conf) != docs_reference.render(docs_reference.CONF_DIR)
    assert new.removeprefix("# ").removeprefix("lr: ") in docs_reference.render(conf)
    assert docs_reference.main(["--check", "--conf-dir", str(conf)]) == 1
    message = capsys.readouterr().err.strip()
    assert len(message.splitlines()) == 1 and "python tools/docs_reference.py" in message


def test_generator_reads_comments_packages_and_nested_keys(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "precision").mkdir()
    (tmp_path / "train.yaml").write_text("# The primary config.\ndefaults:\n  - model: small\n  - _self_\n"
                                         "# Seed for everything.\nseed: 1\n", encoding="utf-8")
    (tmp_path / "model" / "small.yaml").write_text(
        "# A small model.\n_target_: torch.nn.Linear\n# width of the layer\n# (in features)\nfeatures: 8\n"
        "head:\n  # dropout before the head\n  dropout: 0.5\n  bias: true  # add a bias\nname: \"\"\n",
        encoding="utf-8")
    (tmp_path / "precision" / "bf16.yaml").write_text(
        "# @package trainer\n# bfloat16.\n# Lightning's precision\nprecision: bf16-mixed\n", encoding="utf-8")
    (tmp_path / "model" / "wide.yaml").write_text("# Small, wider.\ndefaults:\n  - small\n  - _self_\nfeatures: 64\n",
                                                  encoding="utf-8")
    text = docs_reference.render(tmp_path)
    # the comment, then the valid values when a rule of dlkit.schema covers the key
    assert "| `seed` | `1` | Seed for everything. Takes an integer in [0, 4294967295], or null (do not seed). |" in text
    wide = text.split("### `model=wide`")[1]
    assert "Extends [`model=small`](#model-small)" in wide and "| `model.features` | `64` |" in wide
    assert "Also picks" not in wide
    assert "| `model` | `small` |" in text
    assert "A small model." in text
    assert "| `model.features` | `8` | width of the layer (in features) |" in text
    assert "| `model.head.dropout` | `0.5` | dropout before the head |" in text
    assert "| `model.head.bias` | `true` | add a bias |" in text
    assert "| `model._target_` | `torch.nn.Linear` | The class or function this config builds" in text
    assert '| `model.name` | `""` |  |' in text  # no comment: an error of the check, below
    assert "| `trainer.precision` | `bf16-mixed` | Lightning's precision |" in text
    assert docs_reference.uncommented(tmp_path) == [
        f"{tmp_path.name}/model/{file}: key `{key}` has no comment: describe it in the line above"
        for file, key in (("small.yaml", "name"), ("wide.yaml", "features"))]


def _rows(text: str) -> list[tuple[str, str]]:
    """(key, description) of every row of the key tables of a reference page."""
    return [(m["key"], m["description"]) for line in text.splitlines() if (m := ROW.match(line))]


def test_every_row_is_described_by_a_comment():
    rows = _rows(docs_reference.OUTPUT.read_text(encoding="utf-8"))
    assert len(rows) > 500
    built = {"_target_", "_partial_"}  # described by the generator, the same way everywhere
    undescribed = [key for key, description in rows if key.rsplit(".", 1)[-1] not in built
                   and (not description.strip() or any(text in description for text in FALLBACKS)
                        or description in docs_reference.BUILT.values())]
    assert undescribed == []
    assert docs_reference.uncommented(docs_reference.CONF_DIR) == []


def test_reference_gives_the_range_of_every_key_the_schema_checks():
    rows = _rows(docs_reference.OUTPUT.read_text(encoding="utf-8"))
    for rule in schema.RULES:
        described = [description for key, description in rows if key == rule.key]
        assert described, f"{rule.key} is in no table of the reference"
        takes = docs_reference._md(f"Takes {rule.describe()}.")
        assert all(description.endswith(takes) for description in described), rule.key


@pytest.mark.parametrize(("file", "key", "comment"), [
    ("data/mnist.yaml", "root", "# folder holding the dataset in torchvision's layout"),
    ("trainer/cpu.yaml", "max_epochs", "# epochs to train at most"),  # a key with a schema rule
    ("callbacks/default.yaml", "early_stopping.patience", "  # validations in a row without improvement"),
    ("_blocks/loader.yaml", "batch_size", "# examples per batch"),  # a shared block: named once, as the file
])
def test_check_fails_when_a_key_has_no_comment(tmp_path, capsys, file, key, comment):
    conf = tmp_path / "conf"
    shutil.copytree(docs_reference.CONF_DIR, conf)
    target = conf / file
    lines = target.read_text(encoding="utf-8").splitlines(keepends=True)
    kept = [line for line in lines if not line.startswith(comment)]
    assert len(kept) == len(lines) - 1
    target.write_text("".join(kept), encoding="utf-8")

    assert docs_reference.main(["--check", "--conf-dir", str(conf)]) == 1
    message = capsys.readouterr().err.strip()
    assert message == f"conf/{file}: key `{key}` has no comment: describe it in the line above"


@pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("material") is None,
                    reason="mkdocs-material is not installed (pip install -e '.[test]')")
def test_site_builds_in_strict_mode(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"), "-d", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "reference" / "config" / "index.html").is_file()
