"""Experiment tracking: loggers (W&B first, TensorBoard, CSV) and local run comparison."""
