"""Encoder for pre-training: a timm backbone (random init, pooled features) plus SimCLR's projection MLP.

State-dict prefixes: `backbone.` (what linear evaluation keeps) and `projector.`.
"""
from __future__ import annotations

import timm
from torch import Tensor, nn

from unimodal.options import UsageError

BACKBONE_PREFIX = "backbone."


def create_backbone(arch: str) -> nn.Module:
    """timm model `arch` without classifier (`num_classes=0`: forward returns pooled [B, num_features])."""
    if not timm.is_model(arch):
        raise UsageError(f"--arch {arch}: not a timm model name (see timm.list_models())")
    return timm.create_model(arch, pretrained=False, num_classes=0)


def projection_mlp(in_dim: int, hidden_dim: int, out_dim: int, num_layers: int) -> nn.Sequential:
    """Linear (no bias) + BN + ReLU blocks, then a final Linear + BN without affine (SimCLR v2 / MoCo v3 head)."""
    if num_layers < 1:
        raise UsageError(f"--num_proj_layers must be at least 1, got {num_layers}")
    layers: list[nn.Module] = []
    for i in range(num_layers):
        d_in = in_dim if i == 0 else hidden_dim
        last = i == num_layers - 1
        layers.append(nn.Linear(d_in, out_dim if last else hidden_dim, bias=False))
        layers.append(nn.BatchNorm1d(out_dim, affine=False) if last else nn.BatchNorm1d(hidden_dim))
        if not last:
            layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class ContrastiveEncoder(nn.Module):
    """forward(images) -> l2-normalised projections [B, dim]."""

    def __init__(self, arch: str, dim: int = 128, mlp_dim: int = 2048, num_proj_layers: int = 2) -> None:
        super().__init__()
        self.backbone = create_backbone(arch)
        self.projector = projection_mlp(self.backbone.num_features, mlp_dim, dim, num_proj_layers)

    def forward(self, images: Tensor) -> Tensor:
        return nn.functional.normalize(self.projector(self.backbone(images)), dim=1)


class TwoViewTask(nn.Module):
    """Encoder + loss in one module, so DDP wraps both: forward(view_a, view_b, ids) -> LossOutput.

    Each view goes through the encoder separately (BatchNorm statistics per view, as in the seed).
    """

    def __init__(self, encoder: ContrastiveEncoder, loss_fn: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.loss_fn = loss_fn

    def forward(self, view_a: Tensor, view_b: Tensor, ids: Tensor):
        return self.loss_fn(self.encoder(view_a), self.encoder(view_b), ids)


def backbone_state(model_state: dict[str, Tensor]) -> dict[str, Tensor]:
    """The backbone's weights from a ContrastiveEncoder state dict (prefix removed)."""
    return {k[len(BACKBONE_PREFIX):]: v for k, v in model_state.items() if k.startswith(BACKBONE_PREFIX)}


def freeze(module: nn.Module) -> nn.Module:
    """No gradients and eval mode (BatchNorm statistics stay as pre-trained)."""
    for p in module.parameters():
        p.requires_grad_(False)
    return module.eval()


def count_parameters(module: nn.Module) -> int:
    """Number of parameter elements (for the start-up line)."""
    return sum(p.numel() for p in module.parameters())
