"""Unimodal SogCLR: self-supervised image pre-training and linear evaluation on the shared GCL core."""
