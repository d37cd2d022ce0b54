"""What `dlkit data prepare` and `dlkit data info` do: build a config's token store ahead of training (on a login
node before a cluster job, say) and describe each split of it."""

from __future__ import annotations

from typing import Any

from dlkit import runner


def build_datamodule(overrides: list[str], config_dir: str | None):
    """The configured datamodule (its config composed and checked as `dlkit train` checks it); nothing prepared."""
    from hydra.utils import instantiate

    job = runner.prepare(overrides, config_dir)
    return instantiate(job.cfg.data, _convert_="all"), job


def prepare(overrides: list[str], config_dir: str | None = None) -> dict[str, Any]:
    """Prepare the data of a config: {"folder", "size", "built", "splits"} (a store), or the split sizes of data that
    keeps no store (images)."""
    from dlkit.data.store import summary

    datamodule, _ = build_datamodule(overrides, config_dir)
    datamodule.prepare_data()
    if not hasattr(datamodule, "prepare"):
        datamodule.setup("fit")
        sizes = {name: {"rows": len(getattr(datamodule, f"{name}_set"))} for name in ("train", "val", "test")}
        return {"folder": None, "size": 0, "built": False, "splits": sizes}
    store, built = datamodule.prepare()
    return {"folder": store.folder, "size": store.size(), "built": built, "splits": summary(store)}
