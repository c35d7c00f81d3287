"""Distillation and self-supervised objectives of ITRA (docs/losses.md §15) on the contrastive loss API."""
