"""LightningDataModules. Each states what it produces in a DataSpec (spec.py); models are sized from it."""
