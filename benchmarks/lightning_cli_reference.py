"""The smallest LightningCLI script, for comparing `--help` start-up time with dlkit's."""

import pytorch_lightning as pl
from pytorch_lightning.cli import LightningCLI


class Model(pl.LightningModule):
    """A placeholder model: only the CLI's start-up is measured."""

    def __init__(self, hidden: int = 32) -> None:
        super().__init__()


if __name__ == "__main__":
    LightningCLI(Model)
