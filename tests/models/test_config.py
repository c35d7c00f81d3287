"""ModelConfig: flag parsing, pretrained resolution, token-length defaults, validation."""
from argparse import Namespace

import pytest

from models.config import ModelConfig, parse_kwargs, parse_pretrained, tiny_model_config


@pytest.mark.parametrize("value, expected", [
    (None, None), (True, True), ("true", True), ("TIMM", True), ("1", True),
    ("false", False), ("none", False), ("0", False), ("/weights/r50.pth", "/weights/r50.pth"),
])
def test_parse_pretrained(value, expected):
    assert parse_pretrained(value) == expected


def test_from_args_init_model_sets_both_towers_and_explicit_flags_win():
    args = Namespace(init_model=True, image_encoder="ViT", text_encoder="Transformer", embed_dim=512,
                     image_res=224, image_pretrained=None, text_pretrained="false", text_max_len=None,
                     unrelated_flag=3)
    cfg = ModelConfig.from_args(args)
    assert (cfg.image_encoder, cfg.text_encoder, cfg.embed_dim, cfg.image_res) == ("ViT", "Transformer", 512, 224)
    assert cfg.image_pretrained is True and cfg.text_pretrained is False


def test_from_args_pretrained_argument_overrides_init_model():
    cfg = ModelConfig.from_args(Namespace(init_model=True), pretrained=False)
    assert cfg.image_pretrained is False and cfg.text_pretrained is False
    assert cfg == ModelConfig()


def test_from_args_keeps_paths_and_parses_image_kwargs():
    cfg = ModelConfig.from_args(Namespace(init_model=False, image_pretrained="/w.pth", image_kwargs='{"depth": 2}'))
    assert cfg.image_pretrained == "/w.pth" and cfg.text_pretrained is False
    assert cfg.image_kwargs == {"depth": 2}
    with pytest.raises(ValueError):
        parse_kwargs("[1, 2]")


def test_text_length_defaults_per_tower_kind():
    assert ModelConfig().max_text_tokens == 30
    assert ModelConfig(text_encoder="Transformer").max_text_tokens == 77
    assert tiny_model_config().max_text_tokens == 32
    assert ModelConfig(text_encoder="Transformer", text_max_len=20).max_text_tokens == 20


@pytest.mark.parametrize("kwargs", [
    {"embed_dim": 0}, {"text_width": 64, "text_heads": 3}, {"text_max_len": 1},
    {"text_encoder": "Transformer", "context_length": 32, "text_max_len": 40},
])
def test_invalid_configs_are_rejected(kwargs):
    with pytest.raises(ValueError):
        ModelConfig(**kwargs)
