"""OpenCLIP export round trip: `local-dir:` models built by open_clip encode as ours; inexpressible towers refused."""
from dataclasses import asdict

import open_clip
import pytest
import torch
from transformers import BertConfig

from export import CONFIG_FILE, WEIGHTS_FILE, ExportError, export, main
from models.factory import create_model, create_tokenizer, tiny_model_config

CAPTIONS = ["a red circle", "two blue squares " * 12, "cat", ""]
WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "red", "circle", "two", "blue", "squares", "cat"]


def round_trip(cfg, tmp_path):
    """(our model, OpenCLIP's model and tokenizer) after exporting a random-init model of `cfg`."""
    torch.manual_seed(0)
    ours = create_model(cfg).eval()
    export(cfg, ours, tmp_path / "out")
    theirs, _, _ = open_clip.create_model_and_transforms(f"local-dir:{tmp_path / 'out'}")
    return ours, theirs.eval(), open_clip.get_tokenizer(f"local-dir:{tmp_path / 'out'}")


def assert_same_embeddings(cfg, ours, theirs, tokenizer):
    """Same images and tokens give cosine >= 0.9999 on both sides; OpenCLIP's tokenizer gives our ids."""
    images = torch.randn(3, 3, cfg.image_res, cfg.image_res)
    tokens = create_tokenizer(cfg)(CAPTIONS)
    their_ids = tokenizer(CAPTIONS)
    assert torch.equal(their_ids, tokens["input_ids"])
    with torch.no_grad():
        image_cos = (ours.encode_image(images) * theirs.encode_image(images, normalize=True)).sum(-1)
        text_cos = (ours.encode_text(tokens) * theirs.encode_text(their_ids, normalize=True)).sum(-1)
    assert image_cos.min() >= 0.9999 and text_cos.min() >= 0.9999


def test_timm_and_bpe_transformer_round_trip(tmp_path):
    cfg = tiny_model_config()
    ours, theirs, tokenizer = round_trip(cfg, tmp_path)
    assert (tmp_path / "out" / WEIGHTS_FILE).is_file() and (tmp_path / "out" / CONFIG_FILE).is_file()
    assert_same_embeddings(cfg, ours, theirs, tokenizer)


def test_zero_and_mlp_image_heads_round_trip(tmp_path):
    cfg = tiny_model_config(embed_dim=64, image_head_layers=2, head_hidden_dim=128, text_head_layers=0)
    assert_same_embeddings(cfg, *round_trip(cfg, tmp_path))


@pytest.mark.parametrize("pooler", ["cls", "mean"])
def test_timm_and_hf_text_round_trip(tmp_path, pooler):
    BertConfig(vocab_size=len(WORDS), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
               intermediate_size=64).save_pretrained(tmp_path / "bert")
    (tmp_path / "bert" / "vocab.txt").write_text("\n".join(WORDS))
    cfg = tiny_model_config(text_builder="hf", text_encoder=str(tmp_path / "bert"), text_tokenizer=str(tmp_path / "bert" / "vocab.txt"),
                            text_pooler=pooler, text_head_layers=0, text_max_len=8)
    assert_same_embeddings(cfg, *round_trip(cfg, tmp_path))


@pytest.mark.parametrize("overrides, named", [
    ({"image_builder": "torchvision", "image_encoder": "resnet18"}, "--image_builder torchvision"),
    ({"image_head_layers": 3}, "--image_head_layers 3"),
    ({"text_head_layers": 2}, "--text_head_layers 2"),
    ({"text_prompt_tokens": 2}, "--text_prompt_tokens"),
])
def test_inexpressible_towers_are_named(tmp_path, overrides, named):
    cfg = tiny_model_config(**overrides)
    with pytest.raises(ExportError, match=named):
        export(cfg, create_model(cfg), tmp_path / "out")


def test_cli_exports_a_checkpoint_and_refuses_with_one_line(tmp_path, capsys):
    cfg = tiny_model_config()
    torch.save({"model": create_model(cfg).state_dict(), "args": asdict(cfg)}, tmp_path / "ok.pth")
    assert main(["--checkpoint", str(tmp_path / "ok.pth"), "--out", str(tmp_path / "ok")]) == 0
    assert (tmp_path / "ok" / WEIGHTS_FILE).is_file()
    bad = tiny_model_config(text_head_layers=2)
    torch.save({"model": create_model(bad).state_dict(), "args": asdict(bad)}, tmp_path / "bad.pth")
    assert main(["--checkpoint", str(tmp_path / "bad.pth"), "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--text_head_layers 2" in err
