"""Evaluation metrics computed from embeddings: image-text retrieval recall and zero-shot accuracy.

Ranks come straight from the full similarity matrix (no top-k re-ranking trick). They are pessimistic:
the rank of a query is the number of wrong candidates scoring at least as high as its best ground-truth
candidate, so a tie counts against the query (collapsed embeddings give recall near 0, not 100). A
non-finite score (NaN/Inf features of a diverged model) counts as the worst score, and a query whose own
ground-truth score is non-finite is never a hit at any k.
"""
from __future__ import annotations

from typing import Sequence

import torch

RECALL_KS = (1, 5, 10)
NEVER_RETRIEVED = torch.iinfo(torch.long).max  # the rank of a query whose ground-truth score is non-finite


def _txt2img_tensor(img2txt: Sequence[Sequence[int]], num_texts: int, device: torch.device) -> torch.Tensor:
    txt2img = torch.full((num_texts,), -1, dtype=torch.long)
    for image_index, caption_indices in enumerate(img2txt):
        txt2img[list(caption_indices)] = image_index
    if (txt2img < 0).any():
        raise ValueError("every caption must belong to exactly one image (img2txt leaves captions unassigned)")
    return txt2img.to(device)


def pessimistic_ranks(scores: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
    """Per row, the rank of its best positive: how many negatives score >= it (ties count against it).

    `positive` is a boolean mask of `scores`' shape. Non-finite scores rank below every finite one; a row
    whose best positive is non-finite gets NEVER_RETRIEVED, beyond any k.
    """
    scores = scores.masked_fill(~torch.isfinite(scores), float("-inf"))
    best_positive = scores.masked_fill(~positive, float("-inf")).amax(dim=1, keepdim=True)
    ranks = ((scores >= best_positive) & ~positive).sum(dim=1)
    return ranks.masked_fill(torch.isinf(best_positive.squeeze(1)), NEVER_RETRIEVED)


@torch.no_grad()
def retrieval_ranks(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    img2txt: Sequence[Sequence[int]],
    chunk_size: int = 1024,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (image->text ranks [N_img], text->image ranks [N_txt]); rank 0 means retrieved first."""
    device = image_features.device
    txt2img = _txt2img_tensor(img2txt, text_features.shape[0], device)
    # Positive scores are read from the same matmul as the candidates, so a query never outranks itself
    # through rounding differences.
    i2t = torch.empty(image_features.shape[0], dtype=torch.long, device=device)
    for start in range(0, image_features.shape[0], chunk_size):
        sims = image_features[start:start + chunk_size] @ text_features.T
        rows = torch.arange(start, start + sims.shape[0], device=device)
        i2t[start:start + chunk_size] = pessimistic_ranks(sims, txt2img[None, :] == rows[:, None])
    t2i = torch.empty(text_features.shape[0], dtype=torch.long, device=device)
    images = torch.arange(image_features.shape[0], device=device)
    for start in range(0, text_features.shape[0], chunk_size):
        sims = text_features[start:start + chunk_size] @ image_features.T
        positive = images[None, :] == txt2img[start:start + chunk_size, None]
        t2i[start:start + chunk_size] = pessimistic_ranks(sims, positive)
    return i2t, t2i


def retrieval_metrics(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    img2txt: Sequence[Sequence[int]],
) -> dict[str, float]:
    """COCO-style recall@{1,5,10} both ways in percent: txt_r* (image->text), img_r*, their means, r_mean."""
    i2t, t2i = retrieval_ranks(image_features, text_features, img2txt)
    result: dict[str, float] = {}
    for prefix, ranks in (("txt", i2t), ("img", t2i)):
        for k in RECALL_KS:
            result[f"{prefix}_r{k}"] = 100.0 * (ranks < k).double().mean().item()
        result[f"{prefix}_r_mean"] = sum(result[f"{prefix}_r{k}"] for k in RECALL_KS) / len(RECALL_KS)
    result["r_mean"] = (result["txt_r_mean"] + result["img_r_mean"]) / 2
    return result


def topk_correct(logits: torch.Tensor, labels: torch.Tensor, ks: Sequence[int] = (1, 5)) -> torch.Tensor:
    """[len(ks)] float64 counts of rows whose label ranks within the first k (k capped at #classes).

    Ranks are pessimistic as in retrieval: classes tying with the label count against it, and a row whose
    label logit is non-finite (a NaN row) is never correct. Stays on the logits' device, so accumulating it
    over batches needs no host sync.
    """
    positive = torch.nn.functional.one_hot(labels, logits.shape[1]).bool()
    ranks = pessimistic_ranks(logits, positive)
    return torch.stack([(ranks < min(k, logits.shape[1])).sum() for k in ks]).to(torch.float64)
