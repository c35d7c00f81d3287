"""Fixtures of the robustness tests: tiny `shapes` data and one uninterrupted reference run."""
import os
from pathlib import Path

import pytest

from robustness_helpers import TINY, data_flags, run_in_process


@pytest.fixture(scope="session")
def shapes(build_shapes) -> Path:
    return build_shapes("shapes", 96, 40, 2, 32)


@pytest.fixture(scope="session")
def common(shapes) -> str:
    """Flags of every training run in these tests (2 epochs of 6 steps, a checkpoint every 4 steps)."""
    return f"{data_flags(shapes)} {TINY} --epochs 2 --save_every_steps 4 --keep_checkpoints 1"


@pytest.fixture(scope="session")
def reference(common, tmp_path_factory) -> Path:
    """The uninterrupted run that interrupted-and-resumed runs must reproduce exactly."""
    out = tmp_path_factory.mktemp("reference")
    assert run_in_process(f"{common} --output_dir {out}") == 0
    return out


@pytest.fixture
def previous_run(reference, tmp_path) -> Path:
    """An output folder holding a finished run's checkpoint (a hard link to the reference's), for runs that
    must fail without touching it."""
    out = tmp_path / "previous_run"
    out.mkdir()
    os.link(reference / "checkpoint_last.pth", out / "checkpoint_last.pth")
    return out
