"""Shared pytest set-up: make `bimodal_exps` importable the way `clip.py` sees it."""
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "bimodal_exps"))
