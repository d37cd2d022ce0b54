"""What `dlkit data prepare` and `dlkit data info` do: build a config's token store ahead of training (on a login
node before a cluster job, say) and describe each split of it."""

from __future__ import annotations

from typing import Any

from dlkit import runner


def build_datamodule(overrides: list[str], config_dir: str | None):
    """The configured datamodule (its config composed and checked as `dlkit train` checks it); nothing prepared."""
    from dlkit import build

    job = runner.prepare(overrides, config_dir)
    return build.build_datamodule(job.cfg, setup=False), job


def prepare(overrides: list[str], config_dir: str | None = None) -> dict[str, Any]:
    """Prepare the data of a config: {"folder", "size", "built", "splits"} (a store), or the split sizes of data that
    keeps no store (images)."""
    from dlkit.data.store import summary

    datamodule, _ = build_datamodule(overrides, config_dir)
    datamodule.prepare_data()
    prepared = datamodule.prepare()
    if prepared is None:
        datamodule.setup("fit")
        sets = {"train": datamodule.train_set, "val": datamodule.val_set, "test": datamodule.test_set}
        return {"folder": None, "size": 0, "built": False, "splits": {k: {"rows": len(v)} for k, v in sets.items()}}
    store, built = prepared
    return {"folder": store.folder, "size": store.size(), "built": built, "splits": summary(store)}
