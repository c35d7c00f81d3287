"""ProtoCLIP's clustering step as pure functions: k-means, per-cluster means, the cluster tables (docs/losses.md §15).

Nothing here reads files or talks to other ranks: the engine collects the features of an epoch's pairs, calls
`cluster_tables` on one rank and hands the tables to `ProtoCLIPLoss.load_clusters` on every rank.
"""
from __future__ import annotations

import importlib.util

import numpy as np
import torch
from torch import Tensor

KMEANS_BACKENDS = ("faiss", "sklearn")


def default_backend() -> str:
    """faiss when it is importable (much faster for large k), else scikit-learn."""
    return "faiss" if importlib.util.find_spec("faiss") is not None else "sklearn"


def kmeans(x: np.ndarray, k: int, iters: int, nredo: int, seed: int,
           backend: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(labels [n] int64 = nearest centroid, centroids [k, d] float32) of `x` [n, d].

    k is capped at n (faiss and scikit-learn need at least k points); the centroid rows beyond are zero.
    `nredo` runs from different seeded starts keep the lowest inertia.
    """
    backend = backend or default_backend()
    if backend not in KMEANS_BACKENDS:
        raise ValueError(f"k-means backend must be one of {KMEANS_BACKENDS}, got {backend!r}")
    x = np.ascontiguousarray(np.nan_to_num(x, nan=0.0), dtype=np.float32)
    used = min(int(k), x.shape[0])
    centroids = np.zeros((int(k), x.shape[1]), dtype=np.float32)
    if backend == "faiss":
        import faiss
        model = faiss.Kmeans(x.shape[1], used, niter=iters, nredo=nredo, seed=seed, verbose=False,
                             min_points_per_centroid=1)
        model.train(x)
        centroids[:used] = model.centroids
        _, labels = model.index.search(x, 1)
        return labels[:, 0].astype(np.int64), centroids
    from sklearn.cluster import KMeans
    model = KMeans(n_clusters=used, max_iter=iters, n_init=nredo, random_state=seed).fit(x)
    centroids[:used] = model.cluster_centers_
    return model.labels_.astype(np.int64), centroids


def cluster_means(features: Tensor, labels: Tensor, k: int) -> Tensor:
    """[k, d] mean of the `features` rows per label (rows labelled −1 ignored; zero for an empty cluster).

    ProtoCLIP's prototype back-translation: the centroids of one modality's clusters in the other's space.
    """
    valid = labels >= 0
    sums = features.new_zeros(k, features.shape[1]).index_add_(0, labels[valid], features[valid])
    counts = torch.bincount(labels[valid], minlength=k).to(features.dtype)
    return sums / counts.clamp_min(1).unsqueeze(1)


def cluster_tables(z_img: Tensor, z_txt: Tensor, k: int, iters: int, nredo: int, seed: int, pbt: bool,
                   external: Tensor | None = None, backend: str | None = None) -> dict[str, Tensor]:
    """The tables of one clustering step for the n rows of an epoch (projected features z [n, p], NaN read as 0).

    Keys are `ProtoCLIPLoss` buffer names: labels_img/labels_txt [n] and centroids_img/centroids_txt [k, p] from
    k-means of each modality; with `pbt`, pbt_img (image-space means of the text clusters) and pbt_txt; with
    `external` [n, e] (needs `pbt`), labels_ext from its k-means and ext_img/ext_txt, the means of z over them.
    """
    z_img, z_txt = (torch.nan_to_num(z.float(), nan=0.0) for z in (z_img, z_txt))
    tables: dict[str, Tensor] = {}
    for side, z in (("img", z_img), ("txt", z_txt)):
        labels, centroids = kmeans(z.numpy(), k, iters, nredo, seed, backend)
        tables[f"labels_{side}"], tables[f"centroids_{side}"] = torch.from_numpy(labels), torch.from_numpy(centroids)
    if pbt:
        tables["pbt_img"] = cluster_means(z_img, tables["labels_txt"], k)
        tables["pbt_txt"] = cluster_means(z_txt, tables["labels_img"], k)
        if external is not None:
            labels, _ = kmeans(external.float().numpy(), k, iters, nredo, seed, backend)
            tables["labels_ext"] = torch.from_numpy(labels)
            tables["ext_img"] = cluster_means(z_img, tables["labels_ext"], k)
            tables["ext_txt"] = cluster_means(z_txt, tables["labels_ext"], k)
    return tables
