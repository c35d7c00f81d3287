"""Spawned by test_dist_eval.py: evaluate one tiny random model on the shapes data with W gloo ranks."""
from __future__ import annotations

from pathlib import Path

import torch

from dataset.retrieval import RetrievalDataset
from dataset.transforms import build_retrieval_transform, build_zeroshot_transform
from dataset.zeroshot import ZeroShotDataset, load_zeroshot_classes
from engine.distributed import gather_shards
from engine.evaluation import encode_images, evaluate_retrieval, evaluate_zeroshot, zeroshot_classifier
from models.config import ModelConfig
from models.factory import create_model, create_tokenizer
from rendezvous import gloo_group

IMAGE_BATCH, TEXT_BATCH = 8, 16  # small, so that both ranks get work (40 images, 200 captions)

CONFIG = {"image_encoder": "test_vit", "image_res": 32, "text_encoder": "Transformer", "text_width": 64, "text_heads": 2,
              "text_layers": 2, "context_length": 32, "embed_dim": 32}


def evaluate(rank: int, world: int, init_method: str, shapes: str, out_dir: str) -> None:
    """Metrics and gathered tensors of this rank, saved as rank<r>.pt."""
    torch.set_num_threads(1)
    with gloo_group(rank, world, init_method):
        torch.manual_seed(0)
        config = ModelConfig(**CONFIG)
        model, tokenizer = create_model(config).eval(), create_tokenizer(config)
        root = Path(shapes)
        retrieval_set = RetrievalDataset(root / "clip_train" / "coco_val.json",
                                         root / "datasets" / "mscoco_val" / "mscoco_val2014_subset_5k",
                                         build_retrieval_transform(32))
        zs_root = root / "datasets" / "imagenet" / "val"
        zeroshot_set = ZeroShotDataset(zs_root, build_zeroshot_transform(32))
        classnames, templates = load_zeroshot_classes(zs_root)
        device = torch.device("cpu")
        retrieval = evaluate_retrieval(model, tokenizer, retrieval_set, device, IMAGE_BATCH, 0, TEXT_BATCH)
        zeroshot = evaluate_zeroshot(model, tokenizer, zeroshot_set, classnames, templates, device, IMAGE_BATCH, 0)
        local_images, _ = encode_images(model, retrieval_set, device, IMAGE_BATCH, 0)
        result = {"metrics": {**retrieval, **zeroshot}, "local_images": local_images.shape[0],
                  "images": gather_shards(local_images, len(retrieval_set), IMAGE_BATCH),
                  "classifier": zeroshot_classifier(model, tokenizer, classnames, templates, device)}
        torch.save(result, f"{out_dir}/rank{rank}.pt")
