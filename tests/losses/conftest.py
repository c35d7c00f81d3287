"""Closed-form references for the loss tests (written from the formulas of docs/losses.md, independent of models.gcl)."""
from __future__ import annotations

import types

import pytest
import torch
import torch.nn.functional as F


def unit_features(b: int, d: int, seed: int, dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """Two [b, d] l2-normalised leaf tensors (image, text) with requires_grad."""
    g = torch.Generator().manual_seed(seed)
    e = F.normalize(torch.randn(b, d, generator=g, dtype=torch.float64), dim=1).to(dtype)
    z = F.normalize(torch.randn(b, d, generator=g, dtype=torch.float64), dim=1).to(dtype)
    return e.requires_grad_(), z.requires_grad_()


def differences(e: torch.Tensor, z: torch.Tensor) -> dict[str, torch.Tensor]:
    """h^I_ij = S_ij − S_ii (image anchors), h^T_ij = S_ji − S_ii (text anchors), full B×B."""
    s = e @ z.T
    pos = s.diagonal().unsqueeze(1)
    return {"img": s - pos, "txt": s.T - pos}


def log_g_hat(h: torch.Tensor, tau, alpha: float = 0.0) -> torch.Tensor:
    """log( α + (1−α)·mean_{j≠i} exp(h_ij/τ_i) ), naive (moderate x only); tau scalar or [B]."""
    b = h.shape[0]
    tau = torch.as_tensor(tau, dtype=h.dtype).reshape(-1, 1) if torch.is_tensor(tau) else tau
    off = ~torch.eye(b, dtype=torch.bool)
    ex = torch.exp(h / tau) * off
    return torch.log(alpha + (1 - alpha) * ex.sum(1) / (b - 1))


def clip_loss(e: torch.Tensor, z: torch.Tensor, tau) -> torch.Tensor:
    """½·[CE(S/τ) + CE(Sᵀ/τ)] with the positives on the diagonal."""
    s = e @ z.T / tau
    target = torch.arange(e.shape[0])
    return 0.5 * (F.cross_entropy(s, target) + F.cross_entropy(s.T, target))


def grads(loss: torch.Tensor, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    return torch.autograd.grad(loss, tensors, allow_unused=False)


@pytest.fixture
def ref() -> types.SimpleNamespace:
    """The reference helpers as one namespace (works with any pytest import mode)."""
    return types.SimpleNamespace(unit=unit_features, diff=differences, log_g=log_g_hat, clip=clip_loss, grads=grads)
