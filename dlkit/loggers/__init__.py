"""The run's loggers: W&B (wandb_logger.py, wandb_runs.py) and the appending CSV logger (csv_logger.py)."""
