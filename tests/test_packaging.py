"""The wheel carries the configs, so an installed dlkit (not a checkout) finds them."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_ships_conf_and_composes_from_it(tmp_path):
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / "dist"),
                            str(ROOT)], capture_output=True, text=True)
    assert built.returncode == 0, built.stderr[-2000:]
    [wheel] = (tmp_path / "dist").glob("dlkit-*.whl")
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    assert (site / "dlkit" / "conf" / "train.yaml").is_file()
    code = ("from dlkit.config import packaged_conf_dir, compose; import sys\n"
            "print(packaged_conf_dir()); cfg = compose(['optimizer=sgd']); print(cfg.optimizer._target_)")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(site)})
    assert result.returncode == 0, result.stderr
    conf_dir, target = result.stdout.split()
    assert Path(conf_dir) == site / "dlkit" / "conf"
    assert target == "torch.optim.SGD"
