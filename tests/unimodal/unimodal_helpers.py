"""Shared by the unimodal end-to-end tests: load the entry scripts by path, tiny-run flags."""
from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "unimodal_exps"
TINY_MODEL = ["--arch", "test_resnet", "--image-size", "32", "--dim", "16", "--mlp-dim", "32", "--workers", "0",
              "--print-freq", "100"]


def load_script(name: str) -> ModuleType:
    """unimodal_exps/<name>.py as a module (its main(argv) runs in this process)."""
    spec = importlib.util.spec_from_file_location(f"unimodal_script_{name}", SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_one_per_class_folders(out: Path) -> Path:
    """36 shapes classes × 1 image of 32 px in `out`/train and `out`/val (the tiny-run data)."""
    assert load_script("build_demo_folders").main(["--source", "shapes", "--out", str(out), "--train-per-class", "1",
                                                   "--val-per-class", "1", "--image-size", "32"]) == 0
    return out
