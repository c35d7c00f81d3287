"""ITRA's loss selection on clip.py: `--loss NAME` (alias `--distiller`) picks the --ita_type (docs/losses.md §15)."""
from __future__ import annotations

import argparse

from cli.flags import add_flag
from cli.ranges import POSITIVE
from models.losses import ITA_TYPES

# ITRA's names, lower-cased with '_' read as '-'; ProtoRKD has the same math as DINO in the ITRA source
ITRA_LOSSES = {"infonce": "clip", "simreg": "simreg", "simreg-l1": "simreg_l1", "simreg-smoothl1": "simreg_smoothl1",
               "vicreg": "vicreg", "barlowtwins": "barlowtwins", "rkd": "rkd", "compress-1q": "compress_1q",
               "compress-2q": "compress_2q", "seed": "seed", "dino": "dino", "protorkd": "dino",
               "protocpc": "protocpc", "protoclip": "protoclip"}
# ITRA and ProtoCLIP spellings of loss hyper-parameter flags
LOSS_FLAG_ALIASES = {"distill_teacher_temp": ("--dino_teacher_temp",), "pbt": ("--PBT",), "proto_k": ("--k",),
                     "kmeans_iters": ("--kmeans-max-iter",), "clustering_freq": ("--clustering-frequency",),
                     "proto_target_temp": ("--target-temperature",), "proto_dim": ("--projection-dim",),
                     "proto_hidden_dim": ("--projection-hidden-dim",), "proto_layers": ("--projection-n-layers",),
                     "infonce_warmup_epochs": ("--infonce-warmup-epoch",)}


def add_itra_loss_flags(group: argparse._ActionsContainer) -> None:
    """--loss/--distiller and InfoNCE's --logit_scale."""
    add_flag(group, "--loss", "--distiller", default=None, metavar="NAME",
             help="ITRA loss name (InfoNCE, SimReg, SimReg-L1, SimReg-SmoothL1, VICReg, BarlowTwins, RKD, "
                  "CompRess-1q, CompRess-2q, SEED, DINO, ProtoRKD, ProtoCPC, ProtoCLIP; case-insensitive) or an "
                  "--ita_type; sets --ita_type")
    add_flag(group, "--logit_scale", type=POSITIVE, default=0.07,
             help="--loss InfoNCE: initial temperature τ of the learnable-τ clip loss")


def resolve_itra_loss(args: argparse.Namespace, explicit: set[str]) -> list[str]:
    """Map --loss onto --ita_type (InfoNCE: clip with a learnable τ starting at --logit_scale); return warnings."""
    if args.loss is None:
        return ["--logit_scale is only used with --loss InfoNCE"] if "logit_scale" in explicit else []
    key = args.loss.strip().lower().replace("_", "-")
    ita_type = ITRA_LOSSES.get(key) or next((n for n in ITA_TYPES if n.replace("_", "-") == key), None)
    if ita_type is None:
        raise ValueError(f"--loss {args.loss}: unknown loss; choices: {', '.join(sorted(ITRA_LOSSES))} "
                         f"or an --ita_type")
    if "ita_type" in explicit and args.ita_type != ita_type:
        raise ValueError(f"--loss {args.loss} selects --ita_type {ita_type} but --ita_type {args.ita_type} was given")
    args.ita_type = ita_type
    if key != "infonce":
        return ["--logit_scale is only used with --loss InfoNCE"] if "logit_scale" in explicit else []
    if "learnable_temp" not in explicit:
        args.learnable_temp = True
    if "temp" not in explicit:
        args.temp = args.logit_scale
    return []
