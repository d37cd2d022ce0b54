"""A CSV logger that appends to the run folder's metrics.csv, so a resumed run keeps its history."""

from __future__ import annotations

import csv
import os
from pathlib import Path

from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter
from pytorch_lightning.loggers.logger import rank_zero_experiment


class _AppendingWriter(ExperimentWriter):
    """Lightning's writer deletes an existing metrics.csv; this one continues it (same columns, new rows)."""

    def _check_log_dir_exists(self) -> None:
        path = Path(self.metrics_file_path)
        if path.is_file():
            with open(path, newline="", encoding="utf-8") as handle:
                self.metrics_keys = list(next(csv.reader(handle), []))


class RunCSVLogger(CSVLogger):
    """CSVLogger writing <save_dir>/metrics.csv and hparams.yaml, appending across resumes."""

    def __init__(self, save_dir: str) -> None:
        super().__init__(save_dir=save_dir, name="", version="")

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment


def drop_rows_after(path: Path, step: int) -> int:
    """Remove from metrics.csv the rows of the steps after a checkpoint taken at global step `step`; return how many.

    A run killed after that checkpoint had logged more steps, which its resumed run logs again. Lightning labels
    the rows of the batch that made global step G with step G - 1 (an epoch's rows with its last batch), so rows
    from `step` on are dropped, except a test-only row at `step` itself (the test after training ended there).
    """
    if not path.is_file():
        return 0
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        rows = list(reader)
    if not header or "step" not in header:
        return 0
    at = header.index("step")
    tests = {i for i, name in enumerate(header) if name.startswith("test/")}
    counters = {i for i, name in enumerate(header) if name in ("step", "epoch")}

    def keep(row: list[str]) -> bool:
        try:
            row_step = int(float(row[at]))
        except (ValueError, IndexError):
            return True
        filled = {i for i, value in enumerate(row) if value != "" and i not in counters}
        return row_step < step or (row_step == step and bool(filled) and filled <= tests)

    kept = [row for row in rows if keep(row)]
    if len(kept) == len(rows):
        return 0
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(kept)
    os.replace(tmp, path)
    return len(rows) - len(kept)
