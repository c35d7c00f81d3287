"""iSogCLR and TempNet: robust GCL with individualised temperatures (losses spec §4, §5)."""
from __future__ import annotations

import math

import torch
from torch import Tensor

from .base import Batch, GCLLoss, LossOutput
from .estimator import NORMALIZERS, Normaliser
from .schedules import ETA_COSINE_KINDS, ETA_SCHEDULES, eta_at
from .tempnet import TempGenerator

G_CLIP = 5.0
SIDES = ("img", "txt")


def check_tau_range(tau_min: float, tau_max: float, tau_init: float | None = None) -> None:
    """0 < tau_min < tau_max, and tau_init (when there is one) inside [tau_min, tau_max]."""
    if not 0.0 < tau_min < tau_max:
        raise ValueError(f"need 0 < tau_min < tau_max, got tau_min={tau_min}, tau_max={tau_max}")
    if tau_init is not None and not tau_min <= tau_init <= tau_max:
        raise ValueError(f"tau_init={tau_init} outside [tau_min, tau_max] = [{tau_min}, {tau_max}]")


def individual_tau_step(tau: Tensor, m: Tensor, grad: Tensor, beta_u: float, eta: float, tau_min: float,
                        tau_max: float) -> tuple[Tensor, Tensor]:
    """iSogCLR's per-sample rule (§4.2 steps 6-7): m ← (1−β_u)·m + β_u·clip(G, ±5), τ ← clip(τ − η·m)."""
    m = (1.0 - beta_u) * m + beta_u * grad.clamp(-G_CLIP, G_CLIP)
    return (tau - eta * m).clamp(tau_min, tau_max), m


class ISogCLRLoss(GCLLoss):
    """Σ_δ mean_i [τ^δ_i·log g^δ_i(τ^δ_i) + ρ_δ·τ^δ_i] over the encoder and per-sample τ ∈ [τ_min, τ_max].
    Paper: Qiu et al., "Not All Semantics are Created Equal: Contrastive Self-supervised Learning with
    Automatic Temperature Individualization" (iSogCLR, ICML'23).

    Per visit: G_i = ℓ_i + ρ − E_w[h/τ_i] (the τ-derivative estimate), m_i ← (1−β_u)·m_i + β_u·clip(G_i, ±5),
    τ_i ← clip(τ_i − η·m_i, τ_min, τ_max); this step's loss uses the old τ_i.
    """

    def __init__(self, num_samples: int, tau_init: float = 0.01, rho_I: float = 6.0, rho_T: float = 6.0,
                 sogclr_gamma: float = 0.8, gamma_schedule: str = "constant", gamma_decay_epochs: int | None = None,
                 state_init: str = "first_visit", gcl_normalizer: str = "negatives", eta_init: float = 0.03,
                 eta_sched: str = "const", eta_min: float = 1e-4, eta_exp_gamma: float = 0.8,
                 eta_cosine: str = "quarter", eta_exp_parity: bool = False, beta_u: float = 0.9,
                 tau_min: float = 0.005, tau_max: float = 0.05, dist_mode: str = "autograd") -> None:
        check_tau_range(tau_min, tau_max, tau_init)
        fields = {f"{k}_{s}": v for k, v in (("log_u", -math.inf), ("tau", tau_init), ("m", 0.0)) for s in SIDES}
        super().__init__(num_samples, fields, sogclr_gamma, gamma_schedule, gamma_decay_epochs, state_init,
                         dist_mode=dist_mode)
        if gcl_normalizer not in NORMALIZERS:
            raise ValueError(f"gcl_normalizer must be one of {NORMALIZERS}, got {gcl_normalizer!r}")
        if eta_sched not in ETA_SCHEDULES or eta_cosine not in ETA_COSINE_KINDS:
            raise ValueError(f"eta_sched must be one of {ETA_SCHEDULES} and eta_cosine one of {ETA_COSINE_KINDS}")
        self.rho = {"img": float(rho_I), "txt": float(rho_T)}
        self.gcl_normalizer = gcl_normalizer
        self.eta_args = (eta_init, eta_sched, eta_min, eta_exp_gamma, eta_cosine, eta_exp_parity)
        self.beta_u, self.tau_min, self.tau_max = float(beta_u), float(tau_min), float(tau_max)

    @property
    def eta(self) -> float:
        """η of the current epoch (losses spec §4.4)."""
        eta_init, sched, eta_min, kappa, kind, parity = self.eta_args
        return eta_at(self.epoch, self.num_epochs, eta_init, sched, eta_min, kappa, kind, parity)

    def _compute(self, batch: Batch) -> LossOutput:
        h = dict(zip(SIDES, batch.differences()))
        norm, gamma, eta = Normaliser.named(self.gcl_normalizer, batch.size), self.gamma, self.eta
        loss, new, stats, terms = 0.0, {}, {}, []
        objective = h["img"].new_zeros(())
        for s in SIDES:
            tau = self.read(f"tau_{s}", batch.ids, h[s].dtype)
            d = self.direction(h[s], batch, tau, f"log_u_{s}", norm, gamma)
            terms.append(d.row_term(s))
            grad = d.rgcl_grad(h[s], tau, self.rho[s])
            tau_new, m = individual_tau_step(tau, self.read(f"m_{s}", batch.ids, h[s].dtype), grad, self.beta_u,
                                             eta, self.tau_min, self.tau_max)
            new.update({f"log_u_{s}": d.log_u, f"tau_{s}": tau_new, f"m_{s}": m})
            loss = loss + d.surrogate(h[s]).mean()
            objective = objective + (tau * (d.log_u + self.rho[s])).mean()
            stats.update({f"tau_{s}": tau.mean(), f"grad_tau_{s}": grad.mean()})
        skipped, candidates = self.write(batch, new, terms)
        stats.update({"gamma": objective.new_full((), gamma), "eta": objective.new_full((), eta),
                      "objective": objective, "nonfinite": skipped})
        return LossOutput(loss + candidates, stats)


class TempNetLoss(GCLLoss):
    """iSogCLR's objective with τ^δ_i = T_θδ(sg(feature)) predicted by one temperature network per modality.
    Paper: Qiu et al., "To Cool or not to Cool? Temperature Network Meets Large Foundation Models via DRO" (TempNet, ICML'24).

    loss = L_c + L_TN: L_c is the τ-scaled GCL surrogate at sg(τ); L_TN = Σ_δ mean_i G^δ_i·τ^δ_θ,i with the
    detached, unclipped G, whose θ-gradient is that of the RGCL. τ is computed for local anchors only and
    the state is written by its owner, so per-rank dropout cannot make the replicas diverge (§5.7); in
    fastclip mode the owner's τ also reaches the other ranks' candidate part. The networks read detached
    features, so they add no feature gradient.
    The networks' parameters form an "own" group (separate Adam at lr_temp_net·0.9^epoch).
    """

    def __init__(self, num_samples: int, embed_dim: int = 256, rho_I: float = 7.0, rho_T: float = 7.0,
                 sogclr_gamma: float = 0.8, gamma_schedule: str = "constant", gamma_decay_epochs: int | None = None,
                 state_init: str = "first_visit", tau_min: float = 0.005, tau_max: float = 0.05,
                 tempnet_design: str = "tnet", tempnet_protos: int = 256, tempnet_dropout: float = 0.5,
                 tempnet_proto_init: bool = True, dist_mode: str = "autograd") -> None:
        check_tau_range(tau_min, tau_max)
        fields = {f"log_u_{s}": -math.inf for s in SIDES}
        super().__init__(num_samples, fields, sogclr_gamma, gamma_schedule, gamma_decay_epochs, state_init,
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
        h = dict(zip(SIDES, batch.differences()))
        taus = {"img": self.temp_gen_img(batch.img).to(batch.img.dtype),
                "txt": self.temp_gen_txt(batch.txt).to(batch.img.dtype)}
        norm, gamma = Normaliser.negatives_only(batch.size), self.gamma
        loss_c, loss_tn, new, stats, terms = 0.0, 0.0, {}, {}, []
        objective = h["img"].new_zeros(())
        for s in SIDES:
            tau = taus[s].detach()
            d = self.direction(h[s], batch, tau, f"log_u_{s}", norm, gamma)
            terms.append(d.row_term(s))
            grad = d.rgcl_grad(h[s], tau, self.rho[s])
            new[f"log_u_{s}"] = d.log_u
            loss_c = loss_c + d.surrogate(h[s]).mean()
            loss_tn = loss_tn + (grad * taus[s]).mean()
            objective = objective + (tau * (d.log_u + self.rho[s])).mean()
            stats.update({f"tau_{s}": tau.mean(), f"grad_tau_{s}": grad.mean()})
        skipped, candidates = self.write(batch, new, terms)
        stats.update({"gamma": objective.new_full((), gamma), "loss_temp": loss_tn.detach(),
                      "objective": objective, "nonfinite": skipped})
        return LossOutput(loss_c + candidates + loss_tn, stats)
