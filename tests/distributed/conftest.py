"""Fixtures of the distributed tests: the tiny `shapes` demo data set (built once per session)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # dist_helpers, also for spawned workers

from dataset.demo.build import main as build_demo  # noqa: E402


@pytest.fixture(scope="session")
def shapes(tmp_path_factory) -> Path:
    """256 training pairs, 40 retrieval images (200 captions), 36 zero-shot classes × 2 images, 32 px."""
    root = tmp_path_factory.mktemp("shapes")
    code = build_demo(["--source", "shapes", "--out", str(root), "--num_train", "256", "--num_val", "40",
                       "--num_zeroshot_per_class", "2", "--image_size", "32"])
    if code != 0:
        raise RuntimeError(f"building the shapes demo data failed with status {code}")
    return root
