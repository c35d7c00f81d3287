"""Parse and validate clip.py's flags: YAML defaults, derived paths, user-facing warnings."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Sequence

from ruamel.yaml import YAML, YAMLError

from cli.compose import finalise_composition
from cli.itra import resolve_itra_loss
from cli.parser import COMPATIBILITY_FLAGS, STORE_TRUE_COMPATIBILITY_FLAGS, UNSUPPORTED_FLAGS, build_parser
from cli.ranges import out_of_range
from dataset.zeroshot import default_zeroshot_root
from engine.runtime import UsageError
from models.image_tower import resolve_image_encoder
from models.losses import LOSS_HPARAMS, used_hparams

__all__ = ["UsageError", "parse_args"]


def _yaml_defaults(parser: argparse.ArgumentParser, path: str, including: tuple[str, ...] = ()) -> dict:
    """The flag defaults of a YAML config; a `base: FILE` key (relative to the config) inherits that file's keys,
    which the config's own keys override (recipes share one base: README "Recipes")."""
    try:
        with open(path, encoding="utf-8") as handle:
            values = YAML(typ="safe").load(handle) or {}
    except FileNotFoundError:
        raise UsageError(f"--config: file not found: {path}") from None
    except YAMLError as error:
        raise UsageError(f"--config {path}: invalid YAML ({str(error).splitlines()[0]})") from None
    except RecursionError:
        raise UsageError(f"--config {path}: nested too deeply to parse (expected flag names and values)") from None
    if not isinstance(values, dict):
        raise UsageError(f"--config {path}: expected a mapping of flag names to values")
    inherited = {}
    if "base" in values:
        base = values.pop("base")
        if not isinstance(base, str) or not base:
            raise UsageError(f"--config {path}: base must name one YAML file (got {base!r})")
        base_path = os.path.join(os.path.dirname(path), base)
        chain = (*including, os.path.realpath(path))
        if os.path.realpath(base_path) in chain:
            raise UsageError(f"--config {path}: base {base} includes itself")
        if not os.path.isfile(base_path):
            raise UsageError(f"--config {path}: base {base} not found (looked for {base_path})")
        inherited = _yaml_defaults(parser, base_path, chain)
    known = {action.dest for action in parser._actions}
    normalised = {str(key).replace("-", "_"): value for key, value in values.items()}
    unknown = sorted(set(normalised) - known)
    if unknown:
        raise UsageError(f"--config {path}: unknown keys {', '.join(unknown)}")
    return {**inherited, **normalised}


def _explicit_dests(parser: argparse.ArgumentParser, argv: Sequence[str]) -> set[str]:
    """Flags typed on the command line (config-file defaults are not warned about)."""
    typed = {token.split("=", 1)[0] for token in argv if token.startswith("--")}
    return {action.dest for action in parser._actions if typed.intersection(action.option_strings)}


def parse_args(argv: Sequence[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    """Return (args, warnings). argparse reports malformed flags itself (exit 2 with the choices)."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    pre, _ = parser.parse_known_args(argv)
    if pre.config:
        parser.set_defaults(**_yaml_defaults(parser, pre.config))
    args = parser.parse_args(argv)
    problems = out_of_range(parser, args)  # values from --config bypass argparse's type checks
    if problems:
        raise UsageError(f"--config {pre.config}: {problems[0]}")
    explicit = _explicit_dests(parser, argv)
    warnings = _finalise(args, explicit)
    return args, warnings


def _check_names(args: argparse.Namespace) -> None:
    """Names that timm must know (--image_encoder of the timm builder, --opt) and the text tower's head split, before anything is built."""
    if args.image_builder == "timm":  # torchvision/OpenCLIP names are checked by their builders
        try:
            resolve_image_encoder(args.image_encoder)
        except ValueError as error:
            raise UsageError(f"--image_encoder: {error}") from None
    from timm.optim import get_optimizer_class  # the name lookup create_optimizer_v2 does
    try:
        get_optimizer_class(args.opt.lower().split("_")[-1], bind_defaults=False)
    except (ValueError, ImportError) as error:
        raise UsageError(f"--opt {args.opt}: {error} (timm optimizer names, e.g. adamw, sgd, lamb, lars; "
                         f"timm.optim.list_optimizers())") from None
    if args.text_width % args.text_heads:
        raise UsageError(f"--text_heads {args.text_heads} does not divide --text_width {args.text_width}")


def _finalise(args: argparse.Namespace, explicit: set[str]) -> list[str]:
    warnings: list[str] = []
    try:
        warnings.extend(finalise_composition(args, explicit))
    except ValueError as error:
        raise UsageError(str(error)) from None
    _check_names(args)
    for name, reason in UNSUPPORTED_FLAGS.items():
        if getattr(args, name):
            raise UsageError(f"--{name} is not supported: {reason}")
    ignored = [n for n in (*COMPATIBILITY_FLAGS, *STORE_TRUE_COMPATIBILITY_FLAGS, "cooldown_epochs") if n in explicit]
    if ignored:
        warnings.append("accepted for compatibility, no effect: " + ", ".join(f"--{n}" for n in ignored))
    try:
        warnings.extend(resolve_itra_loss(args, explicit))
    except ValueError as error:
        raise UsageError(str(error)) from None
    used = used_hparams(args.ita_type, individual_tau=args.individual_tau)
    unused = sorted(n for n in LOSS_HPARAMS if n in explicit and n not in used)
    if "loss_tile" in unused and args.loss_tile:
        raise UsageError(f"--loss_tile is not supported by --ita_type {args.ita_type} (clip, siglip and the GCL losses)")
    for name in unused:
        condition = " without --individual_tau" if name in used_hparams(args.ita_type) else ""
        warnings.append(f"--{name} is not used by --ita_type {args.ita_type}{condition}")
    if args.zs_dataset == "":
        args.zs_dataset = "none"
    if args.store_tau:
        warnings.append("--store_tau: per-sample temperatures are saved in every checkpoint (loss state)")
    if args.compile:
        import torch._dynamo  # only when asked: importing dynamo takes seconds
        if args.compile not in torch._dynamo.list_backends(exclude_tags=()):
            raise UsageError(f"--compile {args.compile}: unknown torch.compile backend; e.g. inductor, aot_eager")
    if args.evaluate and not args.checkpoint:
        raise UsageError("--evaluate needs --checkpoint PATH (a checkpoint_<epoch>.pth written by training)")
    if args.resume is not None and args.checkpoint:
        raise UsageError(f"--resume and --checkpoint {args.checkpoint} together: --resume restores the weights with "
                         "the rest of the run's state; drop --checkpoint to continue the run, or --resume to start a "
                         "new run from the checkpoint's weights")
    if args.dataset_type == "auto":
        args.dataset_type = "webdataset" if args.train_data and ".tar" in args.train_data else "json"
    warnings.extend(_check_webdataset(args))
    warnings.extend(_check_protoclip(args))
    _check_tower_schedule(args)
    _derive_paths(args)
    return warnings


def _check_webdataset(args: argparse.Namespace) -> list[str]:
    """Training from shards needs --train-data and --train-num-samples; sizes must be positive."""
    if args.dataset_type != "webdataset":
        return ["--dataset_resampled is only used with --dataset_type webdataset"] if args.dataset_resampled else []
    if args.evaluate:
        return []
    missing = [flag for flag, value in (("--train-data", args.train_data),
                                        ("--train-num-samples", args.train_num_samples)) if not value]
    if missing:
        raise UsageError(f"--dataset_type webdataset needs {' and '.join(missing)} "
                         "(shard pattern, e.g. 'cc12m/{00000..01242}.tar', and samples per epoch)")
    if args.train_frac != 1.0:
        return ["--train_frac is not used with --dataset_type webdataset (--train-num-samples sets the epoch)"]
    return []


def _check_protoclip(args: argparse.Namespace) -> list[str]:
    """ProtoCLIP clusters the epoch's pairs by index; its external teacher works through --pbt's centroids."""
    if args.ita_type != "protoclip":
        return []
    if args.dataset_type == "webdataset" and not args.evaluate:
        raise UsageError("--ita_type protoclip needs an indexable training set (JSON or CSV) for its clustering "
                         "step, not --dataset_type webdataset")
    if args.external_teacher and not args.pbt:
        args.external_teacher = None
        return ["--external_teacher needs --pbt (its centroids are means over the teacher's clusters); skipped"]
    return []


def _check_tower_schedule(args: argparse.Namespace) -> None:
    """The asymmetric schedule's epochs lie inside the run and the non-image window is not empty."""
    if args.lit_start_epoch > args.epochs:
        raise UsageError(f"--lit_start_epoch {args.lit_start_epoch} is after the last epoch (--epochs {args.epochs})")
    text_end = args.epochs if args.text_end_epoch is None else args.text_end_epoch
    if text_end > args.epochs:
        raise UsageError(f"--text_end_epoch {text_end} is after the end of training (--epochs {args.epochs})")
    if args.text_start_epoch >= text_end:
        raise UsageError(f"--text_start_epoch {args.text_start_epoch} must be before --text_end_epoch {text_end}")


def _derive_paths(args: argparse.Namespace) -> None:
    """Join relative paths the way the reference commands' layout expects (datasets/README.md, clip_train/README.md)."""
    args.train_files = [os.path.join(args.ann_path, f) for f in args.train_file]
    args.train_image_dir = os.path.join(args.data_path, args.train_image_root)
    args.val_coco_file = args.val_coco_file or os.path.join(args.ann_path, "coco_val.json")
    args.coco_image_root = args.coco_image_root or os.path.join(args.data_path, "mscoco_val",
                                                                 "mscoco_val2014_subset_5k")
    args.zs_datafolder = args.zs_datafolder or default_zeroshot_root(args.zs_dataset, args.data_path)
    args.output_dir = str(Path(args.output_dir))
    if args.resume == "":
        args.resume = os.path.join(args.output_dir, "checkpoint_last.pth")
