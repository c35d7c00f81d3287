"""Text towers: `forward(tokens: dict) -> [B, num_features]` pooled features.

* `HFTextEncoder`: a Hugging Face `AutoModel` from a local directory or the local HF cache, pooled at
  position 0 ([CLS], default), through the model's pooler head, by the masked mean of the hidden states,
  or at the template's mask token (PromptBERT, Jiang et al. 2022; the tokenizer fills the template);
  with pretrained weights off it is built from its config (random init, no download).
* `BPETextEncoder`: open_clip's from-scratch `TextTransformer` (causal mask, final LayerNorm, pooling at
  the EOT token = the largest id of each row) over open_clip's BPE vocabulary.
* `OpenCLIPTextEncoder`: the text half of an OpenCLIP model (`open_clip.create_model`), including its
  `text_projection`; same tokens and pooling as `BPETextEncoder`.
"""
from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path

import torch
from open_clip.transformer import TextTransformer
from torch import nn
from transformers import AutoConfig, AutoModel, DistilBertConfig, PretrainedConfig, PreTrainedModel

from models.adapters import add_bottleneck_adapters, add_peft_adapter
from models.config import ModelBuildError, ModelConfig, Pretrained
from models.pretrained import CACHE_HINT, PretrainedWeightsError, hf_hub_cache_dir, hub_offline, load_aligned
from models.tokenizer import load_hf_tokenizer

BPE_VOCAB_SIZE = 49408  # open_clip SimpleTokenizer: 256 bytes + 256 end-of-word bytes + 48,894 merges + 2 specials

# Configurations usable offline for random init when the hub config is not cached: library defaults
# that equal the published model's config.json.
BUILTIN_CONFIGS: dict[str, type[PretrainedConfig]] = {
    "distilbert-base-uncased": DistilBertConfig,
    "distilbert/distilbert-base-uncased": DistilBertConfig,
}


class HFTextEncoder(nn.Module):
    """A Hugging Face encoder with a pooler (`cls`, `pooler`, `mean`, `prompt`); `num_features` = the hidden size.

    mask_token_id: the tokenizer's mask token, needed by `prompt` (the state at each row's last mask token).
    """

    def __init__(self, transformer: PreTrainedModel, pooler: str = "cls", adapter: str = "",
                 mask_token_id: int | None = None) -> None:
        super().__init__()
        if pooler == "prompt" and mask_token_id is None:
            raise ModelBuildError("--text_pooler prompt: the tokenizer has no mask token; use --text_pooler cls or mean")
        drop_unused_pooler(transformer, pooler)
        self.mask_token_id = mask_token_id
        self.num_features = int(transformer.config.hidden_size)
        if adapter == "bottleneck_adapter":
            self.adapters = add_bottleneck_adapters(transformer)
        elif adapter:
            transformer = add_peft_adapter(transformer, adapter)
        self.transformer = transformer
        self.pooler = pooler

    def forward(self, tokens: Mapping[str, torch.Tensor]) -> torch.Tensor:
        mask = tokens.get("attention_mask")
        output = self.transformer(input_ids=tokens["input_ids"], attention_mask=mask)
        if self.pooler == "pooler":
            return output.pooler_output
        hidden = output.last_hidden_state
        if self.pooler == "mean":
            weights = torch.ones_like(tokens["input_ids"]) if mask is None else mask
            weights = weights.unsqueeze(-1).to(hidden.dtype)
            return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
        if self.pooler == "prompt":
            rows = torch.arange(hidden.shape[0], device=hidden.device)
            return hidden[rows, last_mask_positions(tokens["input_ids"], self.mask_token_id)]
        return hidden[:, 0, :]


def last_mask_positions(input_ids: torch.Tensor, mask_token_id: int) -> torch.Tensor:
    """Index of each row's last mask token (the template's, after any "[MASK]" a caption contains); error if none."""
    is_mask = input_ids == mask_token_id
    if not bool(is_mask.any(dim=1).all()):
        raise ValueError("--text_pooler prompt: a tokenised caption has no mask token; tokenise with the "
                         "tokenizer built for --text_pooler prompt (models.tokenizer.create_tokenizer)")
    positions = torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)
    return torch.where(is_mask, positions, -1).amax(dim=1)


def drop_unused_pooler(transformer: PreTrainedModel, pooler: str) -> None:
    """Remove the BERT-style pooler head unless `pooler` uses it (unused parameters break DDP); idempotent."""
    has_pooler = getattr(transformer, "pooler", None) is not None
    if pooler == "pooler" and not has_pooler:
        raise ModelBuildError(f"--text_pooler pooler: {type(transformer).__name__} has no pooler head; "
                              "use --text_pooler cls or mean")
    if has_pooler and pooler != "pooler":
        transformer.pooler = None


class PromptTokens(nn.Module):
    """CoOp-style learnable prompt vectors (Zhou et al. 2022) inserted right after the start token.

    Works on open_clip text modules (`TextTransformer` or a CLIP model: token and positional embeddings,
    causal `transformer`, `ln_final`, optional `text_projection`), pooling at the end-of-text token
    (the largest id), shifted by the number of prompts. Captions are tokenised to context − n.
    """

    def __init__(self, count: int, width: int) -> None:
        super().__init__()
        self.vectors = nn.Parameter(torch.randn(count, width) * 0.02)

    def encode(self, text: nn.Module, ids: torch.Tensor) -> torch.Tensor:
        """Pooled (and projected, if `text` has a projection) features of `ids` with the prompts inserted."""
        x = text.token_embedding(ids)
        prompts = self.vectors.to(x.dtype).unsqueeze(0).expand(x.shape[0], -1, -1)
        x = torch.cat([x[:, :1], prompts, x[:, 1:]], dim=1) + text.positional_embedding.to(x.dtype)
        x = text.ln_final(text.transformer(x, attn_mask=text.attn_mask))
        pooled = x[torch.arange(x.shape[0], device=x.device), ids.argmax(dim=-1) + len(self.vectors)]
        projection = text.text_projection
        if projection is None:
            return pooled
        return projection(pooled) if isinstance(projection, nn.Linear) else pooled @ projection


class BPETextEncoder(nn.Module):
    """open_clip's `TextTransformer` without its projection (the CLIP model owns `text_proj`)."""

    def __init__(self, width: int, heads: int, layers: int, context_length: int, prompt_tokens: int = 0) -> None:
        super().__init__()
        self.transformer = TextTransformer(context_length=context_length, vocab_size=BPE_VOCAB_SIZE, width=width,
                                           heads=heads, layers=layers, output_dim=None, pool_type="argmax")
        self.num_features = width
        self.prompts = PromptTokens(prompt_tokens, width) if prompt_tokens else None

    def forward(self, tokens: Mapping[str, torch.Tensor]) -> torch.Tensor:
        if self.prompts is not None:
            return self.prompts.encode(self.transformer, tokens["input_ids"])
        ids = tokens["input_ids"]
        # --text_max_len below --context_length: pad with the pad id 0 to the length the causal mask was built for;
        # causal attention and argmax (end-of-text) pooling make the padding invisible to the real tokens
        return self.transformer(nn.functional.pad(ids, (0, self.transformer.context_length - ids.shape[1])))


class OpenCLIPTextEncoder(nn.Module):
    """An OpenCLIP model without its image tower and logit scale: `encode_text` unnormalised."""

    def __init__(self, clip_model: nn.Module, prompt_tokens: int = 0) -> None:
        super().__init__()
        for unused in ("visual", "logit_scale", "logit_bias"):
            if hasattr(clip_model, unused):
                delattr(clip_model, unused)
        self.clip = clip_model
        self.num_features = int(clip_model.text_projection.shape[-1])
        width = clip_model.token_embedding.embedding_dim
        self.prompts = PromptTokens(prompt_tokens, width) if prompt_tokens else None

    def forward(self, tokens: Mapping[str, torch.Tensor]) -> torch.Tensor:
        if self.prompts is not None:
            return self.prompts.encode(self.clip, tokens["input_ids"])
        return self.clip.encode_text(tokens["input_ids"], normalize=False)


def create_text_tower(cfg: ModelConfig) -> nn.Module:
    """Text tower for `cfg.text_builder` and `cfg.text_encoder`, weights per `cfg.text_pretrained`."""
    if cfg.text_builder == "bpe":
        return create_bpe_tower(cfg)
    if cfg.text_builder == "openclip":
        from models.image_builders import create_openclip_model
        return OpenCLIPTextEncoder(create_openclip_model(cfg.text_encoder, cfg.text_model_tag, cfg.text_pretrained),
                                   cfg.text_prompt_tokens)
    if cfg.text_builder == "sbert":
        from models.sbert_tower import create_sbert_tower
        return create_sbert_tower(cfg.text_encoder)
    mask_token_id = None
    if cfg.text_pooler == "prompt":
        mask_token_id = load_hf_tokenizer(cfg).mask_token_id
    return create_hf_tower(cfg.text_encoder, cfg.text_pretrained, cfg.text_pooler, cfg.adapter, mask_token_id)


def create_bpe_tower(cfg: ModelConfig) -> BPETextEncoder:
    """From-scratch Transformer; a path in `text_pretrained` loads a local state dict for it."""
    tower = BPETextEncoder(cfg.text_width, cfg.text_heads, cfg.text_layers, cfg.context_length,
                           cfg.text_prompt_tokens)
    if cfg.text_pretrained is True:
        warnings.warn("text_pretrained/--init_model: no published weights exist for the from-scratch "
                      "'Transformer' text tower; it is randomly initialised", stacklevel=2)
    elif cfg.text_pretrained:
        load_aligned(tower.transformer, cfg.text_pretrained)
    return tower


def create_hf_tower(name: str, pretrained: Pretrained = False, pooler: str = "cls", adapter: str = "",
                    mask_token_id: int | None = None) -> HFTextEncoder:
    """Hugging Face encoder `name` (hub id or local directory), local files only.

    pretrained: False = random init from the config; True = weights of `name` (local directory or HF
    cache); a directory = an HF model directory with weights; a file = a state dict for `name`'s model.
    mask_token_id: the tokenizer's mask token, for `pooler="prompt"`.
    """
    if pretrained is False:
        return HFTextEncoder(AutoModel.from_config(load_text_config(name)), pooler, adapter, mask_token_id)
    if pretrained is True or Path(pretrained).is_dir():
        source = name if pretrained is True else str(pretrained)
        return HFTextEncoder(_from_pretrained(source), pooler, adapter, mask_token_id)
    transformer = AutoModel.from_config(load_text_config(name))
    drop_unused_pooler(transformer, pooler)  # before loading, so a file saved from our tower fits
    load_aligned(transformer, pretrained)
    return HFTextEncoder(transformer, pooler, adapter, mask_token_id)


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
