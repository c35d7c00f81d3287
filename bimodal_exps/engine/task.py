"""The trainable unit: two-tower model + loss in one module, so DDP syncs the loss's parameters too."""
from __future__ import annotations

import torch


class ContrastiveTask(torch.nn.Module):
    """forward(images, tokens, ids) -> LossOutput. Loss math runs outside autocast (the loss does that)."""

    def __init__(self, model: torch.nn.Module, loss_fn: torch.nn.Module):
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn

    def forward(self, images: torch.Tensor, tokens: dict[str, torch.Tensor], ids: torch.Tensor):
        image_features, text_features = self.model(images, tokens)
        return self.loss_fn(image_features, text_features, ids)
