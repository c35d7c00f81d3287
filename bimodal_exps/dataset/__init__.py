"""Data layer: training/retrieval/zero-shot datasets, transforms, collate, demo-data builders.

Import from the submodules (`dataset.image_text`, `dataset.retrieval`, `dataset.zeroshot`,
`dataset.transforms`, `dataset.collate`, `dataset.captions`, `dataset.errors`); this package file
imports nothing so that the demo builder starts without loading torch.
"""
