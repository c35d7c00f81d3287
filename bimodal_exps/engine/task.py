"""The trainable unit: two-tower model + loss in one module, so DDP syncs the loss's parameters too."""
from __future__ import annotations

import torch

from models.gcl.base import LossOutput
from models.objectives.simcse import simcse_loss


class ContrastiveTask(torch.nn.Module):
    """forward(images, tokens, ids) -> LossOutput. Loss math runs outside autocast (the loss does that)."""

    def __init__(self, model: torch.nn.Module, loss_fn: torch.nn.Module):
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn

    def forward(self, images: torch.Tensor, tokens: dict[str, torch.Tensor], ids: torch.Tensor | None,
                feature_grads: tuple[torch.Tensor, torch.Tensor, list] | None = None):
        """The loss output; with `feature_grads` = (∂L/∂image features, ∂L/∂text features, [(loss parameter,
        ∂L/∂parameter)]) of a cached loss (`engine.accum`; None: no gradient), the scalar whose backward
        delivers them instead."""
        image_features, text_features = self.model(images, tokens)
        if feature_grads is not None:
            grad_img, grad_txt, param_grads = feature_grads
            pairs = [(image_features, grad_img), (text_features, grad_txt), *param_grads]
            return sum((x.float() * g).sum() for x, g in pairs if g is not None)
        out = self.loss_fn(image_features, text_features, ids)
        w_simcse = getattr(self.loss_fn, "w_simcse", 0.0)
        if w_simcse > 0:  # a second text forward (another dropout mask) is each caption's positive
            term = simcse_loss(text_features, self.model.encode_text(tokens))
            out = LossOutput(out.loss + w_simcse * term, {**out.stats, "simcse": term.detach()})
        return out
