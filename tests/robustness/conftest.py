"""Fixtures of the robustness tests: tiny `shapes` data and one uninterrupted reference run."""
from pathlib import Path

import pytest

from dataset.demo.build import main as build_demo
from robustness_helpers import TINY, data_flags, run_in_process


@pytest.fixture(scope="session")
def shapes(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("shapes")
    assert build_demo(["--source", "shapes", "--out", str(root), "--num_train", "96", "--num_val", "40",
                       "--num_zeroshot_per_class", "2", "--image_size", "32"]) == 0
    return root


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
