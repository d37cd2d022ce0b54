"""Model architectures: plain nn.Modules, sized from the data's spec. They import torch and the data spec only
(an import-linter contract in pyproject.toml holds them to it)."""
