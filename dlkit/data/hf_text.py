"""Hugging Face datasets as text classification data: a dataset of the hub by name (downloaded once into
paths.data_dir) or a local dataset folder, read a batch of Arrow rows at a time into dlkit's token store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dlkit.data.tables import Chunk
from dlkit.data.text import ENCODE_ROWS, Source, TextClassificationDataModule
from dlkit.errors import DlkitError, UsageError


class HFTextDataModule(TextClassificationDataModule):
    """A Hugging Face dataset by name (downloaded on first use into paths.data_dir) or a local dataset folder; its
    Arrow files are read a batch at a time."""

    def __init__(self, name: str, subset: str | None = None, text_column: str = "text", label_column: str = "label",
                 text_pair_column: str | None = None, train_split: str = "train", val_split: str | None = None,
                 test_split: str | None = "test", data_dir: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not name or not isinstance(name, str):
            raise UsageError("data=hf_text needs data.name: a Hugging Face dataset or a local folder, "
                             "e.g. data.name=imdb or data.name=./my_dataset.")
        self.name, self.subset, self.data_dir = name, subset, data_dir
        self.columns = (text_column, label_column, text_pair_column)
        self.pairs = text_pair_column is not None
        self.split_names = {"train": train_split, "val": val_split, "test": test_split}

    def prepare_data(self) -> None:
        self._load()

    def _load(self):
        try:
            import datasets
        except ImportError as err:
            raise UsageError(f"Hugging Face dataset {self.name!r} needs the `datasets` package: "
                             "pip install 'dlkit[hf]'") from err
        try:
            return datasets.load_dataset(self.name, self.subset, cache_dir=self.data_dir)
        except (ConnectionError, OSError, ValueError) as err:
            if Path(self.name).exists():
                raise
            raise DlkitError(f"could not load Hugging Face dataset {self.name!r} ({type(err).__name__}); offline, "
                             "point data.name at a local folder of train/test files, or use data=text_files.") from err

    def sources(self) -> dict[str, Source]:
        dataset = self._load()
        text, label, pair = self.columns
        sources = {}
        for name, split in self.split_names.items():
            if split is None:
                continue
            if split not in dataset:
                raise UsageError(f"dataset {self.name!r} has no split {split!r}; splits: {', '.join(dataset)}.")
            part = dataset[split]
            missing = [c for c in (text, label, pair) if c and c not in part.column_names]
            if missing:
                raise UsageError(f"dataset {self.name!r} has no column {missing[0]!r}; columns: "
                                 f"{', '.join(part.column_names)}.")
            names = getattr(part.features[label], "names", None)

            def rows(part: Any = part, names: list[str] | None = names) -> Iterator[Chunk]:
                for batch in part.iter(batch_size=ENCODE_ROWS):
                    chunk = {"text": [str(t) for t in batch[text]],
                             "label": [names[v] if names else str(v) for v in batch[label]]}
                    if pair:
                        chunk["pair"] = [str(t) for t in batch[pair]]
                    yield chunk

            sources[name] = rows
        return sources

    def source_id(self) -> Any:
        return [self.name, self.subset, self.columns, self.split_names]
