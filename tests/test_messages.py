"""Messages that keep the part that matters: each mistake or fault below ends in one line naming the file, key or
value at fault and the fix, with the right exit code, no traceback, and no run folder when nothing could run."""

from __future__ import annotations

import resource
import signal
import subprocess

import pytest
from conftest import QUICK, dlkit_bin, run_cli, run_folders, run_main, summary


def _one_line(result: subprocess.CompletedProcess, code: int, starts: str) -> str:
    assert result.returncode == code, result.stderr
    assert result.stderr.startswith(f"error: {starts}"), result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    return result.stderr


def test_invalid_yaml_in_a_users_config_names_the_file_and_line(tmp_path):
    folder = tmp_path / "conf" / "model"
    folder.mkdir(parents=True)
    (folder / "mine.yaml").write_text("# my model\n_target_: dlkit.models.mlp.MLP\nhidden_sizes: [64, 32\n"
                                      "dropout: 0.1\n")
    line = _one_line(run_main("train", "model=mine", cwd=tmp_path), 2, f"{folder / 'mine.yaml'}:4 is not valid YAML")
    assert "fix it, or delete it" in line
    assert not (tmp_path / "outputs").exists()


def test_a_corrupt_config_json_of_model_pretrained_is_named(tmp_path):
    folder = tmp_path / "hf-bert"
    folder.mkdir()
    (folder / "config.json").write_text('{"hidden_size": 128,\n "num_attention_heads": }')
    (folder / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nthe\n")
    line = _one_line(run_main("train", "model=bert_tiny", f"model.pretrained={folder}", cwd=tmp_path), 2,
                     f"{folder / 'config.json'} is not valid JSON (line 2, column")
    assert "model.pretrained needs an intact Hugging Face folder" in line
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize(("override", "expected"), [
    ("model._target_=dlkit.models.mlp.MPL", "model._target_=dlkit.models.mlp.MPL cannot be imported "
                                             "(dlkit.models.mlp has no MPL). Did you mean dlkit.models.mlp.MLP?"),
    ("optimizer._target_=torch.optim.Adamm", "optimizer._target_=torch.optim.Adamm cannot be imported (torch.optim "
                                             "has no Adamm). Did you mean torch.optim.Adam?"),
    ("model._target_=nowhere.Model", "model._target_=nowhere.Model cannot be imported (ModuleNotFoundError: No "
                                     "module named 'nowhere')."),
])
def test_an_unknown_target_is_one_line_with_the_import_error(tmp_path, override, expected):
    _one_line(run_main("train", override, cwd=tmp_path), 2, expected)
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize(("args", "expected"), [
    (["+optimizer.lr=0.1"], "optimizer.lr is already in the config: write optimizer.lr=0.1 (without +) to change it."),
    (["recipe=bert_finetune"], "recipe is not picked by default, so there is nothing to override: add it with "
                               "+recipe=bert_finetune"),
    (["optimizer.lrr=1"], "Unknown key 'optimizer.lrr'. Did you mean optimizer.lr?"),
])
def test_override_mistakes_are_told_what_to_write(tmp_path, args, expected):
    line = _one_line(run_main("train", *args, cwd=tmp_path), 2, expected)
    assert "Did you mean optimizer.lr? " not in line or "lrr" in line  # never the key that was given


def test_no_arguments_or_a_bare_group_show_the_help_and_exit_0(tmp_path):
    for args in ([], ["runs"], ["config"]):
        result = run_main(*args, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert "Usage: dlkit" in result.stdout and not result.stderr
    assert subprocess.run([dlkit_bin()], capture_output=True, cwd=tmp_path).returncode == 0


@pytest.mark.slow
def test_a_full_disk_is_one_line_naming_the_output_dir_and_the_run_says_failed(tmp_path):
    def small_files() -> None:  # every file this process writes stops growing at 300 kB (a checkpoint needs more)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (300_000, 300_000))

    result = subprocess.run([dlkit_bin(), "train", *QUICK], cwd=tmp_path, capture_output=True, text=True,
                            preexec_fn=small_files, timeout=300)
    line = _one_line(result, 1, "could not write the checkpoint ")
    assert "GiB free under paths.output_dir=outputs: free some space" in line and "inline_container" not in line
    [run] = run_folders(tmp_path)
    info = summary(run)
    assert info["status"] == "failed" and info["error"] == line.removeprefix("error: ").strip()
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.endswith(".tmp")]


def test_an_output_dir_that_cannot_hold_folders_is_named(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    _one_line(run_main("train", *QUICK, f"paths.output_dir={blocker}/runs", cwd=tmp_path), 2,
              f"paths.output_dir={blocker}/runs: cannot make a run folder there (Not a directory)")


@pytest.mark.slow
def test_export_without_the_onnx_package_gives_the_pip_hint_and_writes_nothing(tmp_path):
    assert run_cli("train", *QUICK, cwd=tmp_path).returncode == 0
    [run] = run_folders(tmp_path)
    missing = tmp_path / "no-onnx"
    missing.mkdir()
    (missing / "onnx.py").write_text("raise ImportError(\"No module named 'onnx'\", name='onnx')\n")
    result = run_cli("export", "latest", "--format", "onnx", cwd=tmp_path, env={"PYTHONPATH": str(missing)})
    _one_line(result, 2, "--format onnx needs the onnx package, which is not installed: pip install 'dlkit[export]'")
    assert not (run / "export").exists()


@pytest.mark.slow
def test_the_first_screen_says_what_is_built_and_keeps_library_chatter_out(tmp_path):
    result = run_cli("train", "trainer.max_epochs=2", cwd=tmp_path, script=True)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "Training mlp on digits  trainer=cpu  precision=32  logger=wandb"
    [run] = run_folders(tmp_path)
    assert lines[1] == f"Run folder: {run}"
    assert any(line.startswith("Model: MLP, 50.8 K parameters") for line in lines)
    assert result.stderr == ""  # no GPU line, W&B warning, Lightning warning with a site-packages path
    for noise in ("GPU available", "anonymous", "site-packages", "FLOPs", "v_num", "optimized_metric"):
        assert noise not in result.stdout, noise
    assert "val/acc (best)" in result.stdout and "val/acc (last epoch)" in result.stdout
    assert "GPU available" in (run / "train.log").read_text()  # kept for whoever looks into the run
    verbose = run_cli("train", "trainer.max_epochs=1", "logger=csv", "--verbose", cwd=tmp_path)
    assert "GPU available" in verbose.stderr


def test_the_progress_bar_shows_no_logger_version():
    from dlkit.callbacks import ThrottledRichProgressBar

    class Trainer:
        progress_bar_metrics = {"val/acc": 0.5}
        loggers = [type("Logger", (), {"version": "xyno"})()]

    shown = ThrottledRichProgressBar().get_metrics(Trainer(), None)
    assert shown == {"val/acc": 0.5}
