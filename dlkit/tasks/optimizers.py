"""Optimizer factories that configs name as `optimizer._target_` (beside torch's own)."""

from __future__ import annotations

from typing import Any

import torch


def bert_adamw(params: Any, lr: float = 3e-5, weight_decay: float = 0.01, no_decay_1d: bool = True,
               **kwargs: Any) -> torch.optim.AdamW:
    """AdamW for BERT's fine-tuning recipe: with no_decay_1d, the 1-D parameters (biases, LayerNorm weights, the
    masked-LM output bias) get no weight decay, only the weight matrices and embeddings do."""
    params = list(params)
    if not no_decay_1d or (params and isinstance(params[0], dict)):  # groups given by the caller: as they are
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, **kwargs)
    groups = [{"params": [p for p in params if p.dim() > 1], "weight_decay": weight_decay},
              {"params": [p for p in params if p.dim() <= 1], "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr, weight_decay=weight_decay, **kwargs)
