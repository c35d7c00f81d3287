"""Deterministic demo datasets in the seed-000 layout: `shapes` (procedural) and `fashion` (Fashion-MNIST)."""
