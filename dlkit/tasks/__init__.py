"""Tasks: LightningModules that wrap a model with its loss, metrics, optimizer and scheduler."""
