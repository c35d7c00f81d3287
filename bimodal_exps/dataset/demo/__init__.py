"""Deterministic demo datasets in the README commands' layout: `shapes` (procedural) and `fashion` (Fashion-MNIST)."""
