"""ITRA's --loss/--distiller names select the distillation objectives; InfoNCE maps onto clip with a learnable τ."""
import shlex

import pytest

from cli.options import UsageError, parse_args


def parse(command: str):
    return parse_args(shlex.split(command))


@pytest.mark.parametrize("flag", ["--loss", "--distiller"])
@pytest.mark.parametrize("name, ita_type", [("SimReg-SmoothL1", "simreg_smoothl1"), ("CompRess-2q", "compress_2q"),
                                            ("ProtoRKD", "dino"), ("barlowtwins", "barlowtwins"),
                                            ("compress_1q", "compress_1q"), ("SEED", "seed")])
def test_itra_names_select_the_ita_type(flag, name, ita_type):
    args, _ = parse(f"{flag} {name}")
    assert args.ita_type == ita_type


def test_infonce_is_clip_with_a_learnable_temperature_from_logit_scale():
    args, notes = parse("--loss InfoNCE --logit-scale 0.05")
    assert (args.ita_type, args.learnable_temp, args.temp) == ("clip", True, 0.05)
    assert not any("logit_scale" in n for n in notes)
    args, _ = parse("--loss infonce --temp 0.02 --no-learnable_temp")
    assert (args.learnable_temp, args.temp) == (False, 0.02)


def test_conflicts_and_unknown_names_are_one_line_errors():
    with pytest.raises(UsageError, match="selects --ita_type dino but --ita_type clip"):
        parse("--loss DINO --ita_type clip")
    assert parse("--loss DINO --ita_type dino")[0].ita_type == "dino"
    with pytest.raises(UsageError, match="unknown loss"):
        parse("--loss MoCo")
    assert parse("--loss ProtoCLIP")[0].ita_type == "protoclip"


def test_objective_flags_and_their_warnings():
    args, notes = parse("--ita_type dino --dino-teacher-temp 0.07 --num_prototypes 128 --teacher image")
    assert (args.distill_teacher_temp, args.num_prototypes, args.teacher) == (0.07, 128, "image")
    assert not any("not used" in n for n in notes)
    _, notes = parse("--ita_type simreg --memory_bank_size 10 --logit_scale 0.1")
    assert any("--memory_bank_size is not used by --ita_type simreg" in n for n in notes)
    assert any("--logit_scale is only used with --loss InfoNCE" in n for n in notes)
    args, notes = parse("--ita_type vicreg --vicreg_sim_coeff 10")  # no longer a compatibility-only flag
    assert args.vicreg_sim_coeff == 10 and not any("compatibility" in n for n in notes)
