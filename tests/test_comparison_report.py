"""The loss-comparison report's statistics: per-cell mean/std, the small-batch Δ and its standard error; the
hand-written blocks of the results page survive its regeneration."""
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from comparison_report import (NOTES_BEGIN, NOTES_END, OTHERS_BEGIN, OTHERS_END, RunResult,  # noqa: E402
                               batch_effect, effect_summary, summarise, write_report)


def _run(loss: str, batch: int, seed: int, r1: float) -> RunResult:
    return RunResult(loss, batch, seed, [{"txt_r1": r1, "img_r1": r1, "r1_mean": r1, "zeroshot_top1": 50.0}])


def _grid(values: dict[tuple[str, int], list[float]]) -> list[RunResult]:
    return [_run(loss, batch, seed, r1) for (loss, batch), r1s in values.items() for seed, r1 in enumerate(r1s)]


def test_delta_and_standard_error_over_seeds():
    rows = summarise(_grid({("clip", 32): [10.0, 12.0], ("clip", 128): [20.0, 20.0]}))
    (effect,) = batch_effect(rows)
    assert (effect["small"], effect["large"]) == (32, 128)
    assert effect["delta_r1_mean"] == pytest.approx(11.0 - 20.0)
    assert effect["se_r1_mean"] == pytest.approx(math.sqrt(2.0) / math.sqrt(2))  # std √2 over 2 seeds, and 0


def test_summary_separates_real_differences_from_noise():
    values = {("clip", 32): [10.0, 10.2, 9.8], ("clip", 128): [20.0, 20.2, 19.8],      # Δ −10
              ("sogclr", 32): [18.0, 18.2, 17.8], ("sogclr", 128): [20.0, 20.2, 19.8],  # Δ −2: loses less
              ("hybrid", 32): [9.0, 14.0, 4.0], ("hybrid", 128): [20.0, 20.2, 19.8]}    # Δ −11, but noisy
    rows = summarise(_grid(values))
    text = effect_summary(batch_effect(rows), rows)
    assert "it grows for 1 of 2 (sogclr) and shrinks for 0 of 2 (none)" in text


def test_one_seed_gives_no_significance_claim():
    rows = summarise(_grid({("clip", 32): [10.0], ("clip", 128): [20.0], ("sogclr", 32): [15.0],
                            ("sogclr", 128): [20.0]}))
    effects = batch_effect(rows)
    assert all(math.isnan(e["se_r1_mean"]) for e in effects)
    assert "needs at least two seeds" in effect_summary(effects, rows)


def test_regenerating_the_page_keeps_the_notes_and_the_other_benchmarks_sections(tmp_path):
    page = tmp_path / "results.md"
    page.write_text(f"# old\nold table\n{NOTES_BEGIN}\nmy notes\n{NOTES_END}\nold plots\n"
                    f"{OTHERS_BEGIN}\n## Distillation\nits table\n{OTHERS_END}\n")
    grid = {"ita_types": ["clip"], "batch_sizes": [32], "seeds": [0], "epochs": 1, "train_frac": 1.0,
            "warmup_frac": 0.1, "demo_source": "shapes", "demo_counts": {"train_pairs": 64, "retrieval_images": 8,
                                                                         "zeroshot_classes": 4},
            "config": "c.yaml", "extra_flags": [], "threads": 1}
    write_report([_run("clip", 32, 0, 10.0)], grid, tmp_path / "r.json", page, tmp_path / "plots", None)
    text = page.read_text()
    assert "old table" not in text and "old plots" not in text
    assert f"{NOTES_BEGIN}\nmy notes\n{NOTES_END}" in text
    assert text.endswith(f"{OTHERS_BEGIN}\n## Distillation\nits table\n{OTHERS_END}\n")
