"""Loss registry: `--ita_type` names (docs/losses.md lists each loss), hyper-parameter flags and `build_loss`.

The CLI generates its loss flags from `LOSS_HPARAMS` (defaults and help live here only) and warns
about explicitly set flags outside `used_hparams(ita_type)`. A default of None means "the loss's own
default" (e.g. `temp` is 0.01 for CLIP/SogCLR and 0.07 for FastCLIP). The math lives in `models.gcl`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from models.gcl.base import DIST_MODES, ContrastiveLoss, LossOutput
from models.gcl.clip_loss import CLIPLoss
from models.gcl.core import GCLLoss
from models.gcl.estimator import NORMALIZERS, STATE_INITS
from models.gcl.fastclip import (LR_TAU_SCHEDULERS, V3_TAU_GRADS, FastCLIPv0Loss, FastCLIPv1Loss, FastCLIPv2Loss,
                                 FastCLIPv3Loss)
from models.gcl.hybrid import HYBRID_STD, HybridSogCLRLoss
from models.gcl.isogclr import ISogCLRLoss
from models.gcl.siglip import SigLIPLoss
from models.gcl.schedules import ETA_COSINE_KINDS, ETA_SCHEDULES, GAMMA_SCHEDULES
from models.gcl.sogclr import InfoSogCLRLoss, SogCLRLoss
from models.gcl.tempnet import TEMPNET_DESIGNS, TempNetLoss
from models.objectives.base import TEACHERS
from models.objectives.protoclip import ProtoCLIPLoss
from models.objectives.prototypes import DINOLoss, ProtoCPCLoss
from models.objectives.queues import CompRessLoss, SEEDLoss
from models.objectives.regression import BT_NORMS, BarlowTwinsLoss, SimRegLoss, VICRegLoss
from models.objectives.rkd import RKDLoss

__all__ = ["DISTILL_TYPES", "ITA_TYPES", "LOSS_HPARAMS", "LossHParam", "LossOutput", "ContrastiveLoss", "GCLLoss",
           "build_loss", "used_hparams"]


@dataclass(frozen=True)
class LossHParam:
    """One loss flag: argparse type, default (None = the loss's own default), help, optional choices, and for
    numbers the allowed range in interval notation (e.g. "(0, 1]"), checked when the flags are parsed."""

    type: type
    default: Any
    help: str
    choices: tuple | None = None
    within: str | None = None


LOSS_HPARAMS: dict[str, LossHParam] = {
    "temp": LossHParam(float, None, "temperature τ: fixed for clip/sogclr/sogclr_mine (default 0.01), initial "
                                    "value for fastclip_v0/v3 and protoclip's InfoNCE term and constant for "
                                    "fastclip_v1 (default 0.07)",
                       within="(0, inf)"),
    "learnable_temp": LossHParam(bool, False, "clip: learn log τ (no weight decay, clamped to [0.001, 0.5])"),
    "sogclr_gamma": LossHParam(float, None, "γ, weight of the new batch estimate in the moving average "
                                            "(γ_min of the cosine schedule); default 0.8, fastclip 0.2",
                               within="(0, 1]"),
    "gamma_schedule": LossHParam(str, None, "γ schedule by epoch: constant, or cosine from 1 at epoch 0 to "
                                            "sogclr_gamma at gamma_decay_epochs (default constant, fastclip cosine)",
                                 GAMMA_SCHEDULES),
    "gamma_decay_epochs": LossHParam(int, None, "epochs of the cosine γ decay (default: half of the epochs)",
                                     within="[1, inf)"),
    "state_init": LossHParam(str, "first_visit", "initial moving average: first_visit (u = ĝ on a sample's first "
                                                 "visit), zero (u = 0) or epoch0 (u = ĝ throughout epoch 0)",
                             STATE_INITS),
    "gcl_normalizer": LossHParam(str, "negatives", "normaliser of ĝ: negatives only, or positive_included "
                                                   "(ISOG reference parity; HybridSogCLR parity)", NORMALIZERS),
    "tau_init": LossHParam(float, None, "initial per-sample τ (isogclr 0.01, fastclip_v2 0.03); "
                                        "hybrid: base temperature τ₀ (0.01)", within="(0, inf)"),
    "rho_init": LossHParam(float, None, "DRO radius ρ for both modalities (overridden by --rho, --rho_I/--rho_T)",
                           within="[0, inf)"),
    "rho": LossHParam(float, None, "ρ for both modalities (default: isogclr 6.0, tempnet 7.0, "
                                   "fastclip_v2 7.0, fastclip_v3 6.5)", within="[0, inf)"),
    "rho_I": LossHParam(float, None, "ρ of the image anchors (most specific flag wins)", within="[0, inf)"),
    "rho_T": LossHParam(float, None, "ρ of the text anchors (most specific flag wins)", within="[0, inf)"),
    "eta_init": LossHParam(float, 0.03, "step size η of the per-sample τ update of iSogCLR", within="[0, inf)"),
    "eta_sched": LossHParam(str, "const", "schedule of η by epoch", ETA_SCHEDULES),
    "eta_min": LossHParam(float, 1e-4, "final η of the cosine/exp schedules", within="[0, inf)"),
    "eta_exp_gamma": LossHParam(float, 0.8, "decay factor κ of the exp η schedule", within="(0, 1]"),
    "eta_cosine": LossHParam(str, "quarter", "cosine η shape: quarter (reference) or half", ETA_COSINE_KINDS),
    "eta_exp_parity": LossHParam(bool, False, "exp η schedule with the reference's exponent epoch−1"),
    "beta_u": LossHParam(float, 0.9, "weight of the new clipped τ-gradient in iSogCLR's momentum", within="[0, 1]"),
    "tau_min": LossHParam(float, None, "lower bound of τ (isogclr/tempnet 0.005, fastclip_v2 0.01)",
                          within="(0, inf)"),
    "tau_max": LossHParam(float, None, "upper bound of τ (isogclr/tempnet 0.05, fastclip_v2 1.0)",
                          within="(0, inf)"),
    "cov_coeff": LossHParam(float, None, "weight of the off-diagonal covariance penalty on both modalities "
                                         "(sogclr_mine 1.0, hybrid 0.0)", within="[0, inf)"),
    "std_coeff": LossHParam(float, None, "weight of the variance hinge on both modalities (sogclr_mine 0.0, "
                                         "sogclr_v2_mine 5.0, hybrid 0.0); always active on unit-norm features",
                            within="[0, inf)"),
    "info_alpha": LossHParam(str, "0", "InfoSogCLR positive mass α in [0, 1), or 'batch' for α = 1/B "
                                       "(InfoNCE parity)"),
    "individual_tau": LossHParam(bool, False, "InfoSogCLR: learn a τ per sample and modality with iSogCLR's rule "
                                              "(--tau_init, --rho, --eta_init, --beta_u, --tau_min/--tau_max)"),
    "hybrid_parity": LossHParam(bool, False, "hybrid: reproduce the HYB reference (capped weights, 8192 state "
                                             "slots, epoch0, positive included, its C and Δ terms)"),
    "hybrid_std": LossHParam(str, "unbiased", "hybrid: std estimator of the adaptive temperature", HYBRID_STD),
    "tempnet_design": LossHParam(str, "tnet", "TempNet architecture: tnet (TempNet paper) or dtn (DistTempNet "
                                              "design 3)", TEMPNET_DESIGNS),
    "tempnet_protos": LossHParam(int, 256, "number of TempNet prototypes M", within="[1, inf)"),
    "tempnet_dropout": LossHParam(float, 0.5, "dropout of the TempNet projection (train mode only)", within="[0, 1)"),
    "tempnet_proto_init": LossHParam(bool, True, "initialise TempNet prototypes from the first global batch "
                                                 "(other modality)"),
    "lr_tau": LossHParam(float, None, "fastclip τ learning rate: v0 lr of θ = log(1/τ) on the main schedule "
                                      "(default --lr), v2 step of the per-sample rule (0.0133), v3 lr of θ's "
                                      "own Adam, /3 once τ ≤ 0.03 (2e-4)", within="[0, inf)"),
    "lr_tau_scheduler": LossHParam(str, None, "fastclip v0/v3 lr of θ = log(1/τ): cosine (the model's schedule; "
                                              "v0 default), const, or step_thresh (÷3 once τ ≤ 0.03; v3 default)",
                                   LR_TAU_SCHEDULERS),
    "tau_beta1": LossHParam(float, 0.9, "fastclip_v2: β1 of the per-sample τ rule (0 during epoch 0)",
                            within="[0, 1)"),
    "tau_beta2": LossHParam(float, 0.999, "fastclip_v2: β2 of the per-sample τ rule (0 during epoch 0)",
                            within="[0, 1)"),
    "tau_eps": LossHParam(float, 1e-8, "fastclip_v2: eps of the per-sample τ rule", within="(0, inf)"),
    "v3_tau_grad": LossHParam(str, "reference", "fastclip_v3 τ-gradient: reference (E_w term counted twice, "
                                                "as tuned upstream) or consistent", V3_TAU_GRADS),
    "dist_mode": LossHParam(str, "autograd", "multi-process gradient of the candidates: autograd (all-gather whose "
                                             "backward reduces B×d feature gradients over ranks) or fastclip "
                                             "(gather without grad plus FastCLIP's local candidate part: same "
                                             "gradients, no collective in the backward); identical in one process",
                            DIST_MODES),
    "loss_tile": LossHParam(int, 0, "compute the loss and its gradient in blocks of N rows and columns, so no "
                                    "B×B similarity/weight matrix exists (memory O(N² + B·d)); 0 = untiled. "
                                    "clip, siglip and the GCL losses", within="[0, inf)"),
    "teacher": LossHParam(str, "text", "distillation objectives: the tower whose features are the teacher t "
                                       "(uni-directional objectives send it no gradient)", TEACHERS),
    "w_distill": LossHParam(float, 1.0, "distillation objectives: weight of the objective in the loss", within="[0, inf)"),
    "w_simcse": LossHParam(float, 0.0, "distillation objectives: weight of ITRA's SimCSE term (InfoNCE at τ = 0.05 "
                                       "between two text forwards with different dropout; 0 = off)", within="[0, inf)"),
    "vicreg_sim_coeff": LossHParam(float, 25.0, "vicreg: weight of the invariance (mean squared difference) term", within="[0, inf)"),
    "vicreg_std_coeff": LossHParam(float, 25.0, "vicreg: weight of the variance hinge", within="[0, inf)"),
    "vicreg_cov_coeff": LossHParam(float, 1.0, "vicreg: weight of the off-diagonal covariance term", within="[0, inf)"),
    "bt_lambda": LossHParam(float, 0.0051, "barlowtwins: weight λ of the off-diagonal cross-correlation", within="[0, inf)"),
    "bt_norm": LossHParam(str, "standard", "barlowtwins column normalisation: standard (the paper's) or itra "
                                           "(ITRA's l2 columns, parity only)", BT_NORMS),
    "w_rkd_d": LossHParam(float, 0.5, "rkd: weight of the distance term (0 skips it)", within="[0, inf)"),
    "w_rkd_a": LossHParam(float, 1.0, "rkd: weight of the angle term (0 skips it; O(B³), slow beyond B ≈ 1,024)", within="[0, inf)"),
    "memory_bank_size": LossHParam(int, 65536, "compress_1q/compress_2q/seed: queue length K (rows of past "
                                               "global batches)", within="[1, inf)"),
    "num_prototypes": LossHParam(int, 65536, "dino/protocpc: number of prototypes K", within="[1, inf)"),
    "distill_teacher_temp": LossHParam(float, None, "teacher temperature τ_t (compress 0.04, seed 1e-4, "
                                                    "dino/protocpc 0.04)", within="(0, inf)"),
    "distill_student_temp": LossHParam(float, None, "student temperature τ_s (compress 0.04, seed 0.07, "
                                                    "dino/protocpc 0.1)", within="(0, inf)"),
    "center_momentum": LossHParam(float, 0.9, "dino: momentum of the teacher centre; protocpc: of the prior", within="[0, 1]"),
    "w_clip": LossHParam(float, 1.0, "protoclip: weight of the InfoNCE term", within="[0, inf)"),
    "w_proto": LossHParam(float, 1.0, "protoclip: weight of the prototype term (targets from the other modality's "
                                      "clusters)", within="[0, inf)"),
    "w_proto_external": LossHParam(float, 1.0, "protoclip: weight of the external-teacher prototype term",
                                   within="[0, inf)"),
    "external_teacher": LossHParam(str, None, "protoclip: .npy of external teacher features [num_samples, d] (row = "
                                              "pair id, e.g. written by --cache_teacher) clustered for an extra "
                                              "target; needs --pbt"),
    "pbt": LossHParam(bool, False, "protoclip: prototype back translation (score each modality against the means "
                                   "of its own features over the other modality's clusters)"),
    "proto_k": LossHParam(int, 20000, "protoclip: number of k-means clusters k", within="[1, inf)"),
    "kmeans_iters": LossHParam(int, 20, "protoclip: k-means iterations", within="[1, inf)"),
    "kmeans_nredo": LossHParam(int, 1, "protoclip: k-means restarts (the lowest inertia is kept)", within="[1, inf)"),
    "clustering_freq": LossHParam(int, 1, "protoclip: cluster the epoch's pairs before epochs 0, N, 2N, … (0-based; "
                                          "0 = never)", within="[0, inf)"),
    "proto_target_temp": LossHParam(float, -1.0, "protoclip: temperature of the soft prototype targets "
                                                 "(<= 0: hard one-hot targets)", within="(-inf, inf)"),
    "proto_dim": LossHParam(int, 128, "protoclip: output width of the prototype heads", within="[1, inf)"),
    "proto_hidden_dim": LossHParam(int, 2048, "protoclip: hidden width of the prototype heads", within="[1, inf)"),
    "proto_layers": LossHParam(int, 1, "protoclip: hidden [Linear, BatchNorm, ReLU] blocks of the prototype heads",
                               within="[0, inf)"),
    "infonce_warmup_epochs": LossHParam(int, 0, "protoclip: train the InfoNCE term alone for the first N epochs",
                                        within="[0, inf)"),
}

_GCL = ("sogclr_gamma", "gamma_schedule", "gamma_decay_epochs", "state_init")
_RHO = ("rho_init", "rho", "rho_I", "rho_T")
_ISOG = (*_GCL, *_RHO, "gcl_normalizer", "tau_init", "eta_init", "eta_sched", "eta_min", "eta_exp_gamma",
         "eta_cosine", "eta_exp_parity", "beta_u", "tau_min", "tau_max")
_INDIVIDUAL_TAU = (*_RHO, "tau_init", "eta_init", "beta_u", "tau_min", "tau_max")  # InfoSogCLR's optional τ_i
_MINE = ("temp", *_GCL, "cov_coeff", "std_coeff", "info_alpha", "individual_tau", *_INDIVIDUAL_TAU)
_COMMON = ("dist_mode",)  # read by every loss (all support both distributed modes)
_DISTILL = ("teacher", "w_distill", "w_simcse")
_QUEUE = (*_DISTILL, "embed_dim", "memory_bank_size", "distill_teacher_temp", "distill_student_temp")
_PROTO = (*_DISTILL, "embed_dim", "num_prototypes", "distill_teacher_temp", "distill_student_temp",
          "center_momentum")

_OWN: dict[str, tuple[str, ...]] = {
    "clip": ("temp", "learnable_temp"),
    "sogclr": ("temp", *_GCL, "gcl_normalizer"),
    "isogclr": _ISOG,
    "isogclr_new": _ISOG,
    "sogclr_dro": _ISOG,
    "isogclr_tempnet": (*_GCL, *_RHO, "embed_dim", "tau_min", "tau_max", "tempnet_design", "tempnet_protos",
                        "tempnet_dropout", "tempnet_proto_init"),
    "sogclr_mine": _MINE,
    "infosogclr": _MINE,
    "sogclr_v2_mine": _MINE,
    "hybrid": (*_GCL, "tau_init", "gcl_normalizer", "cov_coeff", "std_coeff", "hybrid_parity", "hybrid_std"),
    "fastclip_v0": ("temp", *_GCL, "lr_tau", "lr_tau_scheduler"),
    "fastclip_v1": ("temp", *_GCL),
    "fastclip_v2": (*_GCL, *_RHO, "tau_init", "tau_min", "tau_max", "lr_tau", "tau_beta1", "tau_beta2", "tau_eps"),
    "fastclip_v3": ("temp", *_GCL, *_RHO, "lr_tau", "lr_tau_scheduler", "v3_tau_grad"),
    "siglip": (),
    "simreg": _DISTILL,
    "simreg_l1": _DISTILL,
    "simreg_smoothl1": _DISTILL,
    "vicreg": (*_DISTILL, "vicreg_sim_coeff", "vicreg_std_coeff", "vicreg_cov_coeff"),
    "barlowtwins": (*_DISTILL, "bt_lambda", "bt_norm"),
    "rkd": (*_DISTILL, "w_rkd_d", "w_rkd_a"),
    "compress_1q": _QUEUE,
    "compress_2q": _QUEUE,
    "seed": _QUEUE,
    "dino": _PROTO,
    "protocpc": _PROTO,
    "protoclip": ("temp", "embed_dim", "w_clip", "w_proto", "w_proto_external", "external_teacher", "pbt", "proto_k",
                  "kmeans_iters", "kmeans_nredo", "clustering_freq", "proto_target_temp", "proto_dim",
                  "proto_hidden_dim", "proto_layers", "infonce_warmup_epochs", "lit_start_epoch"),
}
_UNTILED = ("protoclip",)  # no teacher flag, yet no tiled form: its prototype terms need the whole global batch

DISTILL_TYPES: tuple[str, ...] = (*(name for name, own in _OWN.items() if "teacher" in own),
                                  *_UNTILED)  # docs/losses.md §15
_USED: dict[str, tuple[str, ...]] = {name: (*own, *_COMMON, *(("loss_tile",) if name not in DISTILL_TYPES else ()))
                                     for name, own in _OWN.items()}
ITA_TYPES: tuple[str, ...] = tuple(_USED)


def used_hparams(ita_type: str, individual_tau: bool = True) -> frozenset[str]:
    """The hyper-parameter flags that `ita_type` reads (with `individual_tau` off, InfoSogCLR reads no τ_i flag)."""
    _check_name(ita_type)
    used = frozenset(_USED[ita_type])
    if not individual_tau and "individual_tau" in used:
        used -= frozenset(_INDIVIDUAL_TAU)
    return used


def _check_name(ita_type: str) -> None:
    if ita_type not in _USED:
        raise ValueError(f"unknown ita_type {ita_type!r}; choices: {', '.join(ITA_TYPES)}")


def _resolve_rho(kw: dict[str, Any]) -> None:
    """`rho_init` < `rho` < `rho_I`/`rho_T`: the most specific given flag sets each modality."""
    rho_init = kw.pop("rho_init", None)
    general = kw.pop("rho", rho_init)
    for side in ("rho_I", "rho_T"):
        if kw.get(side) is None and general is not None:
            kw[side] = general


_BUILDERS: dict[str, Callable[..., ContrastiveLoss]] = {
    "clip": lambda n, **kw: CLIPLoss(**kw),
    "siglip": lambda n, **kw: SigLIPLoss(**kw),
    "sogclr": SogCLRLoss,
    "isogclr": ISogCLRLoss,
    "isogclr_new": ISogCLRLoss,
    "sogclr_dro": ISogCLRLoss,
    "isogclr_tempnet": TempNetLoss,
    "sogclr_mine": InfoSogCLRLoss,
    "infosogclr": InfoSogCLRLoss,
    "sogclr_v2_mine": lambda n, **kw: InfoSogCLRLoss(n, **{"std_coeff": 5.0, **kw}),
    "hybrid": HybridSogCLRLoss,
    "fastclip_v0": FastCLIPv0Loss,
    "fastclip_v1": FastCLIPv1Loss,
    "fastclip_v2": FastCLIPv2Loss,
    "fastclip_v3": FastCLIPv3Loss,
    "simreg": lambda n, **kw: SimRegLoss("l2", **kw),
    "simreg_l1": lambda n, **kw: SimRegLoss("l1", **kw),
    "simreg_smoothl1": lambda n, **kw: SimRegLoss("smoothl1", **kw),
    "vicreg": lambda n, **kw: VICRegLoss(**kw),
    "barlowtwins": lambda n, **kw: BarlowTwinsLoss(**kw),
    "rkd": lambda n, **kw: RKDLoss(**kw),
    "compress_1q": lambda n, **kw: CompRessLoss(False, **kw),
    "compress_2q": lambda n, **kw: CompRessLoss(True, **kw),
    "seed": lambda n, **kw: SEEDLoss(**kw),
    "dino": lambda n, **kw: DINOLoss(**kw),
    "protocpc": lambda n, **kw: ProtoCPCLoss(**kw),
    "protoclip": ProtoCLIPLoss,
}


def build_loss(ita_type: str, num_samples: int, **hparams: Any) -> ContrastiveLoss:
    """Build the loss `ita_type` with state for `num_samples` pair ids.

    Hyper-parameters are named as the CLI flags; those the loss does not use, and None values
    (= the loss's own default), are ignored. Besides `LOSS_HPARAMS`, `isogclr_tempnet` and the queue and
    prototype objectives read `embed_dim` (the model's flag, default 256), which sizes their networks and state,
    and `protoclip` reads `lit_start_epoch` (the optimiser's flag), which starts its InfoNCE-only LiT phase.
    """
    _check_name(ita_type)
    used = _USED[ita_type]
    kw = {k: v for k, v in hparams.items() if k in used and v is not None}
    if any(k in used for k in _RHO):
        _resolve_rho(kw)
    tile = kw.pop("loss_tile", 0)
    if hparams.get("loss_tile") and "loss_tile" not in used:
        raise ValueError(f"--loss_tile is not supported by --ita_type {ita_type} (clip, siglip and the GCL losses)")
    loss = _BUILDERS[ita_type](num_samples, **kw)
    loss.set_loss_tile(tile)
    return loss
