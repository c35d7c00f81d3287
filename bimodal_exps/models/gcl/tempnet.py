"""Temperature networks of TempNet (losses spec §5.3, §5.4).

A network maps a detached, l2-normalised embedding x ∈ ℝ^d to a temperature:
  a = Dropout(sigmoid(W_p x + b_p)); q = a·P̂ᵀ (P̂: row-normalised prototypes, M of them);
  π = softmax(q / e^κ); σ = sigmoid(q)
  tnet: r = Σ_m v_m (π_m − 1/M) σ_m + c,           τ = τ_min + (τ_max − τ_min)·sigmoid(r) ∈ (τ_min, τ_max)
  dtn:  r = [Σ_m v_m π_m σ_m + c − Σ_m v'_m σ_m / M] / divisor,   τ = max(r, 0.001)  ("design 3")
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

TEMPNET_DESIGNS = ("tnet", "dtn")
DTN_TAU_FLOOR = 0.001


class TempGenerator(nn.Module):
    """One modality's temperature network (TNET `TempGenerator`, or DTN design 3)."""

    def __init__(self, dim: int, num_protos: int = 256, tau_min: float = 0.005, tau_max: float = 0.05,
                 dropout: float = 0.5, design: str = "tnet", divisor: float = 1.0) -> None:
        super().__init__()
        if design not in TEMPNET_DESIGNS:
            raise ValueError(f"tempnet_design must be one of {TEMPNET_DESIGNS}, got {design!r}")
        if design == "dtn" and divisor <= 0.0:
            raise ValueError(f"the DTN TempNet divides by ρ, which must be positive (got {divisor})")
        self.design, self.tau_min, self.tau_max, self.divisor = design, tau_min, tau_max, divisor
        self.proj = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(dropout)
        self.prototypes = nn.Parameter(torch.randn(num_protos, dim))
        self.log_kappa = nn.Parameter(torch.tensor(math.log(0.01)))
        self.head = nn.Linear(num_protos, 1)
        nn.init.ones_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        if design == "dtn":
            self.head_neg = nn.Linear(num_protos, 1, bias=False)
            nn.init.ones_(self.head_neg.weight)

    @torch.no_grad()
    def init_prototypes(self, features: Tensor) -> None:
        """Overwrite the first min(M, n) prototypes with `features` rows (TNET's first-batch init)."""
        k = min(self.prototypes.shape[0], features.shape[0])
        self.prototypes[:k] = features[:k].to(self.prototypes.dtype)

    def forward(self, x: Tensor) -> Tensor:
        """[n, d] embeddings -> [n] temperatures (gradient only w.r.t. the network's parameters)."""
        a = self.dropout(torch.sigmoid(self.proj(x.detach().to(self.proj.weight.dtype))))
        q = a @ F.normalize(self.prototypes, dim=1).T
        pi = torch.softmax(q / self.log_kappa.exp(), dim=1)
        sig = torch.sigmoid(q)
        num_protos = q.shape[1]
        if self.design == "tnet":
            r = self.head((pi - 1.0 / num_protos) * sig).squeeze(1)
            return self.tau_min + (self.tau_max - self.tau_min) * torch.sigmoid(r)
        r = (self.head(pi * sig) - self.head_neg(sig) / num_protos).squeeze(1) / self.divisor
        return r.clamp(min=DTN_TAU_FLOOR)
