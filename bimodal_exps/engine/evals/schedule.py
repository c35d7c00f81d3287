"""Which evaluation families a run reports, and after which epochs each one runs (README "Evaluations")."""
from __future__ import annotations

from dataclasses import dataclass, field

FAMILIES = ("retrieval", "zeroshot", "linear", "nlp", "elevater")
SUITES = {"default": ("retrieval", "zeroshot"), "full": FAMILIES}
FREQUENCY_FLAGS = {"retrieval": "retrieval_freq", "zeroshot": "zeroshot_freq", "linear": "linear_freq",
                   "nlp": "nlp_eval_freq"}


def parse_eval_suite(text: str) -> tuple[str, ...]:
    """`default` (retrieval + zero-shot), `full` (every family) or a comma list of family names."""
    if text in SUITES:
        return SUITES[text]
    names = tuple(dict.fromkeys(name.strip() for name in text.split(",") if name.strip()))
    unknown = [name for name in names if name not in FAMILIES]
    if unknown or not names:
        raise ValueError(f"unknown evaluation famil{'ies' if len(unknown) > 1 else 'y'} {', '.join(unknown) or repr(text)} "
                         f"(choose {', '.join(SUITES)} or a comma list of {', '.join(FAMILIES)})")
    return names


@dataclass(frozen=True)
class EvalSchedule:
    """After 1-based epoch e a family with frequency f runs when f > 0 and e % f == 0, or at the last epoch
    (f = 0 never runs it; None follows `eval_freq`, whose 0 means the last epoch only); epoch 0 (before
    training) only with `eval_first`."""

    families: tuple[str, ...] = SUITES["default"]
    eval_freq: int = 0
    frequencies: dict[str, int | None] = field(default_factory=dict)
    eval_first: bool = False

    def due(self, family: str, epochs_done: int | None, epochs: int) -> bool:
        """Whether `family` runs after `epochs_done` of `epochs` epochs (None: a stand-alone evaluation, which runs
        every family of the suite whatever its frequency)."""
        if family not in self.families:
            return False
        if epochs_done is None:
            return True
        frequency = self.frequencies.get(family)
        if frequency == 0:
            return False
        if epochs_done == 0:
            return self.eval_first
        every = self.eval_freq if frequency is None else frequency
        return epochs_done == epochs or bool(every and epochs_done % every == 0)

    def any_due(self, epochs_done: int | None, epochs: int) -> bool:
        """Whether some family runs after `epochs_done` epochs."""
        return any(self.due(family, epochs_done, epochs) for family in self.families)
