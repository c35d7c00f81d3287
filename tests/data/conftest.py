"""Fixtures for the data-layer tests: a tiny shapes demo build shared by the read-back tests."""
import pytest

from data_helpers import demo_settings
from dataset.demo.build import build
from dataset.demo.writer import Layout


@pytest.fixture(scope="session")
def shapes_demo(tmp_path_factory) -> Layout:
    """One small shapes build shared by the read-back tests (treat as read-only)."""
    layout = Layout(tmp_path_factory.mktemp("shapes_demo"))
    build(layout, demo_settings())
    return layout
