"""argparse helpers: both spellings of multi-word flags, booleans, compatibility-only flags, one-line usage
errors, and construction errors reported as the flags that caused them."""
from __future__ import annotations

import argparse
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

from engine.runtime import UsageError

# What building a tower, loss, optimiser or schedule from a wrong flag value raises (timm asserts, torch allocators
# raise RuntimeError); caught only around those constructions.
BUILD_ERRORS = (ValueError, TypeError, AssertionError, RuntimeError, MemoryError)



TRUE_WORDS = {"true", "1", "yes", "y", "on"}
FALSE_WORDS = {"false", "0", "no", "n", "off"}


class OneLineParser(argparse.ArgumentParser):
    """ArgumentParser whose errors are one line (exit status 2) instead of the full usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (--help lists the flags)\n")


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


def add_bool_flag(group: argparse._ActionsContainer, name: str, *aliases: str, default: bool | None,
                  help: str) -> None:
    """`--flag` (bare, True), `--flag VALUE` (a boolean word) and `--no-flag` (False); `aliases` are other
    spellings of `--flag`."""
    dest = name.lstrip("-").replace("-", "_")
    add_flag(group, name, *aliases, dest=dest, nargs="?", const=True, default=default, type=str2bool, metavar="BOOL",
             help=help)
    group.add_argument(*spellings("--no-" + dest), dest=dest, action="store_false", default=default,
                       help=f"same as {name} False")


def first_line(error: BaseException) -> str:
    """The first line of an exception's message (its type name when the message is empty)."""
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def _mentions(message: str, dest: str, value: object) -> bool:
    """Whether an error message names the flag `dest` or one of its words (a string value, a key of a dict)."""
    words = [dest, *([value] if isinstance(value, str) else value if isinstance(value, dict) else [])]
    return any(len(str(word)) > 2 and re.search(rf"(?<![\w-]){re.escape(str(word))}(?!\w)", message)
               for word in words)


@contextmanager
def blame_flags(args: argparse.Namespace, *dests: str, keep: tuple[type[BaseException], ...] = ()) -> Iterator[None]:
    """Report a BUILD_ERRORS exception raised inside as a one-line UsageError naming, with their values, the flags
    among `dests` that its message mentions (else all of them that were given). Exceptions of the `keep` types
    (errors that already are one-line messages for the user) pass unchanged."""
    try:
        yield
    except (UsageError, *keep):
        raise
    except BUILD_ERRORS as error:
        message = first_line(error)
        given = {dest: getattr(args, dest) for dest in dests if getattr(args, dest, None) is not None}
        named = [dest for dest in dests if _mentions(message, dest, given.get(dest))] or list(given)
        flags = ", ".join(f"--{dest} {given[dest]}" if dest in given else f"--{dest}" for dest in named)
        raise UsageError(f"{flags}: {message}") from None
