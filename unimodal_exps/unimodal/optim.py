"""LARS for pre-training (timm's implementation, MoCo-v3/SogCLR parameter groups)."""
from __future__ import annotations

from timm.optim import Lars
from torch import nn


def create_lars(model: nn.Module, lr: float, weight_decay: float, momentum: float = 0.9) -> Lars:
    """LARS with weight decay and the trust-ratio adaptation on weight matrices/kernels only.

    Biases and normalisation parameters (ndim <= 1) get neither, as in SogCLR's LARS. `always_adapt`
    keeps the adaptation on the weights even with --wd 0 (timm otherwise ties it to a non-zero decay).
    """
    trainable = [p for p in model.parameters() if p.requires_grad]
    weights = [p for p in trainable if p.ndim > 1]
    others = [p for p in trainable if p.ndim <= 1]
    groups = [{"params": weights, "weight_decay": weight_decay, "always_adapt": True},
              {"params": others, "weight_decay": 0.0, "always_adapt": False}]
    return Lars(groups, lr=lr, momentum=momentum, trust_coeff=0.001)
