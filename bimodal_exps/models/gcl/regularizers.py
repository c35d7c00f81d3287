"""Feature regularisers added to GCL losses (docs/losses.md §7, §8).

They act on the global features, identically on every rank (through `Batch.replicated`), so after
DDP's averaging the resulting gradient is exactly that of the single-process batch in both dist modes.
"""
from __future__ import annotations

import torch
from torch import Tensor


def off_diagonal_cov(x: Tensor) -> Tensor:
    """C(X) = (1/d)·Σ_{k≠l} Cov(X)_kl², Cov = (X − mean)ᵀ(X − mean)/(B−1) (VICReg covariance term)."""
    xc = x - x.mean(dim=0)
    cov = xc.T @ xc / (x.shape[0] - 1)
    return (cov.square().sum() - cov.diagonal().square().sum()) / x.shape[1]


def variance_hinge(x: Tensor, target: float = 1.0) -> Tensor:
    """V(X) = mean_k relu(target − √(Var_k(X) + 1e-4)) (VICReg variance term, unbiased variance)."""
    return torch.relu(target - torch.sqrt(x.var(dim=0) + 1e-4)).mean()
