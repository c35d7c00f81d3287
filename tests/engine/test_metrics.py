"""Retrieval and zero-shot metrics against brute-force computations."""
import numpy as np
import pytest
import torch

from engine.metrics import retrieval_metrics, topk_correct


def brute_force_recall(sims: np.ndarray, img2txt: list[list[int]]) -> dict[str, float]:
    """The references' procedure: sort every row, take the best position of a ground truth."""
    txt2img = {t: i for i, caps in enumerate(img2txt) for t in caps}
    i2t = [min(int(np.where(np.argsort(-row) == t)[0][0]) for t in img2txt[i]) for i, row in enumerate(sims)]
    t2i = [int(np.where(np.argsort(-sims[:, t]) == txt2img[t])[0][0]) for t in range(sims.shape[1])]
    out = {}
    for prefix, ranks in (("txt", np.array(i2t)), ("img", np.array(t2i))):
        for k in (1, 5, 10):
            out[f"{prefix}_r{k}"] = 100.0 * float(np.mean(ranks < k))
        out[f"{prefix}_r_mean"] = np.mean([out[f"{prefix}_r{k}"] for k in (1, 5, 10)])
    out["r_mean"] = (out["txt_r_mean"] + out["img_r_mean"]) / 2
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_retrieval_metrics_equal_brute_force_with_uneven_captions(seed):
    generator = torch.Generator().manual_seed(seed)
    counts = [5, 5, 6, 5, 1, 7, 5, 5, 3, 5, 5, 5, 2, 5]  # includes an image with 6 captions
    img2txt, start = [], 0
    for count in counts:
        img2txt.append(list(range(start, start + count)))
        start += count
    perm = torch.randperm(start, generator=generator).tolist()  # captions not grouped by image
    img2txt = [[perm[t] for t in caps] for caps in img2txt]
    images = torch.nn.functional.normalize(torch.randn(len(counts), 8, generator=generator), dim=1)
    texts = torch.nn.functional.normalize(torch.randn(start, 8, generator=generator), dim=1)
    texts[img2txt[2][0]] = images[2]  # one certain hit so recall is not trivially zero
    expected = brute_force_recall((images @ texts.T).numpy(), img2txt)
    got = retrieval_metrics(images, texts, img2txt)
    assert got.keys() == expected.keys()
    for key in expected:
        assert got[key] == pytest.approx(expected[key], abs=1e-9), key


def test_perfect_embeddings_give_full_recall():
    images = torch.eye(4)
    texts = torch.cat([torch.eye(4), torch.eye(4)])  # two captions per image
    metrics = retrieval_metrics(images, texts, [[0, 4], [1, 5], [2, 6], [3, 7]])
    assert metrics["txt_r1"] == 100.0 and metrics["img_r1"] == 100.0 and metrics["r_mean"] == 100.0


def test_caption_without_image_is_rejected():
    with pytest.raises(ValueError, match="exactly one image"):
        retrieval_metrics(torch.eye(2), torch.eye(3)[:, :2], [[0], [1]])


def test_topk_correct_on_hand_built_case():
    logits = torch.tensor([[0.9, 0.1, 0.0, 0.0, 0.0, 0.0],   # label 0: top-1 hit
                           [0.5, 0.4, 0.3, 0.2, 0.1, 0.0],   # label 4: rank 4 -> top-5 only
                           [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]])  # label 0: rank 5 -> miss
    hits = topk_correct(logits, torch.tensor([0, 4, 0]), ks=(1, 5))
    assert hits.tolist() == [1.0, 2.0]
