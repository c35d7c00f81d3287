"""The evaluation families beyond retrieval and zero-shot, each `run(model) -> {key: value in percent}`.

Under torch.distributed every rank encodes its shard and gathers the features; the probes then run on rank 0
and their metrics are broadcast, so every world size reports the same numbers on every rank.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from dataset.zeroshot import ZeroShotBenchmark
from engine.distributed import broadcast_from_main
from engine.evals import elevater, image, text
from engine.evaluation import Tokenizer, encode_texts_split, zeroshot_classifier
from models.gcl.collectives import rank_and_world


def on_rank0(compute: Callable[[], dict[str, float]]) -> dict[str, float]:
    """`compute()` on rank 0, its result broadcast to every rank (work that needs no collective)."""
    return broadcast_from_main(compute() if rank_and_world()[0] == 0 else None)


# The SGD probe counts as barely trained when its last epoch's loss is above this share of its first epoch's:
# a set under 1024 images takes one step per epoch, and features of small norm move the head little per step.
UNDERTRAINED_LOSS_RATIO = 0.9


@dataclass
class ProbeSet:
    """Labelled images for the frozen-feature probes; without `train`, `test` is split in stratified halves."""

    name: str
    test: Dataset
    train: Dataset | None = None


@dataclass
class ProbeSettings:
    """`--linear_prob_mode`, `--linear_C`, `--knn_k`, `--knn_temp`, `--seed` and the loader sizes."""

    mode: str = "pytorch"
    C: float | None = None
    knn_k: int = 20
    knn_temp: float = 0.07
    seed: int = 0
    batch_size: int = 128
    workers: int = 2


class ImageFamily:
    """Linear probe and k-NN on backbone features, k-means clustering of the embeddings, per probe set."""

    name = "linear"

    def __init__(self, sets: Sequence[ProbeSet], device: torch.device, settings: ProbeSettings) -> None:
        self.sets, self.device, self.settings = list(sets), device, settings

    def _features(self, model: torch.nn.Module, dataset: Dataset, embeddings: bool = False):
        return image.backbone_features(model, dataset, self.device, self.settings.batch_size, self.settings.workers,
                                       embeddings)

    def run(self, model: torch.nn.Module) -> dict[str, float]:
        """`linear_<set>_top1` (+ `_best_top1` in pytorch mode), `knn_<set>_top1`, `cluster_<set>_{ami,nmi,ari}`;
        a set too small for a metric skips it with one line naming the set and the reason."""
        results: dict[str, float] = {}
        for probe in self.sets:
            results.update(self._run_set(model, probe))
        return results

    def _run_set(self, model: torch.nn.Module, probe: ProbeSet) -> dict[str, float]:
        test, test_labels = self._features(model, probe.test)
        embedded, all_labels = self._features(model, probe.test, embeddings=True)
        split = probe.train is None
        if split:
            train_rows, test_rows = image.stratified_halves(test_labels, self.settings.seed)
            train, train_labels = test[train_rows], test_labels[train_rows]
            test, test_labels = test[test_rows], test_labels[test_rows]
        else:
            train, train_labels = self._features(model, probe.train)
        results: dict[str, float] = {}
        where = f"linear family, set {probe.name}" + (" (split in stratified halves)" if split else "")
        problem = image.probe_split_problem(train_labels, test_labels)
        if problem:
            print(f"{where}: {problem}; skipping its linear probe and k-NN")
        else:
            singles = int((all_labels.bincount() == 1).sum()) if split else 0
            if singles:
                print(f"{where}: {singles} class(es) with one image are in the training half only")
            results.update(on_rank0(lambda: self._probe(probe.name, train, train_labels, test, test_labels)))
        problem = image.clustering_problem(all_labels)
        if problem:
            print(f"{where}: {problem}; skipping its clustering scores")
        else:
            results.update(on_rank0(lambda: {f"cluster_{probe.name}_{k}": v for k, v in image.clustering_scores(
                embedded, all_labels, seed=self.settings.seed).items()}))
        return results

    def _probe(self, name: str, train: torch.Tensor, train_labels: torch.Tensor, test: torch.Tensor,
               test_labels: torch.Tensor) -> dict[str, float]:
        settings = self.settings
        if settings.mode == "pytorch":
            linear = self._sgd_probe(name, train, train_labels, test, test_labels)
        else:
            C = settings.C if settings.mode == "sklearn" else None
            linear = {f"linear_{name}_top1": image.linear_probe_sklearn(train, train_labels, test, test_labels, C,
                                                                        settings.seed)["top1"]}
        knn = image.knn_top1(train, train_labels, test, test_labels, settings.knn_k, settings.knn_temp)
        return {**linear, f"knn_{name}_top1": knn}

    def _sgd_probe(self, name: str, train: torch.Tensor, train_labels: torch.Tensor, test: torch.Tensor,
                   test_labels: torch.Tensor) -> dict[str, float]:
        """The pytorch probe's keys, or none (one line naming the set) when it diverged: argmax over NaN logits
        picks class 0 for every image, which would report class 0's share as an accuracy. A one-line warning when
        its training loss barely fell: the head is still near its random init, so the accuracy says little."""
        where = f"linear family, set {name}"
        try:
            probe = image.linear_probe_pytorch(train, train_labels, test, test_labels, seed=self.settings.seed)
        except image.ProbeDiverged as diverged:
            print(f"{where}: the SGD probe diverged on raw features ({diverged}); skipping its linear probe "
                  "(try --linear_prob_mode sklearn)")
            return {}
        if probe["loss_last"] > UNDERTRAINED_LOSS_RATIO * probe["loss_first"]:
            print(f"{where}: the SGD probe's training loss only fell from {probe['loss_first']:.3f} to "
                  f"{probe['loss_last']:.3f} (raw features of mean norm {float(train.norm(dim=1).mean()):.3g}): its head "
                  "barely trained and its accuracy says little about the features (try --linear_prob_mode sklearn)")
        return {f"linear_{name}_top1": probe["top1"], f"linear_{name}_best_top1": probe["best_top1"]}


@dataclass
class TextSources:
    """Where the text evaluations read their data; None = absent (skipped)."""

    word_sets: dict[str, Path]
    lee: tuple[Path, Path] | None = None
    sts_b: Path | None = None
    senteval: Path | None = None
    captions: list[list[str]] | None = None  # per image, of a COCO-style set (caption IR and triplet proxies)
    msmarco: Path | None = None
    msmarco_corpus_max: int | None = None
    wiki_sections: Path | None = None


class TextFamily:
    """Word similarity, Lee document similarity and sentence similarity of the text embeddings."""

    name = "nlp"

    def __init__(self, tokenizer: Tokenizer, device: torch.device, sources: TextSources, templates: str = "imagenet",
                 batch_size: int = 256) -> None:
        self.tokenizer, self.device, self.sources = tokenizer, device, sources
        self.templates, self.batch_size = text.word_sim_templates(templates), batch_size

    def run(self, model: torch.nn.Module) -> dict[str, float]:
        """`wordsim_<set>`, `lee_pearson`/`lee_spearman`, `sts_b_dev`/`sts_b_test`, `senteval_*` (×100),
        `caption_ir_*`, `caption_triplet_acc`, `msmarco_*`, `wiki_sections_acc` (%)."""
        model.eval()

        def encode(texts: list[str]) -> torch.Tensor:
            return encode_texts_split(model, self.tokenizer, texts, self.device, self.batch_size).cpu()

        results = {f"wordsim_{name}": text.pair_spearman(encode, text.expand_with_templates(
            text.read_word_pairs(path), self.templates)) for name, path in self.sources.word_sets.items()}
        if self.sources.lee:
            results.update(text.lee_correlations(encode, *text.read_lee(*self.sources.lee)))
        if self.sources.sts_b:
            splits = text.read_sts_benchmark(self.sources.sts_b)
            results.update({f"sts_b_{split}": text.pair_spearman(encode, splits[split])
                            for split in ("dev", "test") if split in splits})
        if self.sources.senteval:
            results.update(text.senteval_correlations(encode, self.sources.senteval))
        if self.sources.captions:
            results.update(text.caption_proxies(encode, self.sources.captions))
        if self.sources.msmarco:
            results.update(text.msmarco_metrics(encode, *text.read_msmarco(self.sources.msmarco,
                                                                           self.sources.msmarco_corpus_max)))
        if self.sources.wiki_sections:
            results.update(text.wiki_sections_accuracy(encode, self.sources.wiki_sections))
        return results


class ElevaterFamily:
    """ELEVATER zero-shot on the single-label datasets found as `<root>/<dataset>/test/` class folders with
    `classnames.txt`/`templates.txt`, each scored with its ELEVATER metric."""

    name = "elevater"

    def __init__(self, benchmarks: Sequence[ZeroShotBenchmark], tokenizer: Tokenizer, device: torch.device,
                 batch_size: int = 128, workers: int = 2) -> None:
        self.benchmarks, self.tokenizer, self.device = list(benchmarks), tokenizer, device
        self.batch_size, self.workers = batch_size, workers

    def run(self, model: torch.nn.Module) -> dict[str, float]:
        """`elevater_<dataset>_<metric>` per dataset and `elevater_zeroshot_mean` over them."""
        results = {}
        for benchmark in self.benchmarks:
            classifier = zeroshot_classifier(model, self.tokenizer, benchmark.classnames, benchmark.templates,
                                             self.device)
            features, labels = image.backbone_features(model, benchmark.dataset, self.device, self.batch_size,
                                                       self.workers, embeddings=True)
            metric, value = elevater.dataset_metric(benchmark.name, features @ classifier.cpu(), labels)
            results[f"elevater_{benchmark.name}_{metric}"] = value
        if results:
            results["elevater_zeroshot_mean"] = float(np.mean(list(results.values())))
        return results
