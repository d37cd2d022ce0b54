"""The run's loggers: W&B (wandb_logger.py, wandb_runs.py), the appending CSV logger (csv_logger.py), and the
hyperparameters and results every logger gets (hparams.py)."""
