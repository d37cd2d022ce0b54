"""The core promises of `dlkit train` and `dlkit config`, through the real console script."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys

import pytest
import yaml
from conftest import QUICK, dlkit_bin, run_cli, run_folders, run_main, start_cli, summary


@pytest.mark.slow
def test_default_train_reaches_95_percent_and_records_the_run(tmp_path):
    result = run_cli("train", cwd=tmp_path, script=True)  # README's quick start, through the installed script
    assert result.returncode == 0, result.stderr[-2000:]
    [run] = run_folders(tmp_path)
    assert f"Run folder: {run}" in result.stdout.replace("\n", "")
    assert "test/acc" in result.stdout
    info = summary(run)
    assert info["status"] == "finished"
    assert info["metrics"]["test/acc"] >= 0.95
    assert info["world_size"] == 1
    for name in ("config.yaml", "overrides.yaml", "environment.json", "metrics.csv", "train.log"):
        assert (run / name).is_file(), name
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert any(p.name.startswith("best-") for p in (run / "checkpoints").iterdir())
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["paths"]["run_dir"] == str(run)
    assert config["model"]["_target_"] == "dlkit.models.mlp.MLP"
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert any(row.get("val/acc") for row in rows)
    # the run folder name is <date>/<HH-MM-SS>-<6 hex>
    assert run.parent.parent == tmp_path / "outputs"
    time_part, run_id = run.name.rsplit("-", 1)
    assert len(run_id) == 6 and int(run_id, 16) >= 0


@pytest.mark.slow
def test_overrides_reach_the_composed_config(tmp_path):
    result = run_cli("train", *QUICK, "optimizer=sgd", "optimizer.lr=0.05", "model.hidden_sizes=[32]",
                     "~callbacks.model_checkpoint", "~callbacks.last_checkpoint", "tags=[smoke]", "+note=hello",
                     "seed=0", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    [run] = run_folders(tmp_path)
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["optimizer"]["_target_"] == "torch.optim.SGD"
    assert config["optimizer"]["lr"] == 0.05
    assert config["model"]["hidden_sizes"] == [32]
    assert "model_checkpoint" not in config["callbacks"]
    assert config["seed"] == 0
    assert config["tags"] == ["smoke"] and config["note"] == "hello"
    assert "optimizer=sgd" in yaml.safe_load((run / "overrides.yaml").read_text())
    assert not (run / "checkpoints").exists()


@pytest.mark.slow
def test_multirun_runs_every_combination_in_its_own_folder(tmp_path):
    result = run_cli("train", "-m", *QUICK, "optimizer.lr=1e-2,1e-3", "seed=0,1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    runs = run_folders(tmp_path)
    assert len(runs) == 4
    assert {r.name for r in runs} == {"0", "1", "2", "3"}
    assert len({r.parent for r in runs}) == 1 and runs[0].parent.parent.parent.name == "multirun"
    seen = {(yaml.safe_load((r / "config.yaml").read_text())["optimizer"]["lr"],
             yaml.safe_load((r / "config.yaml").read_text())["seed"]) for r in runs}
    assert seen == {(1e-2, 0), (1e-2, 1), (1e-3, 0), (1e-3, 1)}
    assert all(summary(r)["status"] == "finished" for r in runs)
    assert "Multirun" in result.stdout


def test_config_show_prints_the_composed_yaml(tmp_path):
    result = run_cli("config", "show", "optimizer=sgd", "optimizer.lr=0.5", "precision=bf16", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(result.stdout)
    assert config["optimizer"]["lr"] == 0.5
    assert config["trainer"]["precision"] == "bf16-mixed"
    assert not (tmp_path / "outputs").exists()


def test_help_and_config_show_do_not_import_torch(tmp_path):
    code = ("import sys; from dlkit import cli; sys.argv = ['dlkit', 'config', 'show']\n"
            "try:\n    cli.main()\nexcept SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules and 'pytorch_lightning' not in sys.modules, 'torch imported'")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    help_text = run_cli("train", "--help", cwd=tmp_path)
    assert help_text.returncode == 0
    assert "optimizer.lr" in help_text.stdout and "-m" in help_text.stdout


def test_config_list_shows_groups_options_and_descriptions(tmp_path):
    result = run_cli("config", "list", cwd=tmp_path)
    assert result.returncode == 0
    for group in ("model", "data", "optimizer", "scheduler", "trainer", "precision", "logger", "callbacks",
                  "debug", "experiment", "paths"):
        assert group in result.stdout
    one = run_cli("config", "list", "trainer", cwd=tmp_path)
    assert "ddp_cpu" in one.stdout and "gloo" in one.stdout and "optimizer" not in one.stdout
    bad = run_cli("config", "list", "modle", cwd=tmp_path)
    assert bad.returncode == 2 and "Did you mean model?" in bad.stderr


def test_user_conf_overrides_and_extends_packaged_options(tmp_path):
    copied = run_cli("config", "copy", "model/mlp", cwd=tmp_path)
    assert copied.returncode == 0, copied.stderr
    target = tmp_path / "conf" / "model" / "mlp.yaml"
    target.write_text(target.read_text().replace("hidden_sizes: [256, 128]", "hidden_sizes: [7]"))
    (tmp_path / "conf" / "optimizer").mkdir()
    (tmp_path / "conf" / "optimizer" / "slow_sgd.yaml").write_text(
        "# my own optimizer\n_target_: torch.optim.SGD\n_partial_: true\nlr: 0.001\n")
    shown = yaml.safe_load(run_cli("config", "show", "optimizer=slow_sgd", cwd=tmp_path).stdout)
    assert shown["model"]["hidden_sizes"] == [7]
    assert shown["optimizer"]["lr"] == 0.001
    listed = run_cli("config", "list", "optimizer", cwd=tmp_path).stdout
    assert "slow_sgd" in listed and "my own optimizer" in listed
    again = run_cli("config", "copy", "model/mlp", cwd=tmp_path)
    assert again.returncode == 2 and "already exists" in again.stderr
    # --config-dir points elsewhere
    other = tmp_path / "elsewhere"
    (other / "model").mkdir(parents=True)
    (other / "model" / "mlp.yaml").write_text("_target_: dlkit.models.mlp.MLP\nhidden_sizes: [3]\n")
    shown = yaml.safe_load(run_cli("config", "show", "--config-dir", str(other), cwd=tmp_path).stdout)
    assert shown["model"]["hidden_sizes"] == [3]


@pytest.mark.parametrize(("args", "expected"), [
    (["model=mlpp"], "Did you mean mlp?"),
    (["optimizer.lrr=1"], "Did you mean optimizer.lr?"),
    (["optimizer.lr=abc"], "optimizer.lr='abc' should be a number"),
    (["--config-dir", "no/such/dir"], "--config-dir no/such/dir: no such folder"),
    (["precision=16"], "needs a CUDA GPU"),
    (["trainer=gpu"], "needs a CUDA GPU and none is visible"),
    (["optimizer.lr=1e-3,1e-4"], "add -m"),
    (["trainer.max_epochs=1.5"], "should be an integer"),
    (["model.norm=weird"], "MLP refuses its model.* settings: norm='weird': choose batch, layer or null"),
])
def test_bad_input_is_one_clear_line_exit_2_and_no_run_folder(tmp_path, args, expected):
    # the first case through the installed console script, the others through its entry point in this process
    run = run_cli if args == ["model=mlpp"] else run_main
    result = run("train", *args, cwd=tmp_path)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert expected in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[0].startswith("error:")
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize(("args", "expected"), [
    (["train", "--fail-fas"], "No such option: --fail-fas (Possible options: --fail-fast)"),
    (["export"], "Missing argument 'ref'. (see `dlkit export --help`)"),
    (["predict", "latest", "--top-k", "many"], "Invalid value for '--top-k'"),
    (["trian"], "No such command 'trian'"),
])
def test_command_line_mistakes_exit_2_with_one_line(tmp_path, args, expected):
    result = run_cli(*args, cwd=tmp_path)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stderr.strip().splitlines() == [f"error: {result.stderr.strip()[7:]}"]
    assert expected in result.stderr


@pytest.mark.parametrize("where", ["before", "after"])
def test_verbose_shows_the_traceback(tmp_path, where):
    args = ["--verbose", "train", "model=mlpp"] if where == "before" else ["train", "model=mlpp", "--verbose"]
    result = run_cli(*args, cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" in result.stderr and "Did you mean mlp?" in result.stderr


@pytest.mark.slow
def test_same_seed_same_metrics_and_seed_zero_counts(tmp_path):
    from dlkit import jobs

    def metrics(seed: str) -> dict:
        [job] = jobs.train([*QUICK, f"seed={seed}", "paths.output_dir=" + str(tmp_path / "outputs")])
        return {k: v for k, v in job.metrics.items() if k.startswith(("val/", "test/"))}

    first, second, other = metrics("0"), metrics("0"), metrics("1")
    assert first == second
    assert first != other


def test_shell_completion_offers_groups_and_options(tmp_path):
    env = {"_DLKIT_COMPLETE": "complete_bash", "COMP_WORDS": "dlkit train precision=", "COMP_CWORD": "2"}
    result = run_cli(cwd=tmp_path, env=env)
    assert result.stdout.split() == ["precision=16", "precision=32", "precision=bf16"]
    env.update(COMP_WORDS="dlkit train opt")
    assert run_cli(cwd=tmp_path, env=env).stdout.split() == ["optimizer="]
    env.update(COMP_WORDS="dlkit con", COMP_CWORD="1")
    assert "config" in run_cli(cwd=tmp_path, env=env).stdout.split()


def test_run_folders_started_in_the_same_second_never_collide(tmp_path):
    from dlkit.runs.records import new_folder

    folders = {new_folder(tmp_path) for _ in range(50)}
    assert len(folders) == 50 and all(f.is_dir() for f in folders)


@pytest.mark.slow
def test_bf16_mixed_precision_trains_on_the_cpu(tmp_path):
    result = run_cli("train", "precision=bf16", *QUICK, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    [run] = run_folders(tmp_path)
    assert yaml.safe_load((run / "config.yaml").read_text())["trainer"]["precision"] == "bf16-mixed"
    assert summary(run)["status"] == "finished"


@pytest.mark.slow
def test_ctrl_c_marks_the_run_interrupted(tmp_path):
    import signal
    import time

    process = start_cli("train", "trainer.max_epochs=100000", "callbacks=minimal", cwd=tmp_path,
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not list((tmp_path / "outputs").rglob("metrics.csv")):
        time.sleep(0.5)
    time.sleep(2)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err[-2000:]
    assert "Interrupted." in err
    [run] = run_folders(tmp_path)
    assert summary(run)["status"] == "interrupted"


@pytest.mark.slow
@pytest.mark.parametrize("overrides", [
    ["scheduler=cosine", "scheduler.warmup_ratio=0.2"], ["scheduler=linear_warmup"], ["scheduler=onecycle"],
    ["scheduler=plateau", "callbacks.model_checkpoint.monitor=val/loss"], ["optimizer=sgd"], ["optimizer=adam"],
    ["trainer.accumulate_grad_batches=2", "trainer.gradient_clip_val=0.5", "trainer.deterministic=true"],
    ["debug=fast_dev_run"], ["debug=overfit", "trainer.max_epochs=3"],
])
def test_schedulers_optimizers_and_switches_train(tmp_path, overrides):
    from dlkit import jobs

    schedule = overrides[0].startswith("scheduler=")
    base = [o if o != "callbacks=minimal" or not schedule else "callbacks=default" for o in QUICK]
    extra = ["callbacks.lr_monitor.logging_interval=step", "~callbacks.progress_bar",
             "trainer.log_every_n_steps=1"] if schedule else []
    [job] = jobs.train([*base, *extra, f"paths.output_dir={tmp_path}", *overrides])
    assert job.status == "finished"
    assert job.metrics["test/loss"] == job.metrics["test/loss"]  # finite, not NaN
    if schedule:
        rows = list(csv.DictReader((job.run_dir / "metrics.csv").open()))
        rates = {float(r[k]) for r in rows for k in r if k.startswith("lr-") and r[k]}
        assert len(rates) > 1 or overrides[0] == "scheduler=plateau"  # the schedule changed the rate


def test_an_option_named_none_is_chosen_and_null_switches_a_group_off(tmp_path):
    shown = yaml.safe_load(run_cli("config", "show", "scheduler=none", cwd=tmp_path).stdout)
    assert shown["scheduler"] == {"_target_": None}
    assert "logger" not in yaml.safe_load(run_cli("config", "show", "logger=null", cwd=tmp_path).stdout)


def test_logger_null_trains_without_any_logger(tmp_path):
    result = run_cli("train", "logger=null", "trainer.max_epochs=1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    [run] = run_folders(tmp_path)
    assert summary(run)["status"] == "finished" and summary(run)["metrics"]["test/acc"] > 0.5
    assert not (run / "wandb").exists() and not (run / "metrics.csv").exists()


def _complete_like_bash(words: list[str], cword: int, cwd) -> list[str]:
    """What dlkit's bash completion function asks for: it sets these three variables (see the script below)."""
    env = {"_DLKIT_COMPLETE": "complete_bash", "COMP_WORDS": "\n".join(words), "COMP_CWORD": str(cword)}
    result = run_cli(cwd=cwd, env=env)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    return result.stdout.split()


def test_bash_completion_of_group_options_after_the_equals_sign(tmp_path):
    # Typer finds the shell among the command's parent processes: run it from bash, as a user does
    shown = subprocess.run(["bash", "-c", f"'{dlkit_bin()}' --show-completion"], cwd=tmp_path, capture_output=True,
                           text=True, timeout=300)
    assert shown.returncode == 0, f"exit {shown.returncode}: {shown.stderr[-2000:]}"
    script = shown.stdout
    # the function joins bash's words with newlines (local IFS) and passes the index of the cursor's word
    assert 'COMP_WORDS="${COMP_WORDS[*]}"' in script and "COMP_CWORD=$COMP_CWORD" in script
    assert "_DLKIT_COMPLETE=complete_bash" in script and "local IFS=$'\n'" in script
    # bash splits `model=l` at `=` (COMP_WORDBREAKS): words model, =, l; the reply replaces only `l`
    assert _complete_like_bash(["dlkit", "train", "model", "=", "l"], 4, tmp_path) == ["lenet", "lstm"]
    # at `model=<TAB>` the cursor's word is `=` itself: every option, bare
    options = _complete_like_bash(["dlkit", "train", "model", "="], 3, tmp_path)
    assert {"lenet", "lstm", "mlp"} <= set(options) and not any("=" in o for o in options)
    assert _complete_like_bash(["dlkit", "config", "show", "precision", "=", "b"], 5, tmp_path) == ["bf16"]
    assert _complete_like_bash(["dlkit", "sweep", "+experiment", "=", "dig"], 4, tmp_path) == ["digits_lenet"]
    assert _complete_like_bash(["dlkit", "train", "~call"], 2, tmp_path) == ["~callbacks"]
    assert _complete_like_bash(["dlkit", "train", "+exp"], 2, tmp_path) == ["+experiment="]
    assert _complete_like_bash(["dlkit", "train", "optimizer.lr", "="], 3, tmp_path) == []


def test_zsh_and_fish_completion_get_the_whole_word(tmp_path):
    zsh = run_cli(cwd=tmp_path, env={"_DLKIT_COMPLETE": "complete_zsh", "_TYPER_COMPLETE_ARGS": "dlkit train model=l"})
    assert '"model=lenet"' in zsh.stdout and '"model=lstm"' in zsh.stdout and "mlp" not in zsh.stdout
    fish = run_cli(cwd=tmp_path, env={"_DLKIT_COMPLETE": "complete_fish", "_TYPER_COMPLETE_FISH_ACTION": "get-args",
                                      "_TYPER_COMPLETE_ARGS": "dlkit train model=l"})
    assert fish.stdout.split() == ["model=lenet", "model=lstm"]


@pytest.mark.skipif(not shutil.which("bash") or not hasattr(os, "fork"), reason="needs bash and a pseudo-terminal")
def test_tab_in_a_real_interactive_bash_completes_group_options(tmp_path):
    import pty
    import select
    import time

    from conftest import dlkit_bin

    def session(keys: str, expect: str) -> str:
        pid, fd = pty.fork()
        if pid == 0:  # the child: an interactive bash, without the user's rc files
            os.chdir(tmp_path)
            env = {**os.environ, "PATH": f"{os.path.dirname(dlkit_bin())}:{os.environ.get('PATH', '')}",
                   "HOME": str(tmp_path), "TERM": "dumb", "PS1": "$ "}
            os.execve(shutil.which("bash"), ["bash", "--norc", "--noprofile", "-i"], env)
        # readline handles the keys in order: TAB runs the completion, then Ctrl+A puts `echo` in front
        os.write(fd, b"source <(dlkit --show-completion bash)\n" + keys.encode() + b"\x01echo COMPLETED \n")
        seen, deadline = "", time.time() + 120
        while expect not in seen and time.time() < deadline:
            if select.select([fd], [], [], 0.5)[0]:
                try:
                    seen += os.read(fd, 4096).decode(errors="replace")
                except OSError:
                    break
        os.write(fd, b"exit\n")
        os.close(fd)
        os.waitpid(pid, 0)
        return seen

    assert "COMPLETED dlkit train model=lenet" in session("dlkit train model=le\t", "COMPLETED dlkit train model=")
    assert "COMPLETED dlkit train precision=bf16" in session("dlkit train precision=b\t", "COMPLETED dlkit")


@pytest.mark.parametrize(("args", "line"), [
    (["trainer.limit_train_batches=abc"], "trainer.limit_train_batches='abc' should be a number (int or float; "
     "default: null). Example: trainer.limit_train_batches=0.5."),
    (["trainer.gradient_clip_val=abc"], "trainer.gradient_clip_val='abc' should be a number (int or float; "
     "default: null). Example: trainer.gradient_clip_val=0.5."),
    (["trainer.limit_val_batches=true"], "trainer.limit_val_batches=true should be a number (int or float; "
     "default: null). Example: trainer.limit_val_batches=0.5."),
    (["trainer.min_epochs=1.5"], "trainer.min_epochs=1.5 should be an integer (default: null). "
     "Example: trainer.min_epochs=10."),
    (["trainer.benchmark=fast"], "trainer.benchmark='fast' should be true or false (default: null). "
     "Example: trainer.benchmark=true."),
    (["callbacks.model_checkpoint.every_n_train_steps=often"], "callbacks.model_checkpoint.every_n_train_steps="
     "'often' should be an integer (default: null). Example: callbacks.model_checkpoint.every_n_train_steps=10."),
    (["=3"], "'=3' has no key before '=': write KEY=VALUE (optimizer.lr=3e-4) or GROUP=OPTION (model=lenet)."),
    (["+experiment=digits_lenet"], "experiment is already in the defaults: write experiment=digits_lenet "
     "(without +)."),
    (["+model=lenet"], "model is already in the defaults: write model=lenet (without +)."),
])
def test_usage_mistakes_name_the_value_and_the_fix_in_one_line(tmp_path, args, line):
    result = run_cli("train", *args, cwd=tmp_path)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stderr == f"error: {line}\n"
    assert not (tmp_path / "outputs").exists()  # refused before any run folder is made


def test_an_empty_group_choice_lists_the_options(tmp_path):
    result = run_cli("config", "show", "model=", cwd=tmp_path)
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert line.startswith("error: model= is empty: choose an option for model: ")
    assert "lenet, lstm, mlp" in line and line.endswith("(see `dlkit config list model`).")


def test_strings_the_trainer_takes_are_not_refused(tmp_path):
    result = run_cli("config", "show", "trainer.devices=auto", "trainer.deterministic=warn", "trainer.strategy=ddp",
                     "trainer.precision=bf16-mixed", "trainer.profiler=simple", "trainer.limit_train_batches=0.5",
                     "trainer.val_check_interval=0.25", "trainer.gradient_clip_val=1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    trainer = yaml.safe_load(result.stdout)["trainer"]
    assert trainer["devices"] == "auto" and trainer["deterministic"] == "warn" and trainer["profiler"] == "simple"
    assert trainer["limit_train_batches"] == 0.5 and trainer["precision"] == "bf16-mixed"


@pytest.mark.parametrize("args", [["train", "model=mlpp", "-v"], ["-v", "train", "model=mlpp"],
                                  ["train", "-v", "model=mlpp"], ["config", "show", "model=mlpp", "-v"]])
def test_short_verbose_works_anywhere(tmp_path, args):
    result = run_cli(*args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "Traceback" in result.stderr and "No such option" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: Unknown model 'mlpp'. Did you mean mlp?")


def test_config_copy_says_where_the_copy_is_used(tmp_path):
    elsewhere = run_cli("config", "copy", "model/mlp", "--config-dir", "mine", cwd=tmp_path)
    assert elsewhere.returncode == 0, elsewhere.stderr
    assert elsewhere.stdout == ("Copied model/mlp to mine/model/mlp.yaml. Edit it; dlkit uses it when you give "
                                "--config-dir mine.\n")
    local = run_cli("config", "copy", "model/mlp", cwd=tmp_path)
    assert local.stdout.strip().endswith("Edit it; dlkit uses it from now on in this folder.")


def test_run_ids_made_of_digits_stay_strings():
    from dlkit.config import compose

    cfg = compose(["model=bert_tiny", "model.pretrained=007123", "resume=124013"])
    assert cfg.model.pretrained == "007123" and cfg.resume == "124013"


def test_every_trainer_starts_from_the_cpu_trainer_and_a_copy_of_it_changes_them_all(tmp_path):
    assert run_main("config", "copy", "trainer/cpu", cwd=tmp_path).returncode == 0
    copy = tmp_path / "conf" / "trainer" / "cpu.yaml"
    copy.write_text(copy.read_text().replace("max_epochs: 30", "max_epochs: 7"))
    for option, accelerator, strategy in [("cpu", "cpu", "auto"), ("gpu", "gpu", "auto"),
                                          ("multi_gpu", "gpu", "ddp"), ("ddp_cpu", "cpu", "ddp"),
                                          ("fsdp", "gpu", "fsdp"), ("multi_node", "gpu", "ddp")]:
        result = run_main("config", "show", f"trainer={option}", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        trainer = yaml.safe_load(result.stdout)["trainer"]
        assert (trainer["max_epochs"], trainer["accelerator"], trainer["strategy"]) == (7, accelerator, strategy)
        assert trainer["log_every_n_steps"] == 10 and "defaults" not in trainer
