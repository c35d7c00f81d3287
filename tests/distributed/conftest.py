"""Fixtures of the distributed tests: the tiny `shapes` demo data set (built once per session)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # dist_helpers, also for spawned workers


@pytest.fixture(scope="session")
def shapes(build_shapes) -> Path:
    """256 training pairs, 40 retrieval images (200 captions), 36 zero-shot classes × 2 images, 32 px."""
    return build_shapes("shapes", 256, 40, 2, 32)
