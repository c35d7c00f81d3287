"""Flags that compose a model (ITRA-style): builders, poolers, heads, locking, teacher; ITRA spellings as aliases.

Canonical names are ours (snake_case, hyphen spelling for free); ITRA's names are extra spellings of the
same destination, so ITRA commands parse unchanged. See README "Compose your own model".
"""
from __future__ import annotations

import argparse
import os

from cli.flags import add_bool_flag, add_flag, str2bool
from cli.ranges import COUNT, NON_NEGATIVE, NON_NEGATIVE_INT, Range
from dataset.csv_pairs import CSV_SUFFIXES
from models.config import ADAPTERS, IMAGE_BUILDERS, TEXT_BUILDERS, TEXT_POOLERS

# ITRA flags of evaluations and logging that clip.py does not have yet: accepted so ITRA commands run, noted.
# ProtoCLIP's --add-projection-head is implied by --ita_type protoclip (its prototype heads).
ITRA_NOT_YET_FLAGS: dict[str, type] = {"--logs": str, "--name": str, "--copy-codebase": bool, "--cache-dir": str,
                                       "--add-projection-head": bool}


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
             help="HF text towers: cls = first token, pooler = the model's pooler head, mean = masked mean, "
                  "prompt = PromptBERT [MASK] state")
    add_flag(group, "--image_head_layers", "--image-head-n-layers", type=NON_NEGATIVE_INT, default=1,
             help="0 = no head (embed_dim becomes the tower width), 1 = Linear, n >= 2 = MLP")
    add_flag(group, "--text_head_layers", "--text-head-n-layers", type=NON_NEGATIVE_INT, default=1, help="as --image_head_layers")
    add_flag(group, "--head_hidden_dim", type=COUNT, default=2048, help="hidden width of heads with >= 2 layers")
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
    add_flag(group, "--text_prompt_tokens", type=NON_NEGATIVE_INT, default=0,
             help="BPE/OpenCLIP text towers: learnable prompt vectors after the start token (CoOp)")
    add_flag(group, "--prompt", action="store_true", help="ITRA: learnable prompt tokens (--n-prompt of them, 1)")
    add_flag(group, "--n-prompt", type=COUNT, default=1, help="ITRA: number of prompt tokens with --prompt")
    add_flag(group, "--cache_teacher", default=None, metavar="FILE",
             help="write the teacher tower's embeddings of every training pair (.npy, row = pair id) and exit")
    _add_data_flags(group)
    _add_itra_run_flags(parser)
    for alias, dest, kind in (("--image-model", "image_encoder", str), ("--text-model", "text_encoder", str),
                              ("--image-resolution", "image_res", COUNT),
                              ("--max-seq-length", "text_max_len", Range(int, "[2, inf)")),
                              ("--joint-projection-dim", "embed_dim", COUNT)):
        add_flag(group, alias, dest=dest, type=kind, default=argparse.SUPPRESS, help=f"ITRA spelling of --{dest}")


def bool_or_steps(value: str) -> bool | int:
    """`--warmup`: a boolean (the references' unused flag) or ITRA's number of warm-up steps."""
    return int(value) if str(value).strip().isdigit() else str2bool(value)


def _add_data_flags(group: argparse._ArgumentGroup) -> None:
    """CSV/TSV training files and episodic sampling."""
    add_flag(group, "--csv_separator", default="\t", help="column separator of --train-data CSV/TSV files")
    add_flag(group, "--csv_img_key", default="filepath", help="image path column of --train-data CSV files")
    add_flag(group, "--csv_caption_key", default="title", help="caption column of --train-data CSV files")
    add_flag(group, "--images-dir", dest="train_image_root", default=argparse.SUPPRESS,
             help="ITRA: root of the CSV's relative image paths (default: paths as written, from the working dir)")
    add_flag(group, "--train_size", "--dataset-size", type=COUNT, default=None,
             help="train on the first N pairs only (default: all)")
    add_flag(group, "--episode_size", "--episode-size", type=NON_NEGATIVE_INT, default=0,
             help="each epoch draws E pair ids with replacement from the training pairs, seeded by (seed, epoch); "
                  "0 = plain epochs")


def _add_itra_run_flags(parser: argparse.ArgumentParser) -> None:
    """ITRA's spellings of existing run and evaluation-schedule flags, and its logging flags (no effect yet)."""
    group = parser.add_argument_group("ITRA spellings of run flags")
    for alias, dest, kind in (("--batch-size", "batch_size_train", COUNT), ("--wd", "weight_decay", NON_NEGATIVE),
                              ("--max-grad-norm", "grad_clip", NON_NEGATIVE), ("--save-frequency", "save_freq", COUNT),
                              *((f"--{family.replace('_', '-')}-frequency", flag, NON_NEGATIVE_INT)
                                for family, flag in (("linear", "linear_freq"), ("zeroshot", "zeroshot_freq"),
                                                     ("retrieval", "retrieval_freq"), ("nlp_eval", "nlp_eval_freq")))):
        add_flag(group, alias, dest=dest, type=kind, default=argparse.SUPPRESS, help=f"ITRA spelling of --{dest}")
    for name, kind in ITRA_NOT_YET_FLAGS.items():
        if kind is bool:
            add_flag(group, name, action="store_true", help=argparse.SUPPRESS)
        else:
            add_flag(group, name, type=kind, default=None, help=argparse.SUPPRESS)


def finalise_composition(args: argparse.Namespace, explicit: set[str]) -> list[str]:
    """Check the composition and ITRA flags together; returns notes (ValueError, one line, on a mistake)."""
    notes = []
    if args.prompt:
        args.text_prompt_tokens = args.n_prompt
    if not isinstance(args.warmup, bool):  # ITRA's --warmup N: per-step schedule with N warm-up steps
        args.warmup_steps, args.lr_schedule, args.warmup = args.warmup, "step", True
        explicit.discard("warmup")
        notes.append(f"--warmup {args.warmup_steps}: --lr_schedule step --warmup_steps {args.warmup_steps}")
    ignored = sorted(dest for dest in explicit if "--" + dest.replace("_", "-") in ITRA_NOT_YET_FLAGS)
    if ignored:
        notes.append("ITRA flags accepted with no effect here: " + ", ".join(f"--{d.replace('_', '-')}" for d in ignored))
    if args.train_data and args.train_data.lower().endswith(CSV_SUFFIXES) and args.dataset_type in ("json", "auto"):
        args.dataset_type = "csv"
    if args.dataset_type == "csv" and "train_image_root" not in explicit:
        args.train_image_root = os.path.abspath(".")  # OpenCLIP/ITRA: the CSV's paths are used as written
    if args.episode_size and args.dataset_type == "webdataset":
        raise ValueError("--episode_size needs an indexable training set (JSON or CSV), not --dataset_type webdataset")
    for side in ("image", "text"):
        if getattr(args, f"unlock_{side}") and getattr(args, f"lock_{side}"):
            raise ValueError(f"--lock_{side} and --unlock-{side}-model contradict each other; give one")
        if getattr(args, f"{side}_head_layers") < 0:
            raise ValueError(f"--{side}_head_layers must be >= 0 (got {getattr(args, f'{side}_head_layers')})")
    if args.head_hidden_dim < 1:
        raise ValueError(f"--head_hidden_dim must be >= 1 (got {args.head_hidden_dim})")
    return notes
