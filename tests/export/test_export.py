"""OpenCLIP export round trip: `local-dir:` models built by open_clip encode as ours; inexpressible towers refused."""
from dataclasses import asdict

import json

import open_clip
import pytest
import torch
from open_clip.transformer import QuickGELU
from transformers import BertConfig

from export import CONFIG_FILE, TIMM_SUBDIR, WEIGHTS_FILE, ExportError, absolute_paths, export, main
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


def test_a_timm_tower_without_build_arguments_is_named_so_the_folder_can_move(tmp_path):
    cfg = tiny_model_config(image_encoder="test_resnet", image_res=32)
    torch.manual_seed(0)
    ours = create_model(cfg).eval()
    assert absolute_paths(export(cfg, ours, tmp_path / "out")) == []
    assert not (tmp_path / "out" / TIMM_SUBDIR).exists()
    (tmp_path / "out").rename(tmp_path / "moved")
    theirs = open_clip.create_model(f"local-dir:{tmp_path / 'moved'}").eval()
    assert_same_embeddings(cfg, ours, theirs, open_clip.get_tokenizer(f"local-dir:{tmp_path / 'moved'}"))


def test_a_moved_folder_with_a_timm_config_fails_naming_it_and_exporting_again_works(tmp_path):
    cfg = tiny_model_config()  # test_vit at 64 px: timm needs img_size, which only a config folder can carry
    torch.manual_seed(0)
    ours = create_model(cfg).eval()
    old = (tmp_path / "out" / TIMM_SUBDIR).resolve()
    assert absolute_paths(export(cfg, ours, tmp_path / "out")) == [str(old)]
    (tmp_path / "out").rename(tmp_path / "moved")
    with pytest.raises(FileNotFoundError, match=str(old)):
        open_clip.create_model(f"local-dir:{tmp_path / 'moved'}")
    export(cfg, ours, tmp_path / "moved")
    theirs = open_clip.create_model(f"local-dir:{tmp_path / 'moved'}").eval()
    assert_same_embeddings(cfg, ours, theirs, open_clip.get_tokenizer(f"local-dir:{tmp_path / 'moved'}"))


def test_zero_and_mlp_image_heads_round_trip(tmp_path):
    cfg = tiny_model_config(embed_dim=64, image_head_layers=2, head_hidden_dim=128, text_head_layers=0)
    assert_same_embeddings(cfg, *round_trip(cfg, tmp_path))


@pytest.mark.parametrize("pooler", ["cls", "pooler", "mean"])
def test_timm_and_hf_text_round_trip(tmp_path, pooler):
    BertConfig(vocab_size=len(WORDS), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
               intermediate_size=64).save_pretrained(tmp_path / "bert")
    (tmp_path / "bert" / "vocab.txt").write_text("\n".join(WORDS))
    cfg = tiny_model_config(text_builder="hf", text_encoder=str(tmp_path / "bert"),
                            text_tokenizer=str(tmp_path / "bert" / "vocab.txt"),
                            text_pooler=pooler, text_head_layers=0, text_max_len=8)
    assert_same_embeddings(cfg, *round_trip(cfg, tmp_path))


@pytest.fixture
def tiny_openclip(tmp_path_factory):
    """Name of a seconds-on-CPU OpenCLIP ViT registered with open_clip (its model configs are global)."""
    folder = tmp_path_factory.mktemp("openclip_configs")
    (folder / "tiny-export-vit.json").write_text(json.dumps({
        "embed_dim": 24, "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16},
        "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2}}))
    open_clip.add_model_config(folder / "tiny-export-vit.json")
    return "tiny-export-vit"


@pytest.mark.parametrize("text_head_layers", [0, 1])
def test_openclip_builder_towers_round_trip(tmp_path, tiny_openclip, text_head_layers):
    cfg = tiny_model_config(image_builder="openclip", image_encoder=tiny_openclip, text_builder="openclip",
                            text_encoder=tiny_openclip, image_head_layers=0, text_head_layers=text_head_layers,
                            embed_dim=24)
    assert_same_embeddings(cfg, *round_trip(cfg, tmp_path))


def test_openclip_image_tower_with_a_head_is_refused(tmp_path, tiny_openclip):
    cfg = tiny_model_config(image_builder="openclip", image_encoder=tiny_openclip, embed_dim=24)
    with pytest.raises(ExportError, match="--image_head_layers 1 on OpenCLIP"):
        export(cfg, create_model(cfg), tmp_path / "out")


def use_quick_gelu(tower):
    """Swap every GELU of an OpenCLIP tower for QuickGELU, as OpenCLIP builds it for OpenAI-pretrained weights."""
    for block in tower.transformer.resblocks:
        block.mlp.gelu = QuickGELU()


def test_quick_gelu_round_trips_and_a_mixed_pair_is_refused(tmp_path, tiny_openclip):
    cfg = tiny_model_config(image_builder="openclip", image_encoder=tiny_openclip, text_builder="openclip",
                            text_encoder=tiny_openclip, image_head_layers=0, embed_dim=24)
    torch.manual_seed(0)
    ours = create_model(cfg).eval()
    use_quick_gelu(ours.visual_encoder)
    with pytest.raises(ExportError, match="image tower uses QuickGELU and the text tower does not"):
        export(cfg, ours, tmp_path / "mixed")
    use_quick_gelu(ours.text_encoder.clip)
    export(cfg, ours, tmp_path / "out")
    theirs = open_clip.create_model(f"local-dir:{tmp_path / 'out'}").eval()
    assert isinstance(theirs.transformer.resblocks[0].mlp.gelu, QuickGELU)
    assert_same_embeddings(cfg, ours, theirs, open_clip.get_tokenizer(f"local-dir:{tmp_path / 'out'}"))


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
    assert not (tmp_path / "out").exists()


def test_cli_exports_a_checkpoint_and_refuses_with_one_line(tmp_path, capsys):
    cfg = tiny_model_config()
    torch.save({"model": create_model(cfg).state_dict(), "args": asdict(cfg)}, tmp_path / "ok.pth")
    assert main(["--checkpoint", str(tmp_path / "ok.pth"), "--out", str(tmp_path / "ok")]) == 0
    assert (tmp_path / "ok" / WEIGHTS_FILE).is_file()
    note = capsys.readouterr().out.splitlines()[-1]
    assert note.startswith("note:") and str((tmp_path / "ok" / TIMM_SUBDIR).resolve()) in note
    bad = tiny_model_config(text_head_layers=2)
    torch.save({"model": create_model(bad).state_dict(), "args": asdict(bad)}, tmp_path / "bad.pth")
    assert main(["--checkpoint", str(tmp_path / "bad.pth"), "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--text_head_layers 2" in err


class PairSet(torch.utils.data.Dataset):
    """Preprocessed images, each with `targets[i]` (our index, a label, or CLIP_benchmark's caption list)."""

    def __init__(self, images, targets, captions=()):
        self.images, self.targets = images, targets
        self.text = [caption for pair in captions for caption in pair]  # our retrieval set's fields
        self.img2txt = [[2 * index, 2 * index + 1] for index in range(len(captions))]

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        return self.images[index], self.targets[index]


def test_clip_benchmark_metrics_equal_ours(tmp_path):
    from clip_benchmark.metrics import zeroshot_classification, zeroshot_retrieval

    from engine.evaluation import evaluate_retrieval, evaluate_zeroshot
    cfg = tiny_model_config()
    ours, theirs, tokenizer = round_trip(cfg, tmp_path)
    torch.manual_seed(1)
    images = torch.randn(12, 3, cfg.image_res, cfg.image_res)
    words = ["red", "blue", "green", "round", "square", "small"]
    captions = [(f"a {words[i % 6]} shape number {i}", f"picture {i} of {words[(i * 5) % 6]} things")
                for i in range(12)]
    labels = torch.arange(12) % 3
    classnames, templates = ["circle", "square", "triangle"], ["a photo of a {}.", "a drawing of a {}."]
    cpu = torch.device("cpu")

    mine = evaluate_retrieval(ours, create_tokenizer(cfg), PairSet(images, list(range(12)), captions), cpu,
                              batch_size=5, workers=0)
    loader = torch.utils.data.DataLoader(PairSet(images, captions), batch_size=5, collate_fn=lambda rows: (
        torch.stack([row[0] for row in rows]), [list(row[1]) for row in rows]))
    benchmark = zeroshot_retrieval.evaluate(theirs, loader, tokenizer, "cpu", amp=False, recall_k_list=[1, 5])
    for k in (1, 5):
        assert mine[f"txt_r{k}"] == pytest.approx(100 * benchmark[f"text_retrieval_recall@{k}"])
        assert mine[f"img_r{k}"] == pytest.approx(100 * benchmark[f"image_retrieval_recall@{k}"])

    # clip-benchmark 1.6.2's zeroshot_classification.evaluate fails under numpy >= 2.4 in its own accuracy();
    # its classifier and logits are the parts that touch the model.
    zeroshot = PairSet(images, labels)
    mine = evaluate_zeroshot(ours, create_tokenizer(cfg), zeroshot, classnames, templates, cpu, batch_size=5, workers=0)
    classifier = zeroshot_classification.zero_shot_classifier(
        theirs, tokenizer, classnames, [t.replace("{}", "{c}") for t in templates], "cpu", amp=False)
    logits, target = zeroshot_classification.run_classification(
        theirs, classifier, torch.utils.data.DataLoader(zeroshot, batch_size=5), "cpu", amp=False)
    assert mine["zeroshot_top1"] == pytest.approx(100 * (logits.argmax(dim=1) == target).double().mean().item())
