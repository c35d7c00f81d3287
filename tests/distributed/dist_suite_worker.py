"""Spawned by test_dist_eval_suite.py: the probe and text families of one tiny random model with W gloo ranks."""
from __future__ import annotations

from pathlib import Path

import torch

from dataset.transforms import build_zeroshot_transform
from dataset.zeroshot import ZeroShotDataset
from engine.evals import text
from engine.evals.families import ImageFamily, ProbeSet, ProbeSettings, TextFamily, TextSources
from models.config import ModelConfig
from models.factory import create_model, create_tokenizer
from rendezvous import gloo_group


CONFIG = {"image_encoder": "test_resnet", "image_res": 32, "text_encoder": "Transformer", "text_width": 32,
          "text_heads": 2, "text_layers": 1, "context_length": 32, "embed_dim": 16}


def evaluate(rank: int, world: int, init_method: str, shapes: str, words: str, out_dir: str) -> None:
    """Metrics of this rank, saved as rank<r>.pt."""
    torch.set_num_threads(1)
    with gloo_group(rank, world, init_method):
        torch.manual_seed(0)
        config = ModelConfig(**CONFIG)
        model, tokenizer = create_model(config).eval(), create_tokenizer(config)
        device = torch.device("cpu")
        zeroshot = ZeroShotDataset(Path(shapes) / "datasets" / "imagenet" / "val", build_zeroshot_transform(32))
        probes = ImageFamily([ProbeSet("zs", zeroshot)], device, ProbeSettings(batch_size=8, workers=0))
        lee = (text.gensim_test_file("lee.cor"), text.gensim_test_file("similarities0-1.txt"))
        texts = TextFamily(tokenizer, device, TextSources({"tiny": Path(words)}, lee), "none", batch_size=16)
        torch.save({**probes.run(model), **texts.run(model)}, f"{out_dir}/rank{rank}.pt")
