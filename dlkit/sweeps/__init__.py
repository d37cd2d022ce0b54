"""Hyperparameter sweeps: dlkit's own loop on current Optuna, and W&B sweep files."""
