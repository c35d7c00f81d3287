"""argparse helpers: both spellings of multi-word flags, --flag/--no-flag booleans, compatibility-only flags."""
from __future__ import annotations

import argparse

TRUE_WORDS = {"true", "1", "yes", "y", "on"}
FALSE_WORDS = {"false", "0", "no", "n", "off"}


def str2bool(value: str) -> bool:
    """Parse True/False/1/0/yes/no (case-insensitive); anything else is an argparse error."""
    lowered = str(value).strip().lower()
    if lowered in TRUE_WORDS:
        return True
    if lowered in FALSE_WORDS:
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean (true/false/1/0/yes/no), got {value!r}")


def spellings(name: str) -> list[str]:
    """`--train_num_samples` -> [`--train_num_samples`, `--train-num-samples`] (and the reverse)."""
    body = name.lstrip("-")
    variants = [body, body.replace("-", "_"), body.replace("_", "-")]
    return ["--" + v for v in dict.fromkeys(variants)]


def add_flag(group: argparse._ActionsContainer, *names: str, **kwargs) -> argparse.Action:
    """Add a flag under every spelling of each name; its dest is the first name's underscore spelling."""
    kwargs.setdefault("dest", names[0].lstrip("-").replace("-", "_"))
    options = [option for name in names for option in spellings(name)]
    return group.add_argument(*dict.fromkeys(options), **kwargs)


def add_bool_flag(group: argparse._ActionsContainer, name: str, default: bool | None, help: str) -> None:
    """`--flag` (bare, True), `--flag VALUE` (a boolean word) and `--no-flag` (False)."""
    dest = name.lstrip("-").replace("-", "_")
    add_flag(group, name, dest=dest, nargs="?", const=True, default=default, type=str2bool, metavar="BOOL",
             help=help)
    group.add_argument(*spellings("--no-" + dest), dest=dest, action="store_false", default=default,
                       help=f"same as {name} False")
