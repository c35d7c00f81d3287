"""Uniform entry points: `create_model(ModelConfig) -> CLIP` and `create_tokenizer(ModelConfig)`.

Tiny preset (seconds on CPU; tests and the demo), selected through the ordinary flags:
`--image_encoder test_vit --image_res 64 --text_encoder Transformer --text_width 64 --text_heads 2
--text_layers 2 --context_length 32 --embed_dim 32` (`models.config.tiny_model_config()`).
"""
from __future__ import annotations

from models.config import ModelConfig, tiny_model_config
from models.image_tower import create_image_tower, image_output_dim
from models.model_clip import CLIP
from models.text_tower import create_text_tower
from models.tokenizer import create_tokenizer


def create_model(cfg: ModelConfig) -> CLIP:
    """Build both towers (weights per `cfg.*_pretrained`, local files only) and the projections."""
    visual_encoder = create_image_tower(cfg.image_encoder, cfg.image_res, cfg.image_pretrained, cfg.image_kwargs)
    text_encoder = create_text_tower(cfg)
    return CLIP(visual_encoder, text_encoder, image_dim=image_output_dim(visual_encoder),
                text_dim=text_encoder.num_features, embed_dim=cfg.embed_dim)


__all__ = ["ModelConfig", "create_model", "create_tokenizer", "tiny_model_config"]
