"""ProtoCLIP (docs/losses.md §15): the loss against a float64 formula, its sanity properties, the clustering
functions on a synthetic 3-cluster set (both k-means backends) and the state's checkpoint round trip."""
from __future__ import annotations

import importlib.util
import io
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from models.losses import build_loss
from models.objectives.clustering import cluster_means, cluster_tables, kmeans
from models.objectives.protoclip import prototype_loss

B, D, K, P, N = 8, 16, 5, 6, 20
BACKENDS = ["sklearn", pytest.param("faiss", marks=pytest.mark.skipif(importlib.util.find_spec("faiss") is None,
                                                                       reason="faiss-cpu not installed"))]


def unit(rows: int, cols: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(rows, cols, generator=g, dtype=torch.float64), dim=1)


def protoclip(**kw) -> torch.nn.Module:
    base = {"embed_dim": D, "proto_k": K, "proto_dim": P, "proto_hidden_dim": 7, "proto_layers": 0}
    return build_loss("protoclip", N, **{**base, **kw}).double()


def random_tables(seed: int, external: bool = True) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    names = ("centroids_img", "centroids_txt", "pbt_img", "pbt_txt", *(("ext_img", "ext_txt") if external else ()))
    tables = {name: torch.randn(K, P, generator=g, dtype=torch.float64) for name in names}
    for name in ("labels_img", "labels_txt", *(("labels_ext",) if external else ())):
        tables[name] = torch.randint(-1, K, (N,), generator=g)
    return tables


def reference_ce(z, student, teacher, labels, scale, target_temp) -> float:
    """Mean over labelled rows of −Σ_c target_c log softmax(scale·z·studentᵀ)_c, one row at a time in float64."""
    total, count = 0.0, 0
    for row, y in zip(z.tolist(), labels.tolist()):
        if y < 0:
            continue
        scores = [scale * sum(a * b for a, b in zip(row, c)) for c in student.tolist()]
        lse = math.log(sum(math.exp(s) for s in scores))
        if target_temp > 0:
            logits = [sum(a * b for a, b in zip(teacher[y].tolist(), c)) / target_temp for c in teacher.tolist()]
            norm = math.log(sum(math.exp(v) for v in logits))
            target = [math.exp(v - norm) for v in logits]
        else:
            target = [1.0 if c == y else 0.0 for c in range(len(scores))]
        total += -sum(t * (s - lse) for t, s in zip(target, scores))
        count += 1
    return total / max(count, 1)


def reference_infonce(e, t, tau) -> float:
    sims = (e @ t.T / tau).tolist()
    rows = [math.log(sum(math.exp(v) for v in row)) - row[i] for i, row in enumerate(sims)]
    cols = [math.log(sum(math.exp(sims[j][i]) for j in range(len(sims)))) - sims[i][i] for i in range(len(sims))]
    return 0.5 * (sum(rows) + sum(cols)) / len(sims)


@pytest.mark.parametrize("pbt, target_temp", [(True, 0.3), (False, -1.0), (True, 0.0)])
def test_loss_equals_the_float64_formula(pbt, target_temp):
    weights = {"w_clip": 0.7, "w_proto": 1.3, "w_proto_external": 0.4}
    loss = protoclip(pbt=pbt, proto_target_temp=target_temp, external_teacher="t.npy" if pbt else None, **weights)
    tables = random_tables(1, external=pbt)
    if not pbt:
        tables = {k: v for k, v in tables.items() if not k.startswith("pbt")}
    loss.load_clusters(torch.arange(N), tables)
    with torch.no_grad():
        loss.proto_scale.fill_(math.log(1 / 0.2))
    e, t = unit(B, D, 2), unit(B, D, 3)
    ids = torch.tensor([3, 0, 7, 19, 11, 5, 2, 14])
    out = loss(e, t, ids)
    z_i = F.normalize(e @ loss.head_img.weight.T + loss.head_img.bias, dim=1)
    z_t = F.normalize(t @ loss.head_txt.weight.T + loss.head_txt.bias, dim=1)
    scale = 5.0
    g_i2t = tables["pbt_img"] if pbt else tables["centroids_txt"]
    g_t2i = tables["pbt_txt"] if pbt else tables["centroids_img"]
    proto = 0.5 * (reference_ce(z_i, g_i2t, tables["centroids_txt"], tables["labels_txt"][ids], scale, target_temp)
                   + reference_ce(z_t, g_t2i, tables["centroids_img"], tables["labels_img"][ids], scale, target_temp))
    external = 0.0
    if pbt:
        y = tables["labels_ext"][ids]
        external = 0.5 * (reference_ce(z_i, tables["ext_img"], None, y, scale, -1.0)
                          + reference_ce(z_t, tables["ext_txt"], None, y, scale, -1.0))
    tau = loss.clip.log_temp.exp().item()  # 0.07 rounded through the float32 initial parameter
    assert tau == pytest.approx(0.07, rel=1e-6)
    expected = 0.7 * reference_infonce(e, t, tau) + 1.3 * proto + 0.4 * external
    assert out.loss.item() == pytest.approx(expected, rel=1e-10)
    assert out.stats["proto"].item() == pytest.approx(proto, rel=1e-10)
    assert out.stats["tau_proto"].item() == pytest.approx(0.2)


def test_hard_targets_are_plain_cross_entropy_with_the_labels():
    z, student, teacher = unit(B, P, 4), unit(K, P, 5), unit(K, P, 6)
    labels = torch.tensor([0, 4, 1, 1, 3, 2, 0, 4])
    scale = torch.tensor(3.0, dtype=torch.float64)
    for target_temp in (0.0, -1.0):
        value, accuracy = prototype_loss(z, student, teacher, labels, scale, target_temp)
        scores = 3.0 * z @ student.T
        torch.testing.assert_close(value, F.cross_entropy(scores, labels), rtol=1e-12, atol=0)
        assert accuracy.item() == pytest.approx(100.0 * (scores.argmax(1) == labels).double().mean().item())


def test_unlabelled_rows_contribute_nothing():
    z, student, teacher = unit(B, P, 7), unit(K, P, 8), unit(K, P, 9)
    labels = torch.tensor([2, -1, 0, -1, 4, 1, -1, 3])
    kept = labels >= 0
    scale = torch.tensor(4.0, dtype=torch.float64)
    z.requires_grad_()
    value, _ = prototype_loss(z, student, teacher, labels, scale, 0.1)
    subset, _ = prototype_loss(z[kept], student, teacher, labels[kept], scale, 0.1)
    torch.testing.assert_close(value, subset, rtol=1e-12, atol=0)
    (grad,) = torch.autograd.grad(value, z)
    assert torch.all(grad[~kept] == 0) and torch.all(grad[kept].abs().sum(1) > 0)
    none, accuracy = prototype_loss(z, student, teacher, torch.full((B,), -1), scale, 0.1)
    assert none.item() == 0.0 and accuracy.item() == 0.0


def test_back_translated_centroids_are_per_cluster_means():
    features = torch.tensor([[1.0, 0.0], [3.0, 2.0], [0.0, 4.0], [2.0, 2.0], [4.0, 0.0], [9.0, 9.0]])
    labels = torch.tensor([0, 0, 2, 2, 2, -1])
    expected = torch.tensor([[2.0, 1.0], [0.0, 0.0], [2.0, 2.0], [0.0, 0.0]])  # cluster 1 and 3 are empty
    torch.testing.assert_close(cluster_means(features, labels, 4), expected)


def three_clusters(seed: int, per: int = 10, dim: int = 8) -> tuple[torch.Tensor, np.ndarray]:
    """Unit rows around three orthogonal directions (cluster c = rows c·per … (c+1)·per − 1)."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.eye(dim)[:3] * 5
    rows = torch.cat([centres[c] + 0.3 * torch.randn(per, dim, generator=g) for c in range(3)])
    return F.normalize(rows, dim=1), np.repeat(np.arange(3), per)


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two labelings split the rows identically (up to renaming the clusters)."""
    return len(set(zip(a.tolist(), b.tolist()))) == len(set(a.tolist())) == len(set(b.tolist()))


@pytest.mark.parametrize("backend", BACKENDS)
def test_kmeans_pbt_and_external_teacher_recover_three_clusters(backend):
    z_img, truth = three_clusters(0)
    z_txt = torch.roll(three_clusters(1)[0], shifts=2, dims=1)  # same clusters, other directions
    external = three_clusters(2, dim=5)[0] * 3  # the teacher's own space and scale
    tables = cluster_tables(z_img, z_txt, 3, 20, 2, 0, pbt=True, external=external, backend=backend)
    for name in ("labels_img", "labels_txt", "labels_ext"):
        assert same_partition(tables[name].numpy(), truth), name
    for side, z, other in (("img", z_img, "txt"), ("txt", z_txt, "img")):
        own = tables[f"labels_{side}"]
        for c in range(3):
            torch.testing.assert_close(tables[f"centroids_{side}"][c], z[own == c].mean(0), rtol=1e-4, atol=1e-5)
            members = tables[f"labels_{other}"] == c
            torch.testing.assert_close(tables[f"pbt_{side}"][c], z[members].mean(0), rtol=1e-6, atol=1e-6)
            torch.testing.assert_close(tables[f"ext_{side}"][c], z[tables["labels_ext"] == c].mean(0),
                                       rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_kmeans_caps_k_at_the_number_of_rows_and_is_seeded(backend):
    x, _ = three_clusters(3, per=2)
    labels, centroids = kmeans(x.numpy(), 10, 10, 1, 5, backend)
    assert centroids.shape == (10, 8) and not centroids[6:].any() and labels.max() < 6
    again = kmeans(x.numpy(), 10, 10, 1, 5, backend)
    assert np.array_equal(labels, again[0]) and np.array_equal(centroids, again[1])
    with pytest.raises(ValueError, match="backend"):
        kmeans(x.numpy(), 2, 1, 1, 0, "scipy")


def test_heads_start_identical_and_load_clusters_resets_other_ids():
    loss = protoclip(proto_layers=2, pbt=True)
    for a, b in zip(loss.head_img.state_dict().values(), loss.head_txt.state_dict().values()):
        assert torch.equal(a, b)
    loss.load_clusters(torch.arange(N), random_tables(2, external=False))
    ids = torch.tensor([4, 9])
    tables = random_tables(3, external=False)
    loss.load_clusters(ids, {**tables, "labels_img": torch.tensor([1, 2]), "labels_txt": torch.tensor([0, 3])})
    assert loss.labels_img.tolist() == [-1] * 4 + [1] + [-1] * 4 + [2] + [-1] * 10
    assert torch.equal(loss.pbt_txt, tables["pbt_txt"])


def test_scale_is_clamped_and_warmup_trains_infonce_alone():
    loss = protoclip(infonce_warmup_epochs=1, proto_target_temp=0.5)
    loss.load_clusters(torch.arange(N), {k: v for k, v in random_tables(4, external=False).items()
                                         if not k.startswith("pbt")})
    e, t, ids = unit(B, D, 10), unit(B, D, 11), torch.arange(B)
    for value, tau in ((10.0, 0.01), (-1.0, 1.0)):
        with torch.no_grad():
            loss.proto_scale.fill_(value)
        assert loss(e, t, ids).stats["tau_proto"].item() == pytest.approx(tau)
    loss.set_epoch(0, 3)
    warm = loss(e, t, ids)
    assert warm.stats["proto"].item() > 0 and warm.loss.item() == pytest.approx(warm.stats["clip"].item(), rel=1e-12)
    loss.set_epoch(1, 3)
    after = loss(e, t, ids)
    assert after.loss.item() == pytest.approx(after.stats["clip"].item() + after.stats["proto"].item(), rel=1e-12)


@pytest.mark.parametrize("external", [False, True])
def test_lit_phase_trains_infonce_alone_from_epoch_lit_start_minus_1(external):
    """--lit_start_epoch 3: epochs 0 and 1 train every term, epochs 2 and later the InfoNCE term alone, with the
    prototype heads still in the graph (at weight 0) so that DDP sees every parameter used."""
    loss = protoclip(lit_start_epoch=3, pbt=True, external_teacher="t.npy" if external else None)
    loss.load_clusters(torch.arange(N), random_tables(6, external=external))
    e, t, ids = unit(B, D, 14), unit(B, D, 15), torch.arange(B)
    for epoch in range(5):
        loss.set_epoch(epoch, 5)
        out = loss(e, t, ids)
        stats = out.stats
        assert stats["proto"].item() > 0 and (stats["proto_external"].item() > 0) == external
        full = stats["clip"] + stats["proto"] + stats["proto_external"]
        expected = stats["clip"] if epoch >= 2 else full
        assert out.loss.item() == pytest.approx(expected.item(), rel=1e-12), epoch
        loss.zero_grad()
        out.loss.backward()
        heads = [p.grad for p in loss.head_img.parameters()]
        assert all(g is not None for g in heads)
        assert all(torch.count_nonzero(g) == 0 for g in heads) == (epoch >= 2), epoch


def test_state_checkpoint_round_trip():
    loss = protoclip(pbt=True, external_teacher="t.npy", proto_layers=1, proto_target_temp=0.2)
    loss.load_clusters(torch.arange(N), random_tables(5))
    e, t, ids = unit(B, D, 12), unit(B, D, 13), torch.arange(3, 3 + B)
    loss(e, t, ids)  # moves the heads' BatchNorm statistics
    buffer = io.BytesIO()
    torch.save(loss.state_dict(), buffer)
    buffer.seek(0)
    restored = protoclip(pbt=True, external_teacher="t.npy", proto_layers=1, proto_target_temp=0.2)
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    for key, value in loss.state_dict().items():
        assert torch.equal(restored.state_dict()[key], value), key
    assert loss(e, t, ids).loss.item() == restored(e, t, ids).loss.item()


def test_tables_have_at_most_one_row_per_pair_and_labels_are_int32():
    """--proto_k beyond the number of pairs cannot be filled: the tables stop at num_samples rows, so no zero row
    enters the softmax as a phantom class; the labels are int32 (4 bytes per pair and table)."""
    loss = protoclip(proto_k=1000, pbt=True)
    assert loss.proto_k == N and loss.centroids_img.shape == (N, P) and loss.pbt_txt.shape == (N, P)
    assert loss.labels_img.dtype == torch.int32
    z, labels = unit(B, P, 20), torch.randint(-1, N, (B,), dtype=torch.int32)
    centroids = unit(N, P, 21)
    got, _ = prototype_loss(z, centroids, centroids, labels, torch.tensor(3.0, dtype=torch.float64), -1.0)
    assert got.item() == pytest.approx(reference_ce(z, centroids, centroids, labels, 3.0, -1.0), rel=1e-9)


@pytest.mark.parametrize("kw, due", [
    ({}, [True] * 6),
    ({"infonce_warmup_epochs": 2}, [False, False, True, True, True, True]),
    ({"lit_start_epoch": 4}, [True, True, True, False, False, False]),
    ({"clustering_freq": 2, "infonce_warmup_epochs": 1, "lit_start_epoch": 5}, [True, False, True, False, False,
                                                                                False]),
    ({"clustering_freq": 0}, [False] * 6),
])
def test_clustering_is_skipped_when_its_clusters_would_go_unused(kw, due):
    """Every clustering_freq epochs, unless all epochs up to the next clustering train InfoNCE alone."""
    loss = protoclip(**kw)
    assert [loss.clustering_due(epoch) for epoch in range(6)] == due
