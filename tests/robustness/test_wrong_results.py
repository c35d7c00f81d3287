"""No silent wrong result: ties and NaN/Inf scores count against the query (recall and zero-shot), a
diverged run stops with one line instead of reporting R@1 = 100, its last good checkpoint is kept, and a
checkpoint with NaN weights is refused; `--resume` with `--checkpoint` is a usage error."""
from __future__ import annotations

import pytest
import torch

import clip
from engine.checkpoint import NonFiniteModel, first_non_finite
from engine.evaluation import non_finite_rows, refuse_non_finite_embeddings
from engine.metrics import NEVER_RETRIEVED, retrieval_metrics, retrieval_ranks, topk_correct
from engine.task import ContrastiveTask
from robustness_helpers import TINY, data_flags, load, run_in_process, single_error_line

IMG2TXT = [[0, 1], [2, 3], [4, 5]]  # 3 images, 2 captions each


def test_nan_features_give_zero_recall_not_100():
    images = torch.full((3, 4), float("nan"))
    texts = torch.full((6, 4), float("nan"))
    i2t, t2i = retrieval_ranks(images, texts, IMG2TXT)
    assert (i2t == NEVER_RETRIEVED).all() and (t2i == NEVER_RETRIEVED).all()
    metrics = retrieval_metrics(images, texts, IMG2TXT)
    assert all(value == 0.0 for value in metrics.values()), metrics  # also R@10 with only 3 images


def test_all_equal_features_tie_against_every_query():
    """What `--context_length 1` produced: every caption (and image) embeds to the same vector."""
    images = torch.ones(3, 4) / 2
    texts = torch.ones(6, 4) / 2
    i2t, t2i = retrieval_ranks(images, texts, IMG2TXT)
    assert i2t.tolist() == [4, 4, 4]           # the 4 other images' captions tie with the true ones
    assert t2i.tolist() == [2] * 6             # the 2 other images tie with the true one
    metrics = retrieval_metrics(images, texts, IMG2TXT)
    assert metrics["txt_r1"] == metrics["img_r1"] == 0.0 and metrics["img_r5"] == 100.0


def test_hand_built_tie_counts_only_the_tying_wrong_candidates():
    images = torch.eye(3)
    texts = torch.tensor([[1.0, 0, 0], [0.5, 0.5, 0],    # image 0: caption 1 ties images 0 and 1
                          [0, 1.0, 0], [0, 0.9, 0],
                          [0, 0, 1.0], [0.2, 0, 0.1]])   # caption 5 of image 2 scores image 0 higher
    i2t, t2i = retrieval_ranks(images, texts, IMG2TXT)
    assert t2i.tolist() == [0, 1, 0, 0, 0, 1]
    assert i2t.tolist() == [0, 0, 0]                         # every image's best caption scores 1, unbeaten
    tied = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 1.0, 0]])  # image 2 identical to image 1
    _, t2i = retrieval_ranks(tied, texts, IMG2TXT)
    assert t2i[2].item() == 1 and t2i[4].item() == 2  # caption 2 ties images 1 and 2; caption 4 scores 0 for all


def test_a_nan_wrong_candidate_ranks_last_and_a_finite_positive_still_counts():
    images = torch.eye(3)
    texts = torch.eye(3).repeat_interleave(2, dim=0)
    texts[2] = float("nan")                                  # one caption of image 1 broke
    i2t, t2i = retrieval_ranks(images, texts, IMG2TXT)
    assert i2t.tolist() == [0, 0, 0]                         # image 1 still has caption 3; NaN never outranks
    assert t2i.tolist() == [0, 0, NEVER_RETRIEVED, 0, 0, 0]


def test_zero_shot_ties_count_against_and_nan_rows_are_never_correct():
    logits = torch.tensor([[0.9, 0.1, 0.0],                  # label 0: hit
                           [0.5, 0.5, 0.1],                  # label 0 ties class 1: not top-1, top-2
                           [0.3, 0.3, 0.3],                  # label 2 ties all: rank 2
                           [float("nan")] * 3,               # diverged: never correct, not even at k >= #classes
                           [0.1, float("nan"), 0.2]])        # label 2 beats a NaN class: hit
    labels = torch.tensor([0, 0, 2, 1, 2])
    assert topk_correct(logits, labels, ks=(1, 2, 3, 5)).tolist() == [2.0, 3.0, 4.0, 4.0]


def test_non_finite_embeddings_stop_the_evaluation_naming_how_many():
    features = torch.ones(4, 3)
    features[1, 2] = float("inf")
    features[3, 0] = float("nan")
    assert non_finite_rows(features) == 2 and non_finite_rows(torch.empty(0, 3)) == 0
    refuse_non_finite_embeddings({"images": (0, 4)})
    with pytest.raises(NonFiniteModel, match=r"embeds 2 of 4 zero-shot images and 1 of 10 class prompts to NaN/Inf"):
        refuse_non_finite_embeddings({"zero-shot images": (2, 4), "class prompts": (1, 10)})


def test_first_non_finite_names_the_parameter():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
    assert first_non_finite({"model": model}) is None
    with torch.no_grad():
        model[1].bias[0] = float("inf")
    assert first_non_finite({"model": model, "loss": torch.nn.Linear(1, 1)}) == "model.1.bias"


def test_diverging_run_stops_with_one_line_and_reports_no_recall(shapes, tmp_path, capsys):
    """`--lr 1e30`: the weights stay finite (about 1e29) but every embedding is NaN."""
    code = run_in_process(f"{data_flags(shapes)} {TINY} --epochs 1 --lr 1e30 --output_dir {tmp_path}")
    assert code == 1
    message = single_error_line(capsys.readouterr().err)
    assert "NaN/Inf" in message and "--lr" in message and "no checkpoint was written" in message
    assert "R@1" not in capsys.readouterr().out
    assert not list(tmp_path.glob("*.pth")) and not (tmp_path / "log.txt").exists()


class NaNWeightsFromStep8(ContrastiveTask):
    """The real task; from its 8th forward pass on, a text-tower weight is NaN (a diverging update)."""

    calls = 0

    def forward(self, images, tokens, ids):
        NaNWeightsFromStep8.calls += 1
        if NaNWeightsFromStep8.calls == 8:
            with torch.no_grad():
                self.model.text_proj.weight[0, 0] = float("nan")
        return super().forward(images, tokens, ids)


def test_non_finite_weights_keep_the_last_good_checkpoint(shapes, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(clip, "ContrastiveTask", NaNWeightsFromStep8)
    NaNWeightsFromStep8.calls = 0
    code = run_in_process(f"{data_flags(shapes)} {TINY} --epochs 2 --save_every_steps 4 --output_dir {tmp_path}")
    assert code == 1
    message = single_error_line(capsys.readouterr().err)
    assert "non-finite weights at epoch 1, iteration 2 (first: model.text_proj.weight" in message
    assert f"{tmp_path / 'checkpoint_last.pth'} is the last good checkpoint" in message
    last = load(tmp_path / "checkpoint_last.pth")            # epoch 1's end (step 6), not the NaN model of step 8
    assert last["epoch"] == 1 and last["step"] == 6 and "mid_epoch" not in last
    assert all(torch.isfinite(value).all() for value in last["model"].values() if value.is_floating_point())


def test_a_checkpoint_with_nan_weights_is_refused(shapes, reference, tmp_path, capsys):
    checkpoint = load(reference / "checkpoint_2.pth")
    checkpoint["model"]["vision_proj.weight"][3, 1] = float("nan")
    broken = tmp_path / "diverged.pth"
    torch.save(checkpoint, broken)
    for index, flags in enumerate((f"--evaluate --checkpoint {broken}", f"--epochs 3 --resume {broken}",
                                   f"--epochs 1 --checkpoint {broken}")):
        out = tmp_path / f"out{index}"
        assert run_in_process(f"{data_flags(shapes)} {TINY} --output_dir {out} {flags}") == 1, flags
        message = single_error_line(capsys.readouterr().err)
        assert f"{broken}: non-finite weights (first: model.vision_proj.weight" in message, flags
        assert not (out / "eval_results.json").exists() and not list(out.glob("*.pth"))


def test_resume_with_checkpoint_is_a_usage_error_naming_both(tmp_path, capsys):
    code = run_in_process(f"--output_dir {tmp_path} --resume --checkpoint {tmp_path}/weights.pth")
    assert code == 1
    message = single_error_line(capsys.readouterr().err)
    assert message.startswith(f"error: --resume and --checkpoint {tmp_path}/weights.pth together")
    assert not (tmp_path / "args.json").exists()
