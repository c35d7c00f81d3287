"""`--text_builder sbert`: a sentence-transformers model from a local directory (its pooling and Normalize modules).

Tokenisation stays ours (the directory's HF tokenizer through `HFTokenizer`), so `hf` + `--text_pooler mean`
on the same directory sees the same tokens; the two towers then give the same embedding up to normalisation.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from models.pretrained import PretrainedWeightsError, hub_offline


class SBERTTextEncoder(nn.Module):
    """`SentenceTransformer` fed our token dict; returns its `sentence_embedding`."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.sbert = model
        self.num_features = int(model.get_embedding_dimension())

    def forward(self, tokens: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return self.sbert(dict(tokens))["sentence_embedding"]


def create_sbert_tower(directory: str) -> SBERTTextEncoder:
    """Load a sentence-transformers model directory on CPU, local files only (sentence-transformers required)."""
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as error:
        raise PretrainedWeightsError("--text_builder sbert needs the sentence-transformers package "
                                     "(pip install sentence-transformers), or use --text_builder hf "
                                     "--text_pooler mean on the same directory") from error
    if not Path(directory).is_dir():
        raise PretrainedWeightsError(f"--text_builder sbert: {directory} is not a local sentence-transformers "
                                     "model directory (nothing is downloaded)")
    with hub_offline():
        return SBERTTextEncoder(SentenceTransformer(directory, device="cpu", local_files_only=True))
