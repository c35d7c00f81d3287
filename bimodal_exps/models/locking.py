"""Locking towers: full (frozen, eval mode, no autograd; LiT, Zhai et al. 2022) or partial (by parameter name)."""
from __future__ import annotations

from torch import nn


def parse_partial_lock(spec: str) -> tuple[list[str], bool]:
    """`"k1,k2"` -> (keywords, False); `"!k1,k2"` -> (keywords, True = freeze everything except the matches)."""
    text = (spec or "").strip()
    invert = text.startswith("!")
    keywords = [word.strip() for word in text.lstrip("!").split(",") if word.strip()]
    return keywords, invert


def lock_partially(tower: nn.Module, spec: str) -> list[str]:
    """Freeze the tower parameters whose name contains a keyword of `spec` (`!` inverts); returns frozen names."""
    keywords, invert = parse_partial_lock(spec)
    if not keywords:
        return []
    frozen = []
    for name, parameter in tower.named_parameters():
        if any(word in name for word in keywords) != invert:
            parameter.requires_grad_(False)
            frozen.append(name)
    return frozen


def lock_fully(tower: nn.Module) -> None:
    """Freeze every parameter and switch to eval mode (BatchNorm statistics and dropout frozen)."""
    tower.requires_grad_(False)
    tower.eval()
