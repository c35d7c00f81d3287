"""The linear family on sets too small for a metric (each skipped with one line naming the set, no traceback), and
the suite leaving the RNG streams as they were."""
import random

import numpy as np
import torch

from engine.evals.families import ImageFamily, ProbeSet, ProbeSettings
from engine.evals.image import clustering_problem, probe_split_problem
from engine.evals.schedule import EvalSchedule
from engine.evaluation import EvalSuite
from engine.runtime import seed_everything


class FlatFeatures(torch.nn.Module):
    """Stands in for a CLIP model: the flattened image is both the backbone feature and the embedding."""

    def encode_image_backbone(self, images: torch.Tensor) -> torch.Tensor:
        return images.flatten(1)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(images.flatten(1).double(), dim=1).float()  # no overflow at 1e30


def labelled_images(per_class: list[int], scale: float = 1.0) -> list[tuple[torch.Tensor, int]]:
    """Images near one-hot class centres (times `scale`), `per_class[c]` of class c."""
    generator = torch.Generator().manual_seed(0)
    return [(scale * (torch.eye(4)[c].reshape(1, 2, 2) * 3 + 0.05 * torch.randn(1, 2, 2, generator=generator)), c)
            for c, count in enumerate(per_class) for _ in range(count)]


def run_family(sets: list[ProbeSet], mode: str = "pytorch") -> dict[str, float]:
    settings = ProbeSettings(mode=mode, C=1.0, knn_k=1, batch_size=4, workers=0)
    return ImageFamily(sets, torch.device("cpu"), settings).run(FlatFeatures())


def test_one_image_per_class_skips_probes_and_clustering_with_one_line_each(capsys):
    for mode in ("pytorch", "sklearn"):
        assert run_family([ProbeSet("zeroshot", labelled_images([1, 1, 1]))], mode) == {}
        out = capsys.readouterr().out.splitlines()
        assert out == ["linear family, set zeroshot (split in stratified halves): no test images; skipping its "
                       "linear probe and k-NN",
                       "linear family, set zeroshot (split in stratified halves): one image per class (3 images); "
                       "skipping its clustering scores"]


def test_single_image_classes_train_only_and_one_class_sets_are_skipped(capsys):
    results = run_family([ProbeSet("zeroshot", labelled_images([4, 4, 1]))])
    assert {"linear_zeroshot_top1", "knn_zeroshot_top1", "cluster_zeroshot_ami"} <= set(results)
    assert "1 class(es) with one image are in the training half only" in capsys.readouterr().out
    one_class = ProbeSet("folders", labelled_images([3]), train=labelled_images([3]))
    assert run_family([one_class]) == {}
    out = capsys.readouterr().out
    assert "set folders: training images of 1 class (needs 2); skipping its linear probe and k-NN" in out
    assert "set folders: 1 class (needs 2); skipping its clustering scores" in out


def test_problem_checks_accept_the_smallest_usable_sets():
    assert probe_split_problem(torch.tensor([0, 1]), torch.tensor([1])) is None
    assert probe_split_problem(torch.tensor([0, 1]), torch.tensor([], dtype=torch.long)) == "no test images"
    assert probe_split_problem(torch.tensor([], dtype=torch.long), torch.tensor([0])).startswith("training images of 0")
    assert clustering_problem(torch.tensor([0, 0, 1])) is None
    assert clustering_problem(torch.tensor([0, 1])) == "one image per class (2 images)"


def test_a_diverged_sgd_probe_is_skipped_not_reported_as_an_accuracy(capsys):
    # features of norm ~1e30: the first SGD step sends the logits to inf, argmax of NaN rows is class 0
    huge = ProbeSet("huge", labelled_images([6, 6, 6], 1e30), train=labelled_images([6, 6, 6], 1e30))
    results = run_family([huge])
    assert not any(key.startswith("linear_") for key in results) and "knn_huge_top1" in results
    out = capsys.readouterr().out.splitlines()
    assert out == ["linear family, set huge: the SGD probe diverged on raw features (non-finite test logits after "
                   "epoch 1); skipping its linear probe (try --linear_prob_mode sklearn)"]


def test_a_barely_trained_sgd_probe_is_reported_with_a_warning(capsys):
    # features of norm ~3e-3: 100 steps at lr 0.004 leave the head at its init and the loss at ln 3
    tiny = ProbeSet("tiny", labelled_images([6, 6, 6], 1e-3), train=labelled_images([6, 6, 6], 1e-3))
    assert "linear_tiny_top1" in run_family([tiny])
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and out[0].startswith("linear family, set tiny: the SGD probe's training loss only fell "
                                               "from 1.099 to 1.099")  # ln 3
    assert out[0].endswith("its head barely trained and its accuracy says little about the features "
                           "(try --linear_prob_mode sklearn)")
    assert run_family([ProbeSet("plain", labelled_images([6, 6, 6]), train=labelled_images([6, 6, 6]))])
    assert capsys.readouterr().out == ""  # unscaled, the probe trains: no warning


def test_evaluation_leaves_every_rng_stream_as_it_was():
    # loaders and the SGD probe draw from the global generators; evaluating must not shift a run's later dropout,
    # augmentation or loss sampling, or how often a run evaluates would change what it trains
    family = ImageFamily([ProbeSet("zeroshot", labelled_images([6, 6, 6]))], torch.device("cpu"),
                         ProbeSettings(mode="pytorch", C=1.0, knn_k=1, batch_size=4, workers=0))
    suite = EvalSuite(tokenizer=None, device=torch.device("cpu"), extra=[family],
                      schedule=EvalSchedule(families=("linear",)))
    seed_everything(5)
    expected = torch.rand(3), np.random.rand(3), random.random()
    seed_everything(5)
    _, _, metrics = suite.run(FlatFeatures())
    assert "linear_zeroshot_top1" in metrics
    after = torch.rand(3), np.random.rand(3), random.random()
    assert torch.equal(after[0], expected[0]) and np.array_equal(after[1], expected[1]) and after[2] == expected[2]
