"""Closed-form references for the unimodal losses, written from docs/losses.md §13 (independent of models.gcl)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def two_views(n: int, d: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two [n, d] float64 l2-normalised leaf tensors (views a, b) with requires_grad."""
    g = torch.Generator().manual_seed(seed)
    a = F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=1)
    b = F.normalize(a + 0.7 * torch.randn(n, d, generator=g, dtype=torch.float64), dim=1)
    return a.requires_grad_(), b.requires_grad_()


def negatives(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw cosines of every anchor to its 2(n−1) negatives: [n, 2(n−1)] for view-a and view-b anchors."""
    n = a.shape[0]
    off = ~torch.eye(n, dtype=torch.bool)
    neg_a = torch.cat([(a @ b.T)[off].view(n, n - 1), (a @ a.T)[off].view(n, n - 1)], dim=1)
    neg_b = torch.cat([(b @ a.T)[off].view(n, n - 1), (b @ b.T)[off].view(n, n - 1)], dim=1)
    return neg_a, neg_b


def g_hat(neg: torch.Tensor, temp: float) -> torch.Tensor:
    """(1/(2(n−1))) Σ_neg exp(l/T), per anchor."""
    return torch.exp(neg / temp).mean(dim=1)


def sogclr_closed_form(a: torch.Tensor, b: torch.Tensor, temp: float) -> torch.Tensor:
    """mean_i Σ_{v∈{a,b}} [T·log ĝ^v_i − l_pos_i] (the γ = 1 objective)."""
    neg_a, neg_b = negatives(a, b)
    l_pos = (a * b).sum(dim=1)
    return (temp * (g_hat(neg_a, temp).log() + g_hat(neg_b, temp).log()) - 2 * l_pos).mean()


def sogclr_linearised(a: torch.Tensor, b: torch.Tensor, temp: float, u_a: torch.Tensor,
                      u_b: torch.Tensor) -> torch.Tensor:
    """mean_i Σ_v [(T/u^v_i)·ĝ^v_i − l_pos_i] with fixed u: its gradient is the SogCLR gradient for any u."""
    neg_a, neg_b = negatives(a, b)
    l_pos = (a * b).sum(dim=1)
    return (temp * (g_hat(neg_a, temp) / u_a + g_hat(neg_b, temp) / u_b) - 2 * l_pos).mean()


def nt_xent(a: torch.Tensor, b: torch.Tensor, temp: float) -> torch.Tensor:
    """mean_i Σ_v −log( exp(l_pos/T) / (exp(l_pos/T) + Σ_neg exp(l/T)) )."""
    neg_a, neg_b = negatives(a, b)
    l_pos = (a * b).sum(dim=1, keepdim=True) / temp
    ce_a = -l_pos[:, 0] + torch.logsumexp(torch.cat([l_pos, neg_a / temp], dim=1), dim=1)
    ce_b = -l_pos[:, 0] + torch.logsumexp(torch.cat([l_pos, neg_b / temp], dim=1), dim=1)
    return (ce_a + ce_b).mean()
