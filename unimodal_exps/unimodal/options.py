"""Command lines of `train.py` (pre-training) and `lincls.py` (linear evaluation).

SogCLR's commands (README "Unimodal SogCLR") parse verbatim; multi-word flags accept both `-` and `_` spellings
(`--crop-min` = `--crop_min`). Flags shared by both scripts (data, launch, precision) live in one place.
"""
from __future__ import annotations

import argparse

from cli.flags import add_flag
from engine.runtime import UsageError

DATA_NAMES = ("imagenet1000", "imagenet100", "folder")
PRECISIONS = ("auto", "fp16", "bf16", "fp32")


def _add_data_flags(parser: argparse.ArgumentParser) -> None:
    """Data location, class subset, crop size and loader workers."""
    group = parser.add_argument_group("data")
    add_flag(group, "--data", required=True, help="root with train/<class>/ and val/<class>/ image folders")
    add_flag(group, "--data_name", default="imagenet1000", choices=DATA_NAMES,
             help="imagenet1000: every class folder; imagenet100: the classes of --class-list; "
                  "folder: any ImageNet-style folder (e.g. the demo folders)")
    add_flag(group, "--class-list", default=None,
             help="file of class folder names, one per line (a line 'wnid/image.JPEG' counts as its folder); "
                  "required by --data_name imagenet100, optional otherwise")
    add_flag(group, "--image-size", type=int, default=224, help="crop size in pixels")
    add_flag(group, "--workers", type=int, default=32, help="data-loading workers per node (split over its processes)")


def _add_launch_flags(parser: argparse.ArgumentParser) -> None:
    """Processes, rendezvous, device, precision and seed (SogCLR's launch flags included)."""
    group = parser.add_argument_group("devices and processes (torchrun / srun are detected and take precedence)")
    add_flag(group, "--multiprocessing-distributed", action="store_true",
             help="start --nproc-per-node processes on this node (one per GPU) and train with DDP")
    add_flag(group, "--nproc-per-node", type=int, default=None,
             help="processes per node with --multiprocessing-distributed (default: the GPU count, 1 without GPUs)")
    add_flag(group, "--world-size", type=int, default=-1,
             help="number of nodes (seed semantics; the process count is nodes × --nproc-per-node)")
    add_flag(group, "--rank", type=int, default=-1, help="rank of this node")
    add_flag(group, "--dist-url", default="tcp://localhost:10001", help="rendezvous URL of the process group")
    add_flag(group, "--dist-timeout", type=float, default=30.0, help="minutes before a stuck collective fails")
    add_flag(group, "--device", default=None, help="cuda or cpu (default: cuda when available)")
    add_flag(group, "--precision", default="auto", choices=PRECISIONS,
             help="auto: fp16 autocast (with loss scaling) on CUDA, fp32 on CPU")
    add_flag(group, "--seed", type=int, default=0, help="seed of the model initialisation and the augmentations")


def _add_common_train_flags(parser: argparse.ArgumentParser, epochs: int, batch: int, lr: float,
                            wd: float) -> argparse._ArgumentGroup:
    """Epochs, batch, optimiser and output flags shared by both scripts; returns their group."""
    group = parser.add_argument_group("model and optimisation")
    add_flag(group, "--epochs", type=int, default=epochs, help="epochs to run")
    add_flag(group, "--batch-size", type=int, default=batch, help="global batch size over all processes")
    add_flag(group, "--lr", "--learning-rate", type=float, default=lr, help="base learning rate (scaled by the batch)")
    add_flag(group, "--momentum", type=float, default=0.9, help="momentum")
    add_flag(group, "--wd", "--weight-decay", dest="weight_decay", type=float, default=wd, help="weight decay")
    add_flag(group, "--save_dir", default="./saved_models/", help="output folder (created)")
    add_flag(group, "--print-freq", type=int, default=10, help="print progress every N iterations")
    return group


def build_train_parser() -> argparse.ArgumentParser:
    """Parser of train.py (SogCLR's flags and defaults)."""
    parser = argparse.ArgumentParser(prog="train.py", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                                     description="Self-supervised pre-training with SogCLR (dcl) or SimCLR.")
    _add_data_flags(parser)
    model = _add_common_train_flags(parser, epochs=100, batch=256, lr=0.075, wd=1e-6)
    add_flag(model, "--arch", default="resnet50", help="timm model name (random initialisation)")
    group = parser.add_argument_group("SogCLR")
    add_flag(group, "--loss_type", default="dcl", choices=("dcl", "simclr", "sogclr", "cl"),
             help="dcl = SogCLR (moving-average estimator), simclr = NT-Xent (sogclr and cl are aliases)")
    add_flag(group, "--gamma", type=float, default=0.9, help="γ of SogCLR's moving average, in (0, 1]")
    add_flag(group, "--t", type=float, default=0.1, help="temperature")
    add_flag(group, "--learning-rate-scaling", default="sqrt", choices=("sqrt", "linear"),
             help="sqrt: lr·√batch, linear: lr·batch/256")
    add_flag(group, "--warmup-epochs", type=int, default=10, help="linear warm-up epochs before the cosine decay")
    add_flag(group, "--crop-min", type=float, default=0.08, help="minimum area fraction of RandomResizedCrop")
    add_flag(group, "--blur-prob", type=float, default=1.0, help="probability of the Gaussian blur (σ in [0.1, 2])")
    add_flag(group, "--dim", type=int, default=128, help="output width of the projection MLP")
    add_flag(group, "--mlp-dim", type=int, default=2048, help="hidden width of the projection MLP")
    add_flag(group, "--num_proj_layers", type=int, default=2, help="linear layers of the projection MLP")
    add_flag(group, "--resume", default=None, help="checkpoint to continue from (model, optimiser, per-image state)")
    add_flag(group, "--save-freq", type=int, default=10, help="keep a numbered checkpoint every N epochs")
    _add_launch_flags(parser)
    return parser


def build_lincls_parser() -> argparse.ArgumentParser:
    """Parser of lincls.py (SogCLR's linear-evaluation defaults)."""
    parser = argparse.ArgumentParser(prog="lincls.py", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                                     description="Linear classification on frozen pre-trained features.")
    _add_data_flags(parser)
    model = _add_common_train_flags(parser, epochs=90, batch=1024, lr=0.1, wd=0.0)
    add_flag(model, "--arch", default=None, help="timm model name (default: the checkpoint's)")
    group = parser.add_argument_group("linear evaluation")
    add_flag(group, "--pretrained", required=True,
             help="pre-training checkpoint (train.py's checkpoint_*.pth.tar), or 'random' for a randomly "
                  "initialised --arch (the floor a pre-training must beat)")
    add_flag(group, "--cache-features", action="store_true",
             help="compute the frozen features once (centre crops, no augmentation) and train on them: much faster")
    add_flag(group, "--result-file", default=None, help="JSON result (default: <save_dir>/lincls_result.json)")
    _add_launch_flags(parser)
    return parser


def _check(args: argparse.Namespace) -> argparse.Namespace:
    """Range checks shared by both scripts."""
    positive = {"--epochs": args.epochs, "--batch-size": args.batch_size, "--image-size": args.image_size,
                "--print-freq": args.print_freq}
    for flag, value in positive.items():
        if value < 1:
            raise UsageError(f"{flag} must be a positive integer, got {value}")
    if args.lr <= 0.0 or args.weight_decay < 0.0:
        raise UsageError(f"need --lr > 0 and --wd >= 0, got {args.lr} and {args.weight_decay}")
    if args.data_name == "imagenet100" and not args.class_list:
        raise UsageError("--data_name imagenet100 needs --class-list FILE (the 100 class folder names)")
    if args.nproc_per_node is not None and args.nproc_per_node < 1:
        raise UsageError(f"--nproc-per-node must be positive, got {args.nproc_per_node}")
    return args


def parse_train_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse and check train.py's flags; a UsageError for values out of range."""
    args = _check(build_train_parser().parse_args(argv))
    if not 0.0 < args.gamma <= 1.0:
        raise UsageError(f"--gamma must lie in (0, 1], got {args.gamma}")
    if args.t <= 0.0:
        raise UsageError(f"--t must be positive, got {args.t}")
    if not 0.0 < args.crop_min <= 1.0:
        raise UsageError(f"--crop-min must lie in (0, 1], got {args.crop_min}")
    if args.warmup_epochs < 0 or args.save_freq < 1:
        raise UsageError("--warmup-epochs must be >= 0 and --save-freq >= 1")
    return args


def parse_lincls_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse and check lincls.py's flags; a UsageError for values out of range."""
    return _check(build_lincls_parser().parse_args(argv))
