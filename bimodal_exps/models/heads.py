"""Projection heads from a tower's width to the joint space, and the joint size they imply.

Heads follow ITRA/DINO: 0 layers = identity, 1 = one Linear (the original `vision_proj`/`text_proj`,
so older checkpoints keep their keys), n >= 2 = an MLP Linear -> GELU -> ... -> Linear whose hidden width
is `hidden_dim` (DINO's head, Caron et al. 2021, without its prototype layer).
"""
from __future__ import annotations

from torch import nn

from models.config import ModelBuildError


class HeadDimensionError(ModelBuildError):
    """Head layer counts and tower widths that cannot produce one joint embedding size."""


def build_head(in_dim: int, out_dim: int, layers: int, hidden_dim: int = 2048, batch_norm: bool = False,
               activation: type[nn.Module] = nn.GELU) -> nn.Module:
    """Head of `layers` Linear layers mapping `in_dim` to `out_dim` (0 = identity; needs in_dim == out_dim), with
    `activation` (and optionally BatchNorm) after each hidden Linear."""
    if layers < 0:
        raise HeadDimensionError(f"head layers must be >= 0, got {layers}")
    if layers == 0:
        if in_dim != out_dim:
            raise HeadDimensionError(f"a 0-layer head keeps the tower width {in_dim}, not {out_dim}")
        return nn.Identity()
    if layers == 1:
        return nn.Linear(in_dim, out_dim)
    blocks: list[nn.Module] = []
    width = in_dim
    for _ in range(layers - 1):
        blocks.append(nn.Linear(width, hidden_dim))
        if batch_norm:
            blocks.append(nn.BatchNorm1d(hidden_dim))
        blocks.append(activation())
        width = hidden_dim
    blocks.append(nn.Linear(width, out_dim))
    head = nn.Sequential(*blocks)
    for module in head.modules():
        if isinstance(module, nn.Linear):
            nn.init.trunc_normal_(module.weight, std=0.02)
            nn.init.zeros_(module.bias)
    return head


def resolve_embed_dim(image_dim: int, text_dim: int, image_layers: int, text_layers: int,
                      embed_dim: int) -> tuple[int, str | None]:
    """ITRA's rule: a side without a head fixes the joint size to its tower width. Returns (size, note or None)."""
    if image_layers == 0 and text_layers == 0:
        if image_dim != text_dim:
            raise HeadDimensionError(
                f"--image_head_layers 0 and --text_head_layers 0 need equal tower widths, got image {image_dim} "
                f"and text {text_dim}; give one side a head (--image_head_layers/--text_head_layers >= 1)")
        return image_dim, None if image_dim == embed_dim else f"embed_dim = tower width {image_dim} (no heads)"
    for side, layers, width in (("image", image_layers, image_dim), ("text", text_layers, text_dim)):
        if layers == 0:
            note = None if width == embed_dim else f"embed_dim = {side} tower width {width} (--{side}_head_layers 0)"
            return width, note
    return embed_dim, None
