"""Every default a user gets without flags is pinned once, in docs/defaults.md: the parser's defaults, each
loss's resolved hyper-parameters, and the defaults `--help` prints. A changed default fails naming the flag."""
from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path
from typing import Any

import pytest

from cli.parser import COMPATIBILITY_FLAGS, STORE_TRUE_COMPATIBILITY_FLAGS, UNSUPPORTED_FLAGS, build_parser
from models.losses import ITA_TYPES, LOSS_HPARAMS, build_loss, used_hparams

DOC = Path(__file__).resolve().parents[2] / "docs" / "defaults.md"
HIDDEN = {*COMPATIBILITY_FLAGS, *STORE_TRUE_COMPATIBILITY_FLAGS, *UNSUPPORTED_FLAGS, "store_tau", "help"}
SIDES = {"rho_I": "img", "rho_T": "txt"}
SIDE_OF = {"rho": "rho_I", "rho_init": "rho_I"}  # the help of --rho names the per-modality default


def doc_table(heading: str) -> list[list[str]]:
    """Rows (cells without the backticks) of the first Markdown table after `## heading` in docs/defaults.md."""
    text = DOC.read_text(encoding="utf-8").split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    rows = [line.strip().strip("|").split("|") for line in text.splitlines() if line.startswith("|")]
    return [[cell.strip().strip("`") for cell in row] for row in rows[2:]]


def documented_parser_defaults() -> dict[str, Any]:
    return {flag.removeprefix("--"): ast.literal_eval(value) for flag, value, *_ in doc_table("clip.py flags")}


def documented_loss_defaults() -> dict[tuple[str, str], Any]:
    """(ita_type, flag) -> value, from rows `| --flag | value | ita_type, ita_type, ... |`."""
    table: dict[tuple[str, str], Any] = {}
    for flag, value, losses, *_ in doc_table("Loss hyper-parameters"):
        for ita_type in (name.strip().strip("`") for name in losses.split(",")):
            key = (ita_type, flag.removeprefix("--"))
            assert key not in table, f"docs/defaults.md lists {flag} for {ita_type} twice"
            table[key] = ast.literal_eval(value)
    return table


def resolved_loss_defaults(ita_type: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The value each flag `ita_type` reads takes when no flag is given: the argument its constructor received
    (its signature's default when absent), or the value the loss derived from None (e.g. FastCLIP's ρ, lr_tau)."""
    calls: list[tuple[type, inspect.BoundArguments]] = []
    probe = build_loss(ita_type, 4)
    for cls in type(probe).__mro__:
        if "__init__" in vars(cls) and cls.__module__.startswith(("models.gcl", "models.objectives")):
            monkeypatch.setattr(cls, "__init__", _recording(cls, cls.__init__, calls))
    loss = build_loss(ita_type, 4)
    received: dict[str, Any] = {}
    for _, arguments in calls:  # the most derived constructor first; its parents add what it passed on in **kw
        for name, value in arguments.arguments.items():
            received.setdefault(name, value)
    values = {}
    for flag in used_hparams(ita_type) - {"rho_init", "rho"}:
        value = received.get(flag, LOSS_HPARAMS[flag].default if flag in LOSS_HPARAMS else None)
        if value is None and flag in SIDES:
            value = loss.rho[SIDES[flag]]
        elif value is None:
            value = getattr(loss, flag, None)
        values[flag] = value
    return values


def _recording(cls: type, init, calls: list):
    def init_and_record(self, *args, **kwargs):
        arguments = inspect.signature(init).bind(self, *args, **kwargs)
        arguments.apply_defaults()
        calls.append((cls, arguments))
        init(self, *args, **kwargs)
    return init_and_record


def test_every_parser_default_is_the_documented_one():
    args = build_parser().parse_args([])
    documented = documented_parser_defaults()
    visible = {dest for dest in vars(args) if dest not in HIDDEN}
    assert sorted(visible - set(documented)) == [], "flags missing from docs/defaults.md"
    assert sorted(set(documented) - visible) == [], "docs/defaults.md lists flags the parser does not have"
    for flag, value in documented.items():
        assert getattr(args, flag) == value, f"--{flag}: default {getattr(args, flag)!r}, documented {value!r}"


@pytest.mark.parametrize("ita_type", ITA_TYPES)
def test_every_loss_resolves_the_documented_defaults(ita_type, monkeypatch):
    documented = {flag: value for (name, flag), value in documented_loss_defaults().items() if name == ita_type}
    resolved = resolved_loss_defaults(ita_type, monkeypatch)
    assert sorted(set(resolved) - set(documented)) == [], f"{ita_type}: flags missing from docs/defaults.md"
    assert sorted(set(documented) - set(resolved)) == [], f"{ita_type}: documented flags it does not read"
    for flag, value in documented.items():
        assert resolved[flag] == value, f"--{flag} of --ita_type {ita_type}: {resolved[flag]!r}, documented {value!r}"


def test_per_loss_values_written_in_the_help_texts_are_the_documented_ones():
    """`--help` names some per-loss defaults in words ("isogclr 6.0"); each such pair must match the table."""
    documented = documented_loss_defaults()
    checked = 0
    for flag, spec in LOSS_HPARAMS.items():
        for names, number in re.findall(r"([\w/]+) \(?(\d+\.\d+)", spec.help):
            target = SIDE_OF.get(flag, flag)
            for ita_type in (name for name in names.split("/") if name in ITA_TYPES):
                assert documented[ita_type, target] == float(number), f"--{flag} help: {ita_type} {number}"
                checked += 1
    assert checked >= 10


@pytest.mark.parametrize("flags, expected", [
    ({"rho_init": 3.0}, (3.0, 3.0)), ({"rho": 4.0}, (4.0, 4.0)), ({"rho_init": 3.0, "rho": 4.0}, (4.0, 4.0)),
    ({"rho": 4.0, "rho_I": 5.0}, (5.0, 4.0)), ({"rho_init": 3.0, "rho_T": 2.0}, (3.0, 2.0)),
    ({"rho_I": 5.0}, (5.0, 6.0))])
def test_the_most_specific_rho_flag_sets_each_modality(flags, expected):
    """`--rho_init` < `--rho` < `--rho_I`/`--rho_T`; a modality without any keeps the loss's default (6.0)."""
    loss = build_loss("isogclr", 4, **flags)
    assert (loss.rho["img"], loss.rho["txt"]) == expected


LOSS_CLASSES = {"clip": "CLIPLoss", "sogclr": "SogCLRLoss", "isogclr": "ISogCLRLoss", "isogclr_new": "ISogCLRLoss",
                "sogclr_dro": "ISogCLRLoss", "isogclr_tempnet": "TempNetLoss", "sogclr_mine": "InfoSogCLRLoss",
                "infosogclr": "InfoSogCLRLoss", "sogclr_v2_mine": "InfoSogCLRLoss", "hybrid": "HybridSogCLRLoss",
                **{f"fastclip_v{v}": f"FastCLIPv{v}Loss" for v in range(4)},
                "simreg": "SimRegLoss", "simreg_l1": "SimRegLoss", "simreg_smoothl1": "SimRegLoss",
                "vicreg": "VICRegLoss", "barlowtwins": "BarlowTwinsLoss", "rkd": "RKDLoss", "compress_1q": "CompRessLoss",
                "compress_2q": "CompRessLoss", "seed": "SEEDLoss", "dino": "DINOLoss", "protocpc": "ProtoCPCLoss",
                "protoclip": "ProtoCLIPLoss",
                "siglip": "SigLIPLoss"}


@pytest.mark.parametrize("ita_type", ITA_TYPES)
def test_each_ita_type_builds_its_loss(ita_type):
    """The name picks the class (one per FastCLIP version, which decides what τ is: docs/losses.md §9)."""
    loss = build_loss(ita_type, 4)
    assert type(loss).__name__ == LOSS_CLASSES[ita_type]
