"""Small English helpers shared by the demo caption grammars."""
from collections.abc import Sequence

import numpy as np


def with_article(phrase: str) -> str:
    """Prefix "a" or "an" according to the first letter of `phrase`."""
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def join_phrases(phrases: Sequence[str]) -> str:
    """"x", "x and y", "x, y and z"."""
    if len(phrases) == 1:
        return phrases[0]
    return ", ".join(phrases[:-1]) + " and " + phrases[-1]


def pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    """One element of `options`, uniformly."""
    return options[int(rng.integers(len(options)))]
