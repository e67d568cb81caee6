"""AdamW and the learning-rate schedule of Geneformer-style pretraining.

Weight decay (0.001 by default) applies to weight matrices and embeddings, not to biases and
LayerNorm parameters (the split the Hugging Face Trainer makes, which Geneformer trained with).
The schedule warms up linearly from 0 and then decays to 0 along a cosine (Mouse-Geneformer) or a
line (Geneformer v1), as transformers' schedule helpers define them.
"""

from __future__ import annotations

import torch
from torch import nn

SCHEDULES = ("cosine", "linear")


def build_optimizer(model: nn.Module, lr: float, weight_decay: float, *, fused: bool = False) -> torch.optim.AdamW:
    """AdamW with decay on tensors of 2+ dimensions only; ``fused`` on CUDA."""
    decay, no_decay = [], []
    seen: set[int] = set()
    for param in model.parameters():  # parameters() yields tied weights once
        if not param.requires_grad or id(param) in seen:
            continue
        seen.add(id(param))
        (decay if param.ndim >= 2 else no_decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999), eps=1e-8, fused=fused or None)


def build_scheduler(optimizer: torch.optim.Optimizer, schedule: str, warmup_steps: int, total_steps: int):
    """LambdaLR stepping once per optimizer step: warmup, then cosine or linear decay to 0."""
    from transformers import get_cosine_schedule_with_warmup, get_linear_schedule_with_warmup

    make = {"cosine": get_cosine_schedule_with_warmup, "linear": get_linear_schedule_with_warmup}[schedule]
    return make(optimizer, num_warmup_steps=warmup_steps, num_training_steps=total_steps)
