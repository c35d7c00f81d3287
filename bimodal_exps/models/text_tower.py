"""Text towers: `forward(tokens: dict) -> [B, num_features]` pooled features.

* `HFTextEncoder`: a Hugging Face `AutoModel` from a local directory or the local HF cache, pooled at
  position 0 ([CLS]); with pretrained weights off it is built from its config (random init, no download).
* `BPETextEncoder`: open_clip's from-scratch `TextTransformer` (causal mask, final LayerNorm, pooling at
  the EOT token = the largest id of each row) over open_clip's BPE vocabulary.
"""
from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path

import torch
from open_clip.transformer import TextTransformer
from torch import nn
from transformers import AutoConfig, AutoModel, DistilBertConfig, PretrainedConfig, PreTrainedModel

from models.config import ModelConfig, Pretrained
from models.pretrained import CACHE_HINT, PretrainedWeightsError, hf_hub_cache_dir, hub_offline, load_aligned

BPE_VOCAB_SIZE = 49408  # open_clip SimpleTokenizer: 256 bytes + 256 end-of-word bytes + 48,894 merges + 2 specials

# Configurations usable offline for random init when the hub config is not cached: library defaults
# that equal the published model's config.json.
BUILTIN_CONFIGS: dict[str, type[PretrainedConfig]] = {
    "distilbert-base-uncased": DistilBertConfig,
    "distilbert/distilbert-base-uncased": DistilBertConfig,
}


class HFTextEncoder(nn.Module):
    """A Hugging Face encoder pooled at the first position ([CLS]); `num_features` = the config's hidden size."""

    def __init__(self, transformer: PreTrainedModel) -> None:
        super().__init__()
        if getattr(transformer, "pooler", None) is not None:
            # [CLS] pooling never uses the BERT-style pooler; dropping it avoids DDP unused-parameter errors.
            transformer.pooler = None
        self.transformer = transformer
        self.num_features = int(transformer.config.hidden_size)

    def forward(self, tokens: Mapping[str, torch.Tensor]) -> torch.Tensor:
        output = self.transformer(input_ids=tokens["input_ids"], attention_mask=tokens.get("attention_mask"))
        return output.last_hidden_state[:, 0, :]


class BPETextEncoder(nn.Module):
    """open_clip's `TextTransformer` without its projection (the CLIP model owns `text_proj`)."""

    def __init__(self, width: int, heads: int, layers: int, context_length: int) -> None:
        super().__init__()
        self.transformer = TextTransformer(context_length=context_length, vocab_size=BPE_VOCAB_SIZE, width=width,
                                           heads=heads, layers=layers, output_dim=None, pool_type="argmax")
        self.num_features = width

    def forward(self, tokens: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return self.transformer(tokens["input_ids"])


def create_text_tower(cfg: ModelConfig) -> nn.Module:
    """Text tower for `cfg.text_encoder` with weights per `cfg.text_pretrained`."""
    if cfg.uses_bpe_text:
        return create_bpe_tower(cfg)
    return create_hf_tower(cfg.text_encoder, cfg.text_pretrained)


def create_bpe_tower(cfg: ModelConfig) -> BPETextEncoder:
    """From-scratch Transformer; a path in `text_pretrained` loads a local state dict for it."""
    tower = BPETextEncoder(cfg.text_width, cfg.text_heads, cfg.text_layers, cfg.context_length)
    if cfg.text_pretrained is True:
        warnings.warn("text_pretrained/--init_model: no published weights exist for the from-scratch "
                      "'Transformer' text tower; it is randomly initialised", stacklevel=2)
    elif cfg.text_pretrained:
        load_aligned(tower.transformer, cfg.text_pretrained)
    return tower


def create_hf_tower(name: str, pretrained: Pretrained = False) -> HFTextEncoder:
    """Hugging Face encoder `name` (hub id or local directory), local files only.

    pretrained: False = random init from the config; True = weights of `name` (local directory or HF
    cache); a directory = an HF model directory with weights; a file = a state dict for `name`'s model.
    """
    if pretrained is False:
        return HFTextEncoder(AutoModel.from_config(load_text_config(name)))
    if pretrained is True or Path(pretrained).is_dir():
        source = name if pretrained is True else str(pretrained)
        return HFTextEncoder(_from_pretrained(source))
    tower = HFTextEncoder(AutoModel.from_config(load_text_config(name)))
    load_aligned(tower.transformer, pretrained)
    return tower


def load_text_config(name: str) -> PretrainedConfig:
    """The model config of `name` from a local directory or the HF cache, else a built-in default."""
    try:
        with hub_offline():
            return AutoConfig.from_pretrained(name, local_files_only=True, cache_dir=_cache_dir_for(name))
    except OSError as error:
        if name in BUILTIN_CONFIGS:
            return BUILTIN_CONFIGS[name]()
        raise PretrainedWeightsError(
            f"text encoder {name!r}: no config.json in a local directory or the HF cache {hf_hub_cache_dir()} "
            f"({error}). Pass a local model directory with --text_encoder DIR, or {CACHE_HINT}.") from error


def _from_pretrained(source: str) -> PreTrainedModel:
    """`AutoModel.from_pretrained` restricted to local files, with a clear error when they are missing."""
    try:
        with hub_offline():
            return AutoModel.from_pretrained(source, local_files_only=True, cache_dir=_cache_dir_for(source))
    except OSError as error:
        raise PretrainedWeightsError(
            f"no local pretrained weights for text encoder {source!r} (looked in: "
            f"{source if Path(source).is_dir() else f'HF cache {hf_hub_cache_dir()}'}). Nothing is downloaded: "
            f"pass a local model directory with --text_encoder DIR or --text_pretrained DIR, or {CACHE_HINT}."
        ) from error


def _cache_dir_for(name: str) -> str | None:
    """The HF cache to search for a hub id (None for a local directory, which is read directly)."""
    return None if Path(name).is_dir() else str(hf_hub_cache_dir())
