"""Shared pytest set-up: make `bimodal_exps` importable the way `clip.py` sees it."""
import os
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "bimodal_exps"))


import pytest  # noqa: E402

from dataset.demo.build import main as build_demo  # noqa: E402


@pytest.fixture(scope="session")
def build_shapes(tmp_path_factory):
    """Factory for procedural `shapes` demo data in the reference repositories' layout: build(name, train, val, zs, px)."""

    def build(name: str, num_train: int, num_val: int, zeroshot_per_class: int, image_size: int) -> Path:
        root = tmp_path_factory.mktemp(name)
        code = build_demo(["--source", "shapes", "--out", str(root), "--num_train", str(num_train),
                           "--num_val", str(num_val), "--num_zeroshot_per_class", str(zeroshot_per_class),
                           "--image_size", str(image_size)])
        if code != 0:
            raise RuntimeError(f"building the shapes demo data in {root} failed with status {code}")
        return root

    return build


@pytest.fixture
def trust_cifar_checksums(monkeypatch):
    """Accept CIFAR files without the published MD5s (test data is synthetic); presence is still required."""
    import torchvision.datasets.cifar as torchvision_cifar
    monkeypatch.setattr(torchvision_cifar, "check_integrity", lambda path, md5=None: os.path.isfile(path))
