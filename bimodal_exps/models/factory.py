"""Uniform entry points: `create_model(ModelConfig) -> CLIP` and `create_tokenizer(ModelConfig)`.

Tiny preset (seconds on CPU; tests and the demo), selected through the ordinary flags:
`--image_encoder test_vit --image_res 64 --text_encoder Transformer --text_width 64 --text_heads 2
--text_layers 2 --context_length 32 --embed_dim 32` (`models.config.tiny_model_config()`).
"""
from __future__ import annotations

from models.config import ModelConfig, tiny_model_config
from models.heads import resolve_embed_dim
from models.image_builders import build_image_tower
from models.locking import lock_partially
from models.model_clip import CLIP
from models.text_tower import create_text_tower
from models.tokenizer import create_tokenizer


def create_model(cfg: ModelConfig, notes: list[str] | None = None) -> CLIP:
    """Build both towers (weights per `cfg.*_pretrained`, local files only), heads and locks.

    Lines worth telling the user (a joint size set by a headless tower, partial locks) are appended to `notes`.
    """
    visual_encoder, image_dim = build_image_tower(cfg)
    text_encoder = create_text_tower(cfg)
    text_dim = text_encoder.num_features
    embed_dim, note = resolve_embed_dim(image_dim, text_dim, cfg.image_head_layers, cfg.text_head_layers,
                                        cfg.embed_dim)
    messages = [note] if note else []
    for side, tower, spec in (("image", visual_encoder, cfg.lock_image_partial),
                              ("text", text_encoder, cfg.lock_text_partial)):
        frozen = lock_partially(tower, spec)
        if spec:
            total = sum(1 for _ in tower.parameters())
            messages.append(f"--lock_{side}_partial {spec!r}: {len(frozen)} of {total} {side} tower tensors frozen")
    if notes is not None:
        notes.extend(messages)
    return CLIP(visual_encoder, text_encoder, image_dim=image_dim, text_dim=text_dim, embed_dim=embed_dim,
                image_head_layers=cfg.image_head_layers, text_head_layers=cfg.text_head_layers,
                head_hidden_dim=cfg.head_hidden_dim, head_bn=cfg.head_bn, lock_image=cfg.lock_image,
                lock_text=cfg.lock_text and not cfg.adapter)


__all__ = ["ModelConfig", "create_model", "create_tokenizer", "tiny_model_config"]
