"""--eval_suite and the per-family frequencies (README "Evaluations")."""
import pytest

from cli.options import UsageError, parse_args
from engine.evals.schedule import FAMILIES, EvalSchedule, parse_eval_suite


def test_suite_names_and_lists():
    assert parse_eval_suite("default") == ("retrieval", "zeroshot")
    assert parse_eval_suite("full") == FAMILIES
    assert parse_eval_suite("linear, nlp,linear") == ("linear", "nlp")
    with pytest.raises(ValueError, match="unknown evaluation family bogus"):
        parse_eval_suite("linear,bogus")


def test_family_frequency_overrides_eval_freq_and_last_epoch_always_runs():
    schedule = EvalSchedule(FAMILIES, eval_freq=2, frequencies={"linear": 3, "nlp": 0, "zeroshot": None})
    assert [e for e in range(1, 8) if schedule.due("retrieval", e, 7)] == [2, 4, 6, 7]
    assert [e for e in range(1, 8) if schedule.due("zeroshot", e, 7)] == [2, 4, 6, 7]
    assert [e for e in range(1, 8) if schedule.due("linear", e, 7)] == [3, 6, 7]
    assert not any(schedule.due("nlp", e, 7) for e in range(0, 8))
    assert schedule.due("nlp", None, 7)  # a stand-alone evaluation (--evaluate) runs the whole suite


def test_default_schedule_is_todays_end_only_and_eval_first_adds_epoch_0():
    default = EvalSchedule()
    assert [e for e in range(0, 4) if default.any_due(e, 3)] == [3]
    assert not default.due("linear", 3, 3)  # not in the default suite
    first = EvalSchedule(eval_first=True)
    assert [e for e in range(0, 4) if first.any_due(e, 3)] == [0, 3]


def test_flags_parse_into_the_schedule_and_bad_values_are_one_line_errors(capsys):
    args, _ = parse_args(["--eval_suite", "full", "--linear_freq", "2", "--eval_first",
                          "--linear_datasets", "a:/x,b:/y"])
    assert args.eval_suite == FAMILIES and args.linear_freq == 2 and args.eval_first
    assert args.linear_datasets == [("a", "/x"), ("b", "/y")]
    for bad in (["--eval_suite", "bogus"], ["--linear_datasets", "nodir"], ["--nlp_eval_freq", "-1"]):
        with pytest.raises((SystemExit, UsageError)):
            parse_args(bad)
        assert capsys.readouterr().err.strip().splitlines()[-1].startswith("clip.py: error: argument")
