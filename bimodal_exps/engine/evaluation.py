"""Zero-shot classification and image-text retrieval of a two-tower model (README "Zero-shot sets").

Work is split across ranks (contiguous shards of images, texts and zero-shot classes, each a whole number
of batches so every batch is the one a single process would encode) and the features are gathered once,
so a distributed evaluation gives exactly the single-process metrics. Evaluation runs in fp32.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from dataset.zeroshot import ZeroShotBenchmark
from engine.checkpoint import NonFiniteModel
from engine.distributed import gather_shards, shard_range
from engine.metrics import retrieval_metrics, topk_correct
from models.gcl.collectives import all_reduce_sum

Tokenizer = Callable[[list[str]], dict[str, torch.Tensor]]


def _to_device(tokens: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {name: value.to(device, non_blocking=True) for name, value in tokens.items()}


def _embed_dim(model: torch.nn.Module) -> int:
    return model.vision_proj.out_features


@torch.no_grad()
def encode_texts(model: torch.nn.Module, tokenizer: Tokenizer, texts: Sequence[str], device: torch.device,
                 batch_size: int = 256) -> torch.Tensor:
    """l2-normalised text embeddings of `texts`, in order ([0, D] for no text)."""
    chunks = [model.encode_text(_to_device(tokenizer(list(texts[i:i + batch_size])), device)).float()
              for i in range(0, len(texts), batch_size)]
    return torch.cat(chunks) if chunks else torch.empty((0, _embed_dim(model)), device=device)


@torch.no_grad()
def encode_images(model: torch.nn.Module, dataset: Dataset, device: torch.device, batch_size: int,
                  workers: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(l2-normalised image embeddings, second item of each sample) over this rank's shard of `dataset`."""
    loader = DataLoader(Subset(dataset, shard_range(len(dataset), batch_size)), batch_size=batch_size, shuffle=False,
                        num_workers=workers, pin_memory=device.type == "cuda")
    features, extras = [], []
    for images, extra in loader:
        features.append(model.encode_image(images.to(device, non_blocking=True)).float())
        extras.append(torch.as_tensor(extra))
    if not features:
        return torch.empty((0, _embed_dim(model)), device=device), torch.empty((0,), dtype=torch.long)
    return torch.cat(features), torch.cat(extras)


def non_finite_rows(features: torch.Tensor) -> int:
    """How many embeddings (rows) hold a NaN/Inf."""
    return int((~torch.isfinite(features)).any(dim=1).sum().item()) if features.numel() else 0


def refuse_non_finite_embeddings(counts: dict[str, tuple[int, int]]) -> None:
    """NonFiniteModel when any embedding is NaN/Inf: the model diverged, its metrics would be meaningless.

    `counts` maps what was embedded ("images") to (non-finite rows, rows).
    """
    bad = [f"{bad} of {total} {what}" for what, (bad, total) in counts.items() if bad]
    if bad:
        raise NonFiniteModel(f"the model embeds {' and '.join(bad)} to NaN/Inf (its weights are too large or "
                             f"non-finite: the run diverged; lower --lr or set --grad_clip)")


@torch.no_grad()
def evaluate_retrieval(model: torch.nn.Module, tokenizer: Tokenizer, dataset, device: torch.device,
                       batch_size: int = 128, workers: int = 2, text_batch_size: int = 256) -> dict[str, float]:
    """Recall@{1,5,10} both ways on a COCO-style dataset (`text`, `img2txt`, items `(image, index)`)."""
    model.eval()
    texts = shard_range(len(dataset.text), text_batch_size)
    text_features = gather_shards(encode_texts(model, tokenizer, dataset.text[texts.start:texts.stop], device,
                                               text_batch_size), len(dataset.text), text_batch_size)
    image_features, _ = encode_images(model, dataset, device, batch_size, workers)
    image_features = gather_shards(image_features, len(dataset), batch_size)
    refuse_non_finite_embeddings({"images": (non_finite_rows(image_features), len(image_features)),
                                  "captions": (non_finite_rows(text_features), len(text_features))})
    return retrieval_metrics(image_features, text_features, dataset.img2txt)


@torch.no_grad()
def zeroshot_classifier(model: torch.nn.Module, tokenizer: Tokenizer, classnames: Sequence[str],
                        templates: Sequence[str], device: torch.device) -> torch.Tensor:
    """[D, C] matrix: per class, the normalised mean of its normalised prompt embeddings (classes split
    across ranks; a class's prompts are encoded the same way on any rank)."""
    model.eval()
    own = shard_range(len(classnames))
    rows = [torch.nn.functional.normalize(
        encode_texts(model, tokenizer, [template.format(name) for template in templates], device).mean(dim=0), dim=0)
        for name in classnames[own.start:own.stop]]
    weights = torch.stack(rows) if rows else torch.empty((0, _embed_dim(model)), device=device)
    return gather_shards(weights, len(classnames)).T


@torch.no_grad()
def evaluate_zeroshot(model: torch.nn.Module, tokenizer: Tokenizer, dataset, classnames: Sequence[str],
                      templates: Sequence[str], device: torch.device, batch_size: int = 512,
                      workers: int = 2) -> dict[str, float]:
    """Top-1/top-5 accuracy in percent of cosine-similarity classification against prompt ensembles."""
    classifier = zeroshot_classifier(model, tokenizer, classnames, templates, device)
    image_features, labels = encode_images(model, dataset, device, batch_size, workers)
    counts = topk_correct(image_features @ classifier, labels.to(device), ks=(1, 5))
    top1, top5, total, bad = all_reduce_sum(
        torch.cat([counts, counts.new_tensor([len(labels), non_finite_rows(image_features)])])).tolist()
    refuse_non_finite_embeddings({"zero-shot images": (int(bad), int(total)),
                                  "class prompts": (non_finite_rows(classifier.T), classifier.shape[1])})
    return {"zeroshot_top1": 100.0 * top1 / total, "zeroshot_top5": 100.0 * top5 / total}


class EvalSuite:
    """The evaluations a run reports: COCO-style retrieval and, when its data exists, zero-shot."""

    def __init__(self, tokenizer: Tokenizer, device: torch.device, retrieval_set=None,
                 zeroshot: ZeroShotBenchmark | None = None, batch_size: int = 128, zs_batch_size: int = 512,
                 workers: int = 2):
        self.tokenizer, self.device = tokenizer, device
        self.retrieval_set, self.zeroshot = retrieval_set, zeroshot
        self.batch_size, self.zs_batch_size, self.workers = batch_size, zs_batch_size, workers

    @property
    def zeroshot_name(self) -> str:
        """Names the legacy zero-shot log file (`zeroshot_<name>_log.txt`)."""
        return self.zeroshot.name if self.zeroshot else "none"

    def run(self, model: torch.nn.Module) -> tuple[dict[str, float], dict[str, float]]:
        """(retrieval metrics, zero-shot metrics); an absent set gives an empty dict."""
        retrieval, zeroshot = {}, {}
        if self.retrieval_set is not None:
            retrieval = evaluate_retrieval(model, self.tokenizer, self.retrieval_set, self.device,
                                           self.batch_size, self.workers)
        if self.zeroshot is not None:
            zeroshot = evaluate_zeroshot(model, self.tokenizer, self.zeroshot.dataset, self.zeroshot.classnames,
                                         self.zeroshot.templates, self.device, self.zs_batch_size, self.workers)
        return retrieval, zeroshot
