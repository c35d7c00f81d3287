"""Zero-shot classification and image-text retrieval of a two-tower model (README "Zero-shot sets").

Work is split across ranks (contiguous shards of images, texts and zero-shot classes, each a whole number
of batches so every batch is the one a single process would encode) and the features are gathered once,
so a distributed evaluation gives exactly the single-process metrics. Evaluation runs in fp32.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterable, Iterator, Protocol, Sequence

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from dataset.sample_rng import iter_keeping_rng
from dataset.zeroshot import ZeroShotBenchmark
from engine.checkpoint import NonFiniteModel, preserved_rng_state
from engine.distributed import gather_shards, shard_range
from engine.evals.schedule import EvalSchedule
from engine.metrics import retrieval_metrics, topk_correct
from models.gcl.collectives import all_reduce_sum

Tokenizer = Callable[[list[str]], dict[str, torch.Tensor]]


def _to_device(tokens: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {name: value.to(device, non_blocking=True) for name, value in tokens.items()}


def _embed_dim(model: torch.nn.Module) -> int:
    """Joint embedding width (heads may be absent or MLPs, so it is the model's, not a layer's)."""
    return model.embed_dim


@torch.no_grad()
def encode_texts(model: torch.nn.Module, tokenizer: Tokenizer, texts: Sequence[str], device: torch.device,
                 batch_size: int = 256) -> torch.Tensor:
    """l2-normalised text embeddings of `texts`, in order ([0, D] for no text)."""
    chunks = [model.encode_text(_to_device(tokenizer(list(texts[i:i + batch_size])), device)).float()
              for i in range(0, len(texts), batch_size)]
    return torch.cat(chunks) if chunks else torch.empty((0, _embed_dim(model)), device=device)


@torch.no_grad()
def encode_texts_split(model: torch.nn.Module, tokenizer: Tokenizer, texts: Sequence[str], device: torch.device,
                       batch_size: int = 256) -> torch.Tensor:
    """`encode_texts` of all `texts`, each rank encoding its shard of whole batches (same rows on every rank)."""
    own = shard_range(len(texts), batch_size)
    return gather_shards(encode_texts(model, tokenizer, texts[own.start:own.stop], device, batch_size), len(texts),
                         batch_size)


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


@contextmanager
def eval_mode(*modules: torch.nn.Module) -> Iterator[None]:
    """`modules` in eval mode inside the block; each gets its own training mode back after it."""
    modes = [(module, module.training) for module in modules]
    try:
        for module in modules:
            module.eval()
        yield
    finally:
        for module, mode in modes:
            module.train(mode)


@torch.no_grad()
def encode_pairs(model: torch.nn.Module, loader: Iterable, device: torch.device, image: bool = True,
                 text: bool = True) -> Iterator[tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]]:
    """(pair ids, image embeddings or None, text embeddings or None) per batch of a training-pair `loader`
    (`dataset.collate.Batch`es); the caller sets the modes. torch's global generator is left as it was."""
    for images, tokens, pair_ids in iter_keeping_rng(loader):
        yield (pair_ids, model.encode_image(images.to(device)) if image else None,
               model.encode_text(_to_device(tokens, device)) if text else None)


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
    text_features = encode_texts_split(model, tokenizer, dataset.text, device, text_batch_size)
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


class Family(Protocol):
    """An evaluation family beyond retrieval and zero-shot (engine.evals.families)."""

    name: str

    def run(self, model: torch.nn.Module) -> dict[str, float]: ...


class EvalSuite:
    """The evaluations a run reports: COCO-style retrieval, zero-shot and the `extra` families, each when its
    data exists and `schedule` says it is due."""

    def __init__(self, tokenizer: Tokenizer, device: torch.device, retrieval_set=None,
                 zeroshot: ZeroShotBenchmark | None = None, batch_size: int = 128, zs_batch_size: int = 512,
                 workers: int = 2, extra: Sequence[Family] = (), schedule: EvalSchedule = EvalSchedule()):
        self.tokenizer, self.device = tokenizer, device
        self.retrieval_set, self.zeroshot, self.extra, self.schedule = retrieval_set, zeroshot, list(extra), schedule
        self.batch_size, self.zs_batch_size, self.workers = batch_size, zs_batch_size, workers

    @property
    def zeroshot_name(self) -> str:
        """Names the legacy zero-shot log file (`zeroshot_<name>_log.txt`)."""
        return self.zeroshot.name if self.zeroshot else "none"

    def due(self, epochs_done: int | None, epochs: int) -> bool:
        """Whether some evaluation runs after `epochs_done` of `epochs` epochs."""
        return self.schedule.any_due(epochs_done, epochs)

    def run(self, model: torch.nn.Module, epochs_done: int | None = None,
            epochs: int = 0) -> tuple[dict[str, float], dict[str, float], dict[str, float]]:
        """(retrieval, zero-shot, other families' metrics) of the evaluations due after `epochs_done` epochs
        (None: all of them); an absent or not-due evaluation gives no keys. The RNG states are put back
        afterwards (loaders and probes draw from them), so how often a run evaluates never changes its training."""
        with preserved_rng_state():
            return self._run_due(model, epochs_done, epochs)

    def _run_due(self, model: torch.nn.Module, epochs_done: int | None,
                 epochs: int) -> tuple[dict[str, float], dict[str, float], dict[str, float]]:
        retrieval, zeroshot, extra = {}, {}, {}
        if self.retrieval_set is not None and self.schedule.due("retrieval", epochs_done, epochs):
            retrieval = evaluate_retrieval(model, self.tokenizer, self.retrieval_set, self.device,
                                           self.batch_size, self.workers)
        if self.zeroshot is not None and self.schedule.due("zeroshot", epochs_done, epochs):
            zeroshot = evaluate_zeroshot(model, self.tokenizer, self.zeroshot.dataset, self.zeroshot.classnames,
                                         self.zeroshot.templates, self.device, self.zs_batch_size, self.workers)
        for family in self.extra:
            if self.schedule.due(family.name, epochs_done, epochs):
                extra.update(family.run(model))
        return retrieval, zeroshot, extra
