"""Evaluation metrics computed from embeddings: image-text retrieval recall and zero-shot accuracy.

Ranks come straight from the full similarity matrix (no ALBEF-style top-k re-ranking): the rank of a
query is the number of candidates scoring strictly higher than its best ground-truth candidate.
"""
from __future__ import annotations

from typing import Sequence

import torch

RECALL_KS = (1, 5, 10)


def _txt2img_tensor(img2txt: Sequence[Sequence[int]], num_texts: int, device: torch.device) -> torch.Tensor:
    txt2img = torch.full((num_texts,), -1, dtype=torch.long)
    for image_index, caption_indices in enumerate(img2txt):
        txt2img[list(caption_indices)] = image_index
    if (txt2img < 0).any():
        raise ValueError("every caption must belong to exactly one image (img2txt leaves captions unassigned)")
    return txt2img.to(device)


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
        best_positive = sims.masked_fill(txt2img[None, :] != rows[:, None], float("-inf")).amax(dim=1)
        i2t[start:start + chunk_size] = (sims > best_positive[:, None]).sum(dim=1)
    t2i = torch.empty(text_features.shape[0], dtype=torch.long, device=device)
    for start in range(0, text_features.shape[0], chunk_size):
        sims = text_features[start:start + chunk_size] @ image_features.T
        positive = sims.gather(1, txt2img[start:start + chunk_size, None])
        t2i[start:start + chunk_size] = (sims > positive).sum(dim=1)
    return i2t, t2i


def retrieval_metrics(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    img2txt: Sequence[Sequence[int]],
) -> dict[str, float]:
    """COCO-style recall@{1,5,10} both ways in percent (txt_* image→text, img_*, r_mean)."""
    i2t, t2i = retrieval_ranks(image_features, text_features, img2txt)
    result: dict[str, float] = {}
    for prefix, ranks in (("txt", i2t), ("img", t2i)):
        for k in RECALL_KS:
            result[f"{prefix}_r{k}"] = 100.0 * (ranks < k).double().mean().item()
        result[f"{prefix}_r_mean"] = sum(result[f"{prefix}_r{k}"] for k in RECALL_KS) / len(RECALL_KS)
    result["r_mean"] = (result["txt_r_mean"] + result["img_r_mean"]) / 2
    return result


def topk_correct(logits: torch.Tensor, labels: torch.Tensor, ks: Sequence[int] = (1, 5)) -> torch.Tensor:
    """[len(ks)] float64 counts of rows whose label is among the k highest logits (k capped at #classes).

    Stays on the logits' device, so accumulating it over batches needs no host sync.
    """
    max_k = min(max(ks), logits.shape[1])
    hits = logits.topk(max_k, dim=1).indices == labels[:, None]
    return torch.stack([hits[:, : min(k, max_k)].any(dim=1).sum() for k in ks]).to(torch.float64)
