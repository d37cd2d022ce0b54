"""The documentation: the generated configuration reference matches conf/, and the site builds in strict mode."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import docs_reference  # noqa: E402 - a script of the checkout (tools/), not part of the package


def test_reference_is_up_to_date(capsys):
    code = docs_reference.main(["--check"])
    assert code == 0, capsys.readouterr().err


@pytest.mark.parametrize(("old", "new"), [
    ("lr: 0.001", "lr: 0.002"),  # a default
    ("# AdamW (decoupled weight decay).", "# AdamW with decoupled weight decay."),  # the option's description
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
        "# A small model.\n_target_: torch.nn.Linear\n# width of the layer\n# (in features)\nwidth: 8\n"
        "head:\n  # dropout before the head\n  dropout: 0.5\n  bias: true  # add a bias\nname: \"\"\n",
        encoding="utf-8")
    (tmp_path / "precision" / "bf16.yaml").write_text("# @package trainer\n# bfloat16.\nprecision: bf16-mixed\n",
                                                      encoding="utf-8")
    (tmp_path / "model" / "wide.yaml").write_text("# Small, wider.\ndefaults:\n  - small\n  - _self_\nwidth: 64\n",
                                                  encoding="utf-8")
    text = docs_reference.render(tmp_path)
    assert "| `seed` | `1` | Seed for everything. |" in text
    wide = text.split("### `model=wide`")[1]
    assert "Extends [`model=small`](#model-small)" in wide and "| `model.width` | `64` |" in wide
    assert "Also picks" not in wide
    assert "| `model` | `small` |" in text
    assert "A small model." in text
    assert "| `model.width` | `8` | width of the layer (in features) |" in text
    assert "| `model.head.dropout` | `0.5` | dropout before the head |" in text
    assert "| `model.head.bias` | `true` | add a bias |" in text
    assert '| `model.name` | `""` | Argument of `torch.nn.Linear`. |' in text
    assert "| `trainer.precision` | `bf16-mixed` |" in text


@pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("material") is None,
                    reason="mkdocs-material is not installed (pip install -e '.[test]')")
def test_site_builds_in_strict_mode(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"), "-d", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "reference" / "config" / "index.html").is_file()
