"""Towers and the two-tower model: output shapes, unit norm, state-dict layout, tiny configs only."""
import copy

import pytest
import torch
from transformers import DistilBertConfig

from models.config import ModelConfig, tiny_model_config
from models.factory import create_model, create_tokenizer
from models.image_tower import VIT_B32, create_image_tower, image_output_dim, resolve_image_encoder
from models.model_clip import enable_grad_checkpointing, l2_normalize
from models.text_tower import BPE_VOCAB_SIZE, HFTextEncoder, create_hf_tower, load_text_config

CAPTIONS = ["a photo of a cat", "two dogs playing in the snow", "a red car"]


def _check_features(features: torch.Tensor, batch: int, dim: int) -> None:
    assert features.shape == (batch, dim) and features.dtype == torch.float32
    torch.testing.assert_close(features.norm(dim=-1), torch.ones(batch))


@pytest.fixture
def tiny_hf_dir(tmp_path):
    """A local directory holding a tiny DistilBERT config (no weights)."""
    DistilBertConfig(vocab_size=200, dim=48, hidden_dim=96, n_layers=2, n_heads=2).save_pretrained(tmp_path)
    return str(tmp_path)


@pytest.mark.parametrize("image_encoder, image_res", [("test_resnet", 64), ("test_vit", 96)])
def test_timm_image_towers_and_bpe_text(image_encoder, image_res, no_network):
    cfg = tiny_model_config(image_encoder=image_encoder, image_res=image_res)
    model = create_model(cfg).eval()
    tokens = create_tokenizer(cfg)(CAPTIONS)
    image_features, text_features = model(torch.randn(3, 3, image_res, image_res), tokens)
    _check_features(image_features, 3, cfg.embed_dim)
    _check_features(text_features, 3, cfg.embed_dim)


def test_vit_is_built_at_the_requested_resolution():
    tower = create_image_tower("test_vit", 96)  # timm default 160
    assert tower.patch_embed.img_size == (96, 96)
    assert tower(torch.randn(1, 3, 96, 96)).shape == (1, image_output_dim(tower))


def test_vit_alias_is_clip_style_b32_and_can_be_shrunk():
    assert resolve_image_encoder("ViT") == VIT_B32
    tower = create_image_tower("ViT", 64, extra_kwargs={"depth": 1, "embed_dim": 32, "num_heads": 2})
    assert tower.pos_embed.shape == (1, 1 + 2 * 2, 32)  # 64 / 32 = 2 patches a side, plus the class token
    assert tower(torch.randn(2, 3, 64, 64)).shape == (2, 32)


def test_image_output_dim_follows_the_pooled_head():
    tower = create_image_tower("mobilenetv3_small_050", 64)  # 288 channels pooled, then a 1024-d head layer
    assert tower(torch.randn(1, 3, 64, 64)).shape == (1, image_output_dim(tower)) == (1, 1024)


def test_unknown_image_encoder_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown image encoder 'resnet_5O'"):
        create_image_tower("resnet_5O", 64)


def test_hf_tower_from_local_config_is_random_and_sized_by_config(tiny_hf_dir, no_network):
    tower = create_hf_tower(tiny_hf_dir, pretrained=False).eval()
    assert isinstance(tower, HFTextEncoder) and tower.num_features == 48
    ids = torch.randint(0, 200, (2, 7))
    pooled = tower({"input_ids": ids, "attention_mask": torch.ones_like(ids)})
    hidden = tower.transformer(input_ids=ids).last_hidden_state
    torch.testing.assert_close(pooled, hidden[:, 0])


def test_hf_clip_model_projects_cls_features(tiny_hf_dir, no_network):
    cfg = ModelConfig(image_encoder="test_resnet", image_res=64, text_encoder=tiny_hf_dir, embed_dim=16)
    model = create_model(cfg).eval()
    assert model.text_proj.in_features == 48 and model.vision_proj.in_features == 96
    ids = torch.randint(0, 200, (4, 30))
    _check_features(model.encode_text({"input_ids": ids, "attention_mask": torch.ones_like(ids)}), 4, 16)


def test_default_text_encoder_config_is_available_offline(empty_caches):
    config = load_text_config("distilbert-base-uncased")
    assert (config.model_type, config.hidden_size, config.n_layers, config.vocab_size) == ("distilbert", 768, 6, 30522)


def test_bpe_text_tower_pools_at_eot_with_causal_mask():
    cfg = tiny_model_config()
    model = create_model(cfg).eval()
    tokens = create_tokenizer(cfg)(["a cat"])
    transformer = model.text_encoder.transformer
    assert transformer.token_embedding.num_embeddings == BPE_VOCAB_SIZE == create_tokenizer(cfg).vocab_size
    assert transformer.attn_mask.shape == (cfg.context_length, cfg.context_length)
    assert transformer.text_projection is None and model.text_proj.in_features == cfg.text_width
    changed = tokens["input_ids"].clone()
    eot = int(changed.argmax())
    changed[0, eot + 1] = 320  # a token after EOT cannot influence the EOT position (causal mask)
    torch.testing.assert_close(model.text_encoder(tokens), model.text_encoder({"input_ids": changed}))


def test_state_dict_prefixes():
    model = create_model(tiny_model_config())
    prefixes = {key.split(".")[0] for key in model.state_dict()}
    assert prefixes == {"visual_encoder", "vision_proj", "text_encoder", "text_proj"}
    assert model.vision_proj.weight.shape == (32, 64) and model.text_proj.weight.shape == (32, 64)


def test_normalisation_is_fp32_for_low_precision_activations():
    features = torch.full((2, 8), 300.0, dtype=torch.float16)  # squared norm 720,000 overflows fp16
    normalised = l2_normalize(features)
    assert normalised.dtype == torch.float32
    torch.testing.assert_close(normalised.norm(dim=-1), torch.ones(2))


@pytest.mark.parametrize("image_encoder, image_res, hf_text", [("test_vit", 32, False), ("test_resnet", 64, True)])
def test_grad_checkpointing_same_gradients_fewer_saved_activations(image_encoder, image_res, hf_text, tiny_hf_dir,
                                                                   no_network):
    """timm (ViT, ResNet), the BPE transformer and HF DistilBERT (with its dropout): same gradients, less saved."""
    extra = {"text_encoder": tiny_hf_dir} if hf_text else {}
    cfg = tiny_model_config(image_encoder=image_encoder, image_res=image_res, **extra)
    torch.manual_seed(0)
    plain = create_model(cfg).train()
    checkpointed = copy.deepcopy(plain)
    checkpointed.set_grad_checkpointing()
    images = torch.randn(2, 3, image_res, image_res)
    ids = torch.randint(0, 200, (2, 12))
    tokens = {"input_ids": ids, "attention_mask": torch.ones_like(ids)} if hf_text else create_tokenizer(cfg)(["a", "b c"])
    results = []
    for model in (plain, checkpointed):
        saved = []
        torch.manual_seed(1)
        with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
            image_features, text_features = model(images, tokens)
        (image_features[:, 0].sum() + (image_features @ text_features.T).sum()).backward()
        results.append((sum(saved), [p.grad for p in model.parameters() if p.grad is not None]))
    (saved_plain, grads_plain), (saved_ckpt, grads_ckpt) = results
    assert saved_ckpt < saved_plain
    assert len(grads_ckpt) == len(grads_plain) > 0
    for a, b in zip(grads_ckpt, grads_plain):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_grad_checkpointing_unsupported_tower_is_a_clear_error():
    with pytest.raises(ValueError, match="--grad_checkpointing: the image tower \\(Linear\\) does not support"):
        enable_grad_checkpointing(torch.nn.Linear(2, 2), "image")


def test_bpe_tower_with_text_max_len_below_context_length_embeds_short_captions_as_the_full_context():
    """Tokens cut to --text_max_len are padded to the causal mask's length; short captions embed the same."""
    short, full = tiny_model_config(text_max_len=12), tiny_model_config()
    torch.manual_seed(0)
    model = create_model(full).eval()
    captions = ["a red circle", "two blue squares on the left"]
    tokens_short, tokens_full = create_tokenizer(short)(captions), create_tokenizer(full)(captions)
    assert tokens_short["input_ids"].shape[1] == 12 < tokens_full["input_ids"].shape[1]
    torch.testing.assert_close(model.encode_text(tokens_short), model.encode_text(tokens_full))
