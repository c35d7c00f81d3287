"""Make `unimodal_exps` importable (its `unimodal` package) next to `bimodal_exps` (tests/conftest.py)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "unimodal_exps"))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # test helpers, also for spawned workers
