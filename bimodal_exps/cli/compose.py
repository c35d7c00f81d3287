"""Flags that compose a model (ITRA-style): builders, poolers, heads, locking, teacher; ITRA spellings as aliases.

Canonical names are ours (snake_case, hyphen spelling for free); ITRA's names are extra spellings of the
same destination, so ITRA commands parse unchanged. See README "Compose your own model".
"""
from __future__ import annotations

import argparse

from cli.flags import add_bool_flag, add_flag
from models.config import ADAPTERS, IMAGE_BUILDERS, TEXT_BUILDERS, TEXT_POOLERS

TEACHER_SIDES = ("text", "image")


def add_composition_flags(parser: argparse.ArgumentParser) -> None:
    """The "compose your own model" group of clip.py's parser."""
    group = parser.add_argument_group("compose your own model (builders, heads, locking; ITRA spellings accepted)")
    add_flag(group, "--image_builder", "--image-model-builder", type=str.lower, default="timm",
             choices=IMAGE_BUILDERS, help="library that builds --image_encoder")
    add_flag(group, "--text_builder", "--text-model-builder", type=str.lower, default="", choices=["", *TEXT_BUILDERS],
             help="library that builds --text_encoder (default: bpe for 'Transformer', else hf)")
    add_flag(group, "--image_model_tag", default="", help="OpenCLIP pretrained name or local weight file")
    add_flag(group, "--text_model_tag", default="", help="OpenCLIP pretrained name or local weight file")
    add_flag(group, "--text_pooler", type=str.lower, default="cls", choices=list(TEXT_POOLERS),
             help="HF text towers: cls = first token, pooler = the model's pooler head, mean = masked mean")
    add_flag(group, "--image_head_layers", "--image-head-n-layers", type=int, default=1,
             help="0 = no head (embed_dim becomes the tower width), 1 = Linear, n >= 2 = MLP")
    add_flag(group, "--text_head_layers", "--text-head-n-layers", type=int, default=1, help="as --image_head_layers")
    add_flag(group, "--head_hidden_dim", type=int, default=2048, help="hidden width of heads with >= 2 layers")
    add_bool_flag(group, "--head_bn", default=False, help="BatchNorm after each hidden Linear of MLP heads")
    for side in ("image", "text"):
        add_bool_flag(group, f"--lock_{side}", default=False,
                      help=f"freeze the whole {side} tower (eval mode, no gradient, not optimised)")
        add_flag(group, f"--lock-{side}-model", dest=f"lock_{side}", action="store_const", const=True,
                 default=argparse.SUPPRESS, help=f"ITRA spelling of --lock_{side}")
        add_flag(group, f"--unlock-{side}-model", dest=f"unlock_{side}", action="store_true",
                 help=f"ITRA: explicitly leave the {side} tower trainable (error together with --lock_{side})")
        add_flag(group, f"--lock_{side}_partial", default="",
                 help="comma list of parameter-name keywords to freeze; a leading '!' freezes all but those")
        add_flag(group, f"--pretrained-{side}-model", dest=f"{side}_pretrained", action="store_const", const=True,
                 default=argparse.SUPPRESS, help=f"ITRA spelling of --{side}_pretrained true")
    add_flag(group, "--adapter", default="", help=f"HF text towers: one of {', '.join(ADAPTERS)} (base frozen)")
    add_flag(group, "--teacher", type=str.lower, default="text", choices=TEACHER_SIDES,
             help="tower whose features act as the teacher in uni-directional objectives")
    add_flag(group, "--cache_teacher", default=None, metavar="FILE",
             help="write the teacher tower's embeddings of every training pair (.npy, row = pair id) and exit")
    for alias, dest, kind in (("--image-model", "image_encoder", str), ("--text-model", "text_encoder", str),
                              ("--image-resolution", "image_res", int), ("--max-seq-length", "text_max_len", int),
                              ("--joint-projection-dim", "embed_dim", int)):
        add_flag(group, alias, dest=dest, type=kind, default=argparse.SUPPRESS, help=f"ITRA spelling of --{dest}")


def finalise_composition(args: argparse.Namespace) -> None:
    """Check the composition flags together (ValueError with a one-line message on a contradiction)."""
    for side in ("image", "text"):
        if getattr(args, f"unlock_{side}") and getattr(args, f"lock_{side}"):
            raise ValueError(f"--lock_{side} and --unlock-{side}-model contradict each other; give one")
        if getattr(args, f"{side}_head_layers") < 0:
            raise ValueError(f"--{side}_head_layers must be >= 0 (got {getattr(args, f'{side}_head_layers')})")
    if args.head_hidden_dim < 1:
        raise ValueError(f"--head_hidden_dim must be >= 1 (got {args.head_hidden_dim})")
