"""LightningDataModules. Each states what it produces in a DataSpec; models are sized from it."""

from dlkit.data.spec import DataSpec, Kind

__all__ = ["DataSpec", "Kind"]
