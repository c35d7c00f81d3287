"""Projection heads (0/1/n layers, ITRA's dimension rule), old checkpoint layout, full and partial locking."""
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from models.config import ModelBuildError, tiny_model_config
from models.factory import create_model, create_tokenizer
from models.heads import HeadDimensionError, build_head, resolve_embed_dim
from models.locking import lock_partially, parse_partial_lock

LAYOUT_BEFORE_HEADS = Path(__file__).parent / "data" / "clip_state_layout_before_heads.json"
CAPTIONS = ["a red square", "a blue circle", "a green triangle", "two squares"]


def _features_are_unit(features: torch.Tensor, batch: int, dim: int) -> None:
    assert features.shape == (batch, dim)
    torch.testing.assert_close(features.norm(dim=-1), torch.ones(batch))


def test_state_dict_of_one_layer_heads_matches_the_layout_before_heads_existed():
    """Saved by the code before configurable heads (tiny config, 32 px): same keys and shapes, loads strictly."""
    layout = json.loads(LAYOUT_BEFORE_HEADS.read_text())
    model = create_model(tiny_model_config(image_res=32))
    assert {key: list(value.shape) for key, value in model.state_dict().items()} == layout
    old_state = {key: torch.randn(shape) for key, shape in layout.items()}
    model.load_state_dict(old_state, strict=True)
    assert torch.equal(model.vision_proj.weight, old_state["vision_proj.weight"])


@pytest.mark.parametrize("layers", [0, 1, 2, 3])
def test_head_shapes_and_mlp_layout(layers):
    head = build_head(16, 16 if layers == 0 else 8, layers, hidden_dim=12, batch_norm=True)
    out = head(torch.randn(5, 16))
    assert out.shape == (5, 16 if layers == 0 else 8)
    linears = [m for m in head.modules() if isinstance(m, nn.Linear)]
    assert len(linears) == layers
    assert sum(isinstance(m, nn.BatchNorm1d) for m in head.modules()) == max(layers - 1, 0)
    if layers >= 2:
        assert [m.out_features for m in linears] == [12] * (layers - 1) + [8]
        assert all(torch.all(m.bias == 0) for m in linears) and linears[0].weight.std() < 0.03


def test_dimension_rule():
    assert resolve_embed_dim(64, 48, 1, 1, 32) == (32, None)
    size, note = resolve_embed_dim(64, 48, 0, 2, 32)
    assert size == 64 and "image tower width 64" in note
    assert resolve_embed_dim(64, 48, 1, 0, 32)[0] == 48
    assert resolve_embed_dim(64, 64, 0, 0, 32)[0] == 64
    with pytest.raises(HeadDimensionError, match="image 64 and text 48"):
        resolve_embed_dim(64, 48, 0, 0, 32)


@pytest.mark.parametrize("image_layers, text_layers", [(0, 1), (1, 0), (1, 1), (2, 2), (0, 2), (2, 1)])
def test_every_head_combination_gives_unit_features_of_the_joint_size(image_layers, text_layers):
    cfg = tiny_model_config(image_res=32, image_head_layers=image_layers, text_head_layers=text_layers,
                            head_hidden_dim=24)
    notes = []
    model = create_model(cfg, notes).eval()
    expected = 64 if 0 in (image_layers, text_layers) else cfg.embed_dim  # test_vit and the text tower are 64 wide
    assert model.embed_dim == expected and (bool(notes) == (expected != cfg.embed_dim))
    images, tokens = torch.randn(4, 3, 32, 32), create_tokenizer(cfg)(CAPTIONS)
    image_features, text_features = model(images, tokens)
    _features_are_unit(image_features, 4, expected)
    _features_are_unit(text_features, 4, expected)
    assert model.encode_image_backbone(images).shape == (4, 64)


def test_negative_head_layers_is_a_clear_error():
    with pytest.raises(ModelBuildError, match="--text_head_layers must be >= 0"):
        tiny_model_config(text_head_layers=-1)


def _one_sgd_epoch(model, cfg, steps=3):
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=0.5)
    tokens = create_tokenizer(cfg)(CAPTIONS)
    model.train()
    for step in range(steps):
        images = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(step))
        image_features, text_features = model(images, tokens)
        loss = -(image_features * text_features).sum() + image_features.pow(3).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


@pytest.mark.parametrize("side", ["image", "text"])
def test_locked_tower_is_bit_identical_and_in_eval_mode_after_training(side):
    # test_resnet has BatchNorm: its running statistics would move in train mode
    cfg = tiny_model_config(image_encoder="test_resnet", image_res=32, **{f"lock_{side}": True})
    model = create_model(cfg)
    tower = model.visual_encoder if side == "image" else model.text_encoder
    other = model.text_encoder if side == "image" else model.visual_encoder
    before = {key: value.clone() for key, value in tower.state_dict().items()}
    other_before = {key: value.clone() for key, value in other.state_dict().items()}
    _one_sgd_epoch(model, cfg)
    assert not tower.training and other.training
    assert all(p.grad is None and not p.requires_grad for p in tower.parameters())
    for key, value in tower.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert any(not torch.equal(value, other_before[key]) for key, value in other.state_dict().items())
    head = model.vision_proj if side == "image" else model.text_proj
    assert all(p.grad is not None for p in head.parameters())


def test_locked_tower_runs_without_autograd():
    cfg = tiny_model_config(image_res=32, lock_image=True)
    model = create_model(cfg)
    assert not model.encode_image_backbone(torch.randn(2, 3, 32, 32)).requires_grad
    assert model.encode_image(torch.randn(2, 3, 32, 32)).requires_grad  # the head still trains


def test_partial_lock_freezes_exactly_the_matches_and_inverts():
    assert parse_partial_lock("!blocks.0, norm") == (["blocks.0", "norm"], True)
    tower = create_model(tiny_model_config(image_res=32)).visual_encoder
    names = [name for name, _ in tower.named_parameters()]
    frozen = lock_partially(tower, "patch_embed,blocks.0.")
    assert frozen == [n for n in names if "patch_embed" in n or "blocks.0." in n] and frozen
    assert all(p.requires_grad == (n not in frozen) for n, p in tower.named_parameters())
    tower = create_model(tiny_model_config(image_res=32)).visual_encoder
    frozen = lock_partially(tower, "!norm")
    assert frozen == [n for n in names if "norm" not in n]
    assert {n for n, p in tower.named_parameters() if p.requires_grad} == {n for n in names if "norm" in n}


def test_partial_lock_through_the_config_stays_in_train_mode():
    cfg = tiny_model_config(image_res=32, lock_text_partial="token_embedding")
    notes = []
    model = create_model(cfg, notes)
    model.train()
    assert model.text_encoder.training
    assert not model.text_encoder.transformer.token_embedding.weight.requires_grad
    assert any("1 of" in note and "--lock_text_partial" in note for note in notes)
