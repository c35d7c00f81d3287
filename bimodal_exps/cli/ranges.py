"""Numeric flag ranges in interval notation ("(0, 1]", "[1, inf)"): argparse `type=` checkers and the same
check for values that bypass argparse's conversion (YAML config defaults)."""
from __future__ import annotations

import argparse
import math
import re
from collections.abc import Iterator

_INTERVAL = re.compile(r"^([\[(])\s*(-inf|[-+0-9.e]+)\s*,\s*(inf|[-+0-9.e]+)\s*([\])])$")


class Range:
    """argparse `type=` for an int or float flag whose value must lie in `interval`, e.g. "(0, 1]".

    NaN and ±inf are always refused. The error says the interval and the value; argparse adds the flag name.
    """

    def __init__(self, kind: type, interval: str) -> None:
        match = _INTERVAL.match(interval)
        if kind not in (int, float) or match is None:
            raise ValueError(f"bad range {kind.__name__} {interval!r}: expected int/float and e.g. '(0, 1]'")
        self.kind, self.interval = kind, interval
        self.low, self.high = float(match.group(2)), float(match.group(3))
        self.low_open, self.high_open = match.group(1) == "(", match.group(4) == ")"
        self.__name__ = f"{kind.__name__} in {interval}"  # argparse's "invalid <name> value" wording

    def __call__(self, text: str) -> int | float:
        """Convert a command-line string and check it (argparse calls this)."""
        try:
            value = self.kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if self.kind is int else 'a number'}, "
                                             f"got {text!r}") from None
        problem = self.problem(value)
        if problem:
            raise argparse.ArgumentTypeError(problem)
        return value

    def describe(self) -> str:
        """The range in words: '>= 1', '> 0' or 'in (0, 1]'."""
        if math.isinf(self.high):
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        return f"in {self.interval}"

    def problem(self, value: object) -> str | None:
        """Why `value` is out of range (None when it is fine); also rejects wrong types from config files."""
        numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not numeric or (self.kind is int and not isinstance(value, int)):
            return f"must be {'an integer' if self.kind is int else 'a number'} {self.describe()} (got {value!r})"
        if not math.isfinite(value):
            return f"must be a finite number {self.describe()} (got {value})"
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        if not (above and below):
            return f"must be {self.describe()} (got {value})"
        return None


# The ranges most flags share.
COUNT = Range(int, "[1, inf)")
NON_NEGATIVE_INT = Range(int, "[0, inf)")
POSITIVE = Range(float, "(0, inf)")
NON_NEGATIVE = Range(float, "[0, inf)")
UNIT = Range(float, "(0, 1]")

def ranged_actions(parser: argparse.ArgumentParser) -> Iterator[tuple[argparse.Action, Range]]:
    """The parser's flags whose type is a Range."""
    for action in parser._actions:
        if isinstance(action.type, Range):
            yield action, action.type


def out_of_range(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[str]:
    """'--flag must be …' for every ranged flag whose final value (command line or config file) is out of range."""
    problems = []
    for action, checker in ranged_actions(parser):
        value = getattr(args, action.dest, None)
        if value is not None and (problem := checker.problem(value)):
            problems.append(f"{action.option_strings[0]} {problem}")
    return problems
