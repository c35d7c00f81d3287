"""The CC3M/CC12M recipes (configs/cc3m, configs/cc12m) load through clip.py's parser, set only flags that their
loss reads, and build their loss (on the meta device: nothing is allocated) and, once per data set, their towers."""
from pathlib import Path

import pytest
import torch
from ruamel.yaml import YAML

import clip
from cli.options import parse_args
from models.factory import create_model
from models.losses import LOSS_HPARAMS, build_loss, used_hparams

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
RECIPES = sorted(path for folder in ("cc3m", "cc12m") for path in (CONFIGS / folder).glob("*.yaml")
                 if path.name != "base.yaml")
# the global contrastive family plus clip and siglip: one recipe each, per data set
EMBED_DIM = {"cc3m": 1024, "cc12m": 512}  # OpenCLIP RN50 / ViT-B-32 without extra heads
FAMILY = {"clip", "siglip", "sogclr", "isogclr", "isogclr_tempnet", "infosogclr", "hybrid",
          "fastclip_v0", "fastclip_v1", "fastclip_v2", "fastclip_v3"}


def recipe_keys(path: Path) -> set[str]:
    """Flag names set by the recipe or its bases."""
    values = YAML(typ="safe").load(path.read_text(encoding="utf-8"))
    base = values.pop("base", None)
    keys = {str(key).replace("-", "_") for key in values}
    return keys | (recipe_keys(path.parent / base) if base else set())


def test_every_loss_of_the_family_has_a_recipe_per_data_set():
    for folder in ("cc3m", "cc12m"):
        assert {path.stem for path in RECIPES if path.parent.name == folder} == FAMILY


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_recipe_parses_and_builds_its_loss(path):
    args, warnings = parse_args(["--config", str(path)])
    assert args.ita_type == path.stem and not warnings
    unread = {key for key in recipe_keys(path) & set(LOSS_HPARAMS) if key not in used_hparams(args.ita_type)}
    assert not unread, f"{path.name} sets hyper-parameters its loss does not read: {unread}"
    assert args.dataset_type == "webdataset" and args.data_size and args.train_num_samples
    clip.model_config_of(args, pretrained=False)
    hparams = {name: getattr(args, name) for name in LOSS_HPARAMS}
    with torch.device("meta"):
        build_loss(args.ita_type, num_samples=args.data_size, embed_dim=EMBED_DIM[path.parent.name], **hparams)


@pytest.mark.parametrize("folder, per_gpu, epochs, image", [("cc3m", 128, 37, "RN50"), ("cc12m", 256, 33, "ViT-B-32")])
def test_shared_settings_are_fastclips(folder, per_gpu, epochs, image):
    """Global batch 1024 (CC3M) / 2048 (CC12M) on 8 GPUs, AdamW, wd 0.1, 10k warm-up iterations then cosine."""
    args, _ = parse_args(["--config", str(CONFIGS / folder / "sogclr.yaml")])
    assert (args.batch_size_train * 8, args.epochs, args.image_encoder, args.image_builder) == (
        per_gpu * 8, epochs, image, "openclip")
    assert (args.opt, args.weight_decay, args.warmup_steps, args.lr_schedule, args.sched) == (
        "adamw", 0.1, 10000, "step", "cosine")
    model = create_model(clip.model_config_of(args, pretrained=False))  # random init on the CPU, no download
    assert model.embed_dim == EMBED_DIM[folder]
    v3, _ = parse_args(["--config", str(CONFIGS / folder / "fastclip_v3.yaml"), "--lr", "5e-4"])
    assert v3.lr == 5e-4 and v3.rho == {"cc3m": 6.5, "cc12m": 8.5}[folder]  # flags still override


@pytest.mark.parametrize("folder, betas", [("cc3m", (0.999, 1e-8)), ("cc12m", (0.98, 1e-6))])
def test_fastclip_v2_tau_rule_uses_fastclips_adam_settings_of_the_tower(folder, betas):
    """FastCLIP's per-sample τ rule reuses its optimiser's β2/ε: ResNet (CC3M) and ViT (CC12M) settings."""
    args, _ = parse_args(["--config", str(CONFIGS / folder / "fastclip_v2.yaml")])
    assert (args.tau_beta2, args.tau_eps) == betas
