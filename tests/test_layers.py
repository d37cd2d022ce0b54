"""The layers' import rules (pyproject.toml, checked by import-linter): they hold, they break when a model imports
Lightning, and the lists they forbid name every module there is."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from importlinter.api import read_configuration

ROOT = Path(__file__).resolve().parent.parent
LINT = str(Path(sys.executable).with_name("lint-imports"))


def _contracts() -> dict[str, dict]:
    config = read_configuration(str(ROOT / "pyproject.toml"))
    return {c["id"]: c for c in config["contracts_options"]}


def _modules(package: Path) -> set[str]:
    """The modules and packages directly inside a package folder."""
    return {p.stem for p in package.glob("*.py") if p.stem not in ("__init__", "__main__")} | \
        {p.name for p in package.iterdir() if (p / "__init__.py").is_file()}


def _lint(root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([LINT, "--no-cache"], cwd=root, env=env, capture_output=True, text=True, timeout=120)


def test_models_may_import_nothing_of_dlkit_but_the_data_spec():
    forbidden = set(_contracts()["models"]["forbidden_modules"])
    everything = {f"dlkit.{m}" for m in _modules(ROOT / "dlkit") - {"models", "data"}} | \
        {f"dlkit.data.{m}" for m in _modules(ROOT / "dlkit" / "data") - {"spec"}}
    assert everything - forbidden == set(), "add the new modules to the models contract in pyproject.toml"
    assert {"pytorch_lightning", "lightning", "hydra", "omegaconf"} <= forbidden


@pytest.mark.parametrize(("module", "breach", "contract"), [
    ("models/mlp.py", "import pytorch_lightning as pl", "Models are plain torch modules"),
    ("models/mlp.py", "from dlkit.build import build_model", "Models are plain torch modules"),
    ("runs/query.py", "from dlkit import jobs", "Each layer imports only the layers below it"),
    ("data/text.py", "from dlkit.models import mlp", "Data imports no models"),
    ("models/mlp.py", None, None),
])
def test_the_contracts_hold_and_fail_when_a_module_imports_above_its_layer(tmp_path, module, breach, contract):
    shutil.copytree(ROOT / "dlkit", tmp_path / "dlkit", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    if breach:
        path = tmp_path / "dlkit" / module
        path.write_text(path.read_text(encoding="utf-8") + f"\n\ndef _breach():\n    {breach}\n", encoding="utf-8")
    result = _lint(tmp_path)
    if breach is None:
        assert result.returncode == 0, result.stdout[-3000:]
        assert "0 broken" in result.stdout
    else:  # even an import inside a function counts
        assert result.returncode == 1, result.stdout[-3000:]
        assert contract in result.stdout and "BROKEN" in result.stdout
        assert "dlkit." + module.removesuffix(".py").replace("/", ".") in result.stdout


MY_MODEL = '''"""A user's model: a plain nn.Module outside dlkit."""

import torch
from torch import nn


class TinyConvNet(nn.Module):
    """One convolution, global average pooling, a linear head."""

    accepts = ("image_classification",)  # the data kinds it trains on

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, width: int = 8) -> None:
        super().__init__()
        self.conv = nn.Conv2d(input_shape[0], width, kernel_size=3, padding=1)
        self.head = nn.Linear(width, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(images)).mean(dim=(2, 3)))
'''


def test_a_model_added_in_conf_with_a_user_module_trains_without_touching_dlkit(tmp_path):
    """docs/architecture.md's worked example, as written there: a module on PYTHONPATH, a config in ./conf/model."""
    from conftest import QUICK, run_cli, run_folders, summary

    (tmp_path / "my_models.py").write_text(MY_MODEL, encoding="utf-8")
    (tmp_path / "conf" / "model").mkdir(parents=True)
    (tmp_path / "conf" / "model" / "tiny_conv.yaml").write_text(
        "# A one-layer convolutional net (my_models.py).\n_target_: my_models.TinyConvNet\nwidth: 8\n",
        encoding="utf-8")
    listed = run_cli("config", "list", "model", cwd=tmp_path, env={"PYTHONPATH": str(tmp_path)})
    assert listed.returncode == 0 and "tiny_conv" in listed.stdout and "one-layer convolutional" in listed.stdout
    result = run_cli("train", "model=tiny_conv", "model.width=4", *QUICK, "logger=csv", cwd=tmp_path,
                     env={"PYTHONPATH": str(tmp_path)})
    assert result.returncode == 0, result.stderr[-3000:]
    [run] = run_folders(tmp_path)
    record = summary(run)
    assert record["status"] == "finished" and 0.0 <= record["metrics"]["test/acc"] <= 1.0
    refused = run_cli("train", "model=tiny_conv", "data=synthetic_sentiment", *QUICK, cwd=tmp_path,
                      env={"PYTHONPATH": str(tmp_path)})
    assert refused.returncode == 2 and "cannot train on data=synthetic_sentiment" in refused.stderr


def test_configs_saved_by_an_earlier_dlkit_name_moved_code_where_it_lives_now():
    """A run trained before code moved (its config.yaml names the old module) still evaluates, predicts, resumes."""
    from hydra.utils import get_object
    from omegaconf import OmegaConf

    from dlkit.runs.relocate import MOVED_TARGETS, retarget

    for old, new in MOVED_TARGETS.items():
        assert callable(get_object(new)), new
        with pytest.raises(ImportError):
            get_object(old)
    saved = OmegaConf.create({"optimizer": {"_target_": "dlkit.models.bert.bert_adamw", "lr": 3e-5},
                              "logger": {"csv": {"_target_": "dlkit.tracking.csv_logger.RunCSVLogger"}},
                              "callbacks": {"list": [{"_target_": "dlkit.tracking.grad_norm.GradNormMonitor"}]},
                              "model": {"_target_": "dlkit.models.mlp.MLP"}})
    moved = retarget(saved)
    assert moved.optimizer._target_ == "dlkit.tasks.optimizers.bert_adamw" and moved.optimizer.lr == 3e-5
    assert moved.logger.csv._target_ == "dlkit.loggers.csv_logger.RunCSVLogger"
    assert moved.callbacks.list[0]._target_ == "dlkit.callbacks.GradNormMonitor"
    assert moved.model._target_ == "dlkit.models.mlp.MLP"


def test_a_model_pairs_with_data_and_training_settings_through_one_recipe_that_config_show_names(tmp_path):
    """One mechanism for pairings: a model option's defaults name at most one recipe (or the model it extends);
    whatever else it trains with is in that recipe, and `dlkit config show` says so."""
    from conftest import run_main
    from omegaconf import OmegaConf

    from dlkit.config import config_groups, recipe_of

    groups = config_groups()
    models = {o.name for o in groups["model"]}
    for option in groups["model"]:
        defaults = OmegaConf.load(option.path).get("defaults") or []
        assert all(isinstance(d, str) for d in defaults), (option.name, defaults)  # no `override /group: x` here
        recipes = [d for d in defaults if d.startswith("/recipe/")]
        parents = [d for d in defaults if d != "_self_" and not d.startswith("/recipe/")]
        assert len(recipes) <= 1 and set(parents) <= models and not (recipes and parents), (option.name, defaults)
    assert recipe_of("bert_tiny").name == "bert_finetune" and recipe_of("mlp") is None
    shown = run_main("config", "show", "model=bert_tiny", cwd=tmp_path)
    assert shown.returncode == 0 and shown.stdout.startswith("# model=bert_tiny brings recipe=bert_finetune: ")
    composed = OmegaConf.create(shown.stdout)
    assert composed.optimizer._target_ == "dlkit.tasks.optimizers.bert_adamw" and composed.trainer.max_epochs == 3
    assert composed.model.hidden_size == 128 and composed.model.classifier_dropout == 0.1  # bert's, extended
    plain = run_main("config", "show", "model=mlp", cwd=tmp_path)
    assert not plain.stdout.startswith("#")


def test_data_options_share_the_loader_and_tokenizer_blocks_and_set_only_what_differs(tmp_path):
    """The DataLoader and tokenizer settings live once, in conf/_blocks/; a data option names them in its defaults
    and sets only the values it changes. The blocks are not options, config show prints each `_target_` first, and a
    data option copied into ./conf still finds its blocks."""
    import yaml
    from conftest import run_main
    from omegaconf import OmegaConf

    from dlkit.config import compose, config_groups

    groups = config_groups()
    assert "_blocks" not in groups
    for option in groups["data"]:
        own = yaml.safe_load(option.path.read_text(encoding="utf-8"))
        assert "/_blocks/loader@_here_" in own["defaults"], option.name
        assert "pin_memory" not in own and "path" not in own.get("tokenizer", {}), option.name
    mnist, mrpc = compose(["data=mnist"]).data, compose(["data=mrpc"]).data
    assert (mnist.batch_size, mnist.num_workers, mnist.pin_memory) == (128, None, None)  # set here, from the block
    assert mrpc.batch_size == 32 and dict(mrpc.tokenizer) == {"kind": "wordpiece", "vocab_size": 30000,
                                                              "min_frequency": 1, "lowercase": True, "path": None,
                                                              "clean": None}
    shown = run_main("config", "show", "data=mrpc", "model=textcnn", cwd=tmp_path)
    assert shown.returncode == 0
    data_lines = shown.stdout.split("\ndata:\n", 1)[1].splitlines()
    assert data_lines[0] == "  _target_: dlkit.data.hf_text.HFTextDataModule"
    assert run_main("config", "copy", "data/mnist", cwd=tmp_path).returncode == 0
    (tmp_path / "conf" / "data" / "mnist.yaml").write_text(
        (tmp_path / "conf" / "data" / "mnist.yaml").read_text().replace("batch_size: 128", "batch_size: 16"))
    copied = OmegaConf.create(run_main("config", "show", "data=mnist", cwd=tmp_path).stdout).data
    assert (copied.batch_size, copied.num_workers, copied.pin_memory) == (16, None, None)


def test_what_train_and_sweep_import_before_their_first_line_leaves_torch_unimported():
    """`dlkit train` prints its first line and `dlkit sweep` starts its workers before torch is imported: the modules
    they import first must not import torch or Lightning (a top-level import in a lower layer would)."""
    code = ("import sys\nimport dlkit.cli, dlkit.jobs, dlkit.runner, dlkit.sweeps.study, dlkit.sweeps.report, "
            "dlkit.runs.checkpoints, dlkit.runs.query\n"
            "heavy = [m for m in ('torch', 'pytorch_lightning', 'lightning_fabric', 'wandb') if m in sys.modules]\n"
            "assert not heavy, heavy\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
