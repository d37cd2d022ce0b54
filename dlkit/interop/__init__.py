"""dlkit and the outside world: checkpoints in from other libraries."""
