"""Build labelled demo class folders (`<out>/train/<class>/`, `<out>/val/<class>/`) for train.py and lincls.py.

Offline: Fashion-MNIST from the Debian package when installed (`--source fashion`), else procedural shapes.
Then: `python unimodal_exps/train.py --data <out> --data_name folder --image-size 32 ...`.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(_HERE), str(_HERE.parent / "bimodal_exps")]

from cli.flags import add_flag  # noqa: E402
from dataset.errors import DataError  # noqa: E402
from dataset.demo.folders import DemoSettings, build, resolve_source  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Flags of the builder (sizes must be positive)."""
    parser = argparse.ArgumentParser(prog="build_demo_folders.py", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_flag(parser, "--source", choices=("auto", "fashion", "shapes"), default="auto",
             help="auto: fashion when the Fashion-MNIST files are installed, else shapes")
    add_flag(parser, "--out", type=Path, default=Path("demo_data/unimodal"), help="output root")
    add_flag(parser, "--seed", type=int, default=0, help="the output is a function of the seed and sizes")
    add_flag(parser, "--train-per-class", type=int, default=200, help="training images per class")
    add_flag(parser, "--val-per-class", type=int, default=100, help="validation images per class")
    add_flag(parser, "--image-size", type=int, default=32, help="side of the square images in pixels")
    args = parser.parse_args(argv)
    for flag in ("train_per_class", "val_per_class", "image_size"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be a positive integer")
    return args


def main(argv: list[str] | None = None) -> int:
    """Build (or find) the folders; exit status 0, or 1 with one error line."""
    args = parse_args(argv)
    settings = DemoSettings(resolve_source(args.source), args.seed, args.train_per_class, args.val_per_class,
                            args.image_size)
    try:
        counts, skipped = build(args.out, settings)
    except DataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    state = "already built (same settings)" if skipped else "wrote"
    print(f"{settings.source} demo folders at {args.out}: {state} {counts['train']} train / {counts['val']} val "
          f"images; use --data {args.out} --data_name folder --image-size {args.image_size}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
