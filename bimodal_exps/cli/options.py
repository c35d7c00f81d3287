"""Parse and validate clip.py's flags: YAML defaults, derived paths (pipeline §1.3), user-facing warnings."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Sequence

from ruamel.yaml import YAML, YAMLError

from cli.parser import COMPATIBILITY_FLAGS, STORE_TRUE_COMPATIBILITY_FLAGS, UNSUPPORTED_FLAGS, build_parser
from models.losses import LOSS_HPARAMS, used_hparams


class UsageError(ValueError):
    """A user mistake in flags or config files; printed as one line, no traceback."""


def _yaml_defaults(parser: argparse.ArgumentParser, path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as handle:
            values = YAML(typ="safe").load(handle) or {}
    except FileNotFoundError:
        raise UsageError(f"--config: file not found: {path}") from None
    except YAMLError as error:
        raise UsageError(f"--config {path}: invalid YAML ({str(error).splitlines()[0]})") from None
    if not isinstance(values, dict):
        raise UsageError(f"--config {path}: expected a mapping of flag names to values")
    known = {action.dest for action in parser._actions}
    normalised = {str(key).replace("-", "_"): value for key, value in values.items()}
    unknown = sorted(set(normalised) - known)
    if unknown:
        raise UsageError(f"--config {path}: unknown keys {', '.join(unknown)}")
    return normalised


def _explicit_dests(parser: argparse.ArgumentParser, args: argparse.Namespace) -> set[str]:
    return {action.dest for action in parser._actions
            if action.dest != "help" and getattr(args, action.dest, None) != action.default}


def parse_args(argv: Sequence[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    """Return (args, warnings). argparse reports malformed flags itself (exit 2 with the choices)."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    pre, _ = parser.parse_known_args(argv)
    if pre.config:
        parser.set_defaults(**_yaml_defaults(parser, pre.config))
    args = parser.parse_args(argv)
    explicit = _explicit_dests(build_parser(), args)
    warnings = _finalise(args, explicit)
    return args, warnings


def _finalise(args: argparse.Namespace, explicit: set[str]) -> list[str]:
    warnings: list[str] = []
    for name, reason in UNSUPPORTED_FLAGS.items():
        if getattr(args, name):
            raise UsageError(f"--{name} is not supported: {reason}")
    ignored = [n for n in (*COMPATIBILITY_FLAGS, *STORE_TRUE_COMPATIBILITY_FLAGS, "cooldown_epochs") if n in explicit]
    if ignored:
        warnings.append("accepted for compatibility, no effect: " + ", ".join(f"--{n}" for n in ignored))
    unused = sorted(n for n in LOSS_HPARAMS if n in explicit and n not in used_hparams(args.ita_type))
    for name in unused:
        warnings.append(f"--{name} is not used by --ita_type {args.ita_type}")
    if args.zs_dataset == "":
        args.zs_dataset = "none"
    if args.store_tau:
        warnings.append("--store_tau: per-sample temperatures are saved in every checkpoint (loss state)")
    for name in ("epochs", "batch_size_train", "batch_size_test", "zs_batch_size", "image_res", "embed_dim"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name} must be >= 1 (got {getattr(args, name)})")
    if not 0 < args.train_frac <= 1:
        raise UsageError(f"--train_frac must be in (0, 1] (got {args.train_frac})")
    if args.evaluate and not args.checkpoint:
        raise UsageError("--evaluate needs --checkpoint PATH (a checkpoint_<epoch>.pth written by training)")
    if args.dataset_type == "auto":
        args.dataset_type = "webdataset" if args.train_data and ".tar" in args.train_data else "json"
    if args.dataset_type == "webdataset":
        raise UsageError("--dataset_type webdataset is not available yet (tracked in the WebDataset issue)")
    _derive_paths(args)
    return warnings


def _derive_paths(args: argparse.Namespace) -> None:
    """Join relative paths the way the seed-000 layout expects (pipeline §1.3)."""
    args.train_files = [os.path.join(args.ann_path, f) for f in args.train_file]
    args.train_image_dir = os.path.join(args.data_path, args.train_image_root)
    args.val_coco_file = args.val_coco_file or os.path.join(args.ann_path, "coco_val.json")
    args.coco_image_root = args.coco_image_root or os.path.join(args.data_path, "mscoco_val",
                                                                 "mscoco_val2014_subset_5k")
    args.zs_datafolder = args.zs_datafolder or os.path.join(args.data_path, "imagenet", "val")
    args.output_dir = str(Path(args.output_dir))
    if args.resume == "":
        args.resume = os.path.join(args.output_dir, "checkpoint_last.pth")
