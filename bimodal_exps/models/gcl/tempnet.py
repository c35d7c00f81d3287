"""TempNet: iSogCLR's objective with temperatures predicted by networks (docs/losses.md §6).

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

from .base import Batch, LossOutput
from .core import GCLLoss, Step
from .estimator import Direction
from .temperature import check_tau_range

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


class TempNetLoss(GCLLoss):
    """iSogCLR's objective with τ^δ_i = T_θδ(sg(feature)) predicted by one temperature network per modality.
    Paper: Qiu et al., "To Cool or not to Cool? Temperature Network Meets Large Foundation Models via DRO" (TempNet, ICML'24).

    loss = L_c + L_TN: L_c is the τ-scaled GCL surrogate at sg(τ); L_TN = Σ_δ mean_i G^δ_i·τ^δ_θ,i with the
    detached, unclipped G, whose θ-gradient is that of the RGCL. τ is computed for local anchors only and
    the state is written by its owner, so per-rank dropout cannot make the replicas diverge; in fastclip
    mode the owner's τ also reaches the other ranks' candidate part. The networks read detached
    features, so they add no feature gradient.
    The networks' parameters form an "own" group (separate Adam at lr_temp_net·0.9^epoch).
    """

    def __init__(self, num_samples: int, embed_dim: int = 256, rho_I: float = 7.0, rho_T: float = 7.0,
                 sogclr_gamma: float = 0.8, gamma_schedule: str = "constant", gamma_decay_epochs: int | None = None,
                 state_init: str = "first_visit", tau_min: float = 0.005, tau_max: float = 0.05,
                 tempnet_design: str = "tnet", tempnet_protos: int = 256, tempnet_dropout: float = 0.5,
                 tempnet_proto_init: bool = True, dist_mode: str = "autograd") -> None:
        check_tau_range(tau_min, tau_max)
        super().__init__(num_samples, sogclr_gamma, gamma_schedule, gamma_decay_epochs, state_init,
                         dist_mode=dist_mode)
        self.rho = {"img": float(rho_I), "txt": float(rho_T)}
        self.embed_dim = int(embed_dim)
        common = {"num_protos": tempnet_protos, "tau_min": tau_min, "tau_max": tau_max,
                  "dropout": tempnet_dropout, "design": tempnet_design}
        self.temp_gen_img = TempGenerator(self.embed_dim, divisor=self.rho["img"], **common)
        self.temp_gen_txt = TempGenerator(self.embed_dim, divisor=self.rho["txt"], **common)
        self.tempnet_proto_init = tempnet_proto_init
        self.register_buffer("protos_initialised", torch.tensor(not tempnet_proto_init))
        self._protos_ready = not tempnet_proto_init  # host-side cache of the buffer (avoids a sync per step)

    def param_groups(self) -> list[dict]:
        params = [*self.temp_gen_img.parameters(), *self.temp_gen_txt.parameters()]
        return [{"params": params, "weight_decay": 0.0, "optimizer": "own"}]

    def own_lr(self, base_lr: float, epoch: int) -> float:
        """TNET/DTN decay the networks' lr (`--lr_temp_net`) by 0.9 per epoch."""
        return base_lr * 0.9 ** epoch

    def _load_from_state_dict(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003 (nn.Module signature)
        super()._load_from_state_dict(*args, **kwargs)
        self._protos_ready = False

    def _init_prototypes(self, batch: Batch) -> None:
        """Once per run: prototypes ← the other modality's first global embeddings (identical on all ranks)."""
        if not bool(self.protos_initialised):
            self.temp_gen_img.init_prototypes(batch.all_txt.detach())
            self.temp_gen_txt.init_prototypes(batch.all_img.detach())
            self.protos_initialised.fill_(True)
        self._protos_ready = True

    def _compute(self, batch: Batch) -> LossOutput:
        if batch.img.shape[1] != self.embed_dim:
            raise ValueError(f"TempNet was built for embed_dim={self.embed_dim} but the features have width "
                             f"{batch.img.shape[1]}; pass embed_dim to build_loss")
        if not self._protos_ready:
            self._init_prototypes(batch)
        return super()._compute(batch)

    def anchor_tau(self, step: Step) -> dict[str, Tensor]:
        dtype = step.batch.img.dtype
        return {"img": self.temp_gen_img(step.batch.img).to(dtype), "txt": self.temp_gen_txt(step.batch.txt).to(dtype)}

    def extra_loss(self, step: Step, side: str, d: Direction) -> Tensor:
        """L_TN's side term mean_i G_i·τ_θ,i (G detached): its θ-gradient is the RGCL's."""
        grad = d.rgcl_grad(self.rho[side])
        term = (grad.to(step.tau[side].dtype) * step.tau[side]).mean()
        step.stats[f"grad_tau_{side}"] = grad.mean()
        step.stats["loss_temp"] = step.stats.get("loss_temp", 0.0) + term.detach()
        return term
