"""ProtoCLIP's clustering step before an epoch (docs/losses.md §15): the epoch's pairs are encoded in eval mode
without gradient (each rank a contiguous shard), k-means runs on rank 0, and every rank installs the same tables in
the loss. The external-teacher file is read here.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from engine.distributed import broadcast_from_main, gather_shards, shard_range
from engine.evaluation import encode_pairs, eval_mode
from engine.runtime import UsageError
from models.gcl.collectives import rank_and_world
from models.objectives.clustering import cluster_tables


def load_external_teacher(path: str, num_samples: int) -> np.ndarray:
    """The [num_samples, d] rows of `--external_teacher` (memory-mapped); another shape is a one-line error."""
    try:
        table = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as error:
        raise UsageError(f"--external_teacher {path}: cannot read a .npy array ({error})") from None
    if table.ndim != 2 or table.shape[0] != num_samples:
        raise UsageError(f"--external_teacher {path}: shape {list(table.shape)}, expected [{num_samples}, d] (one row "
                         f"per pair id of the training set; write it with --cache_teacher on the same data)")
    return table


@torch.no_grad()
def project_pairs(model: torch.nn.Module, loss_fn: torch.nn.Module, loader: DataLoader,
                  device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(pair ids, z^I, z^T) of every batch of `loader`, towers and heads in eval mode; training modes are restored."""
    ids, z_img, z_txt = [], [], []
    with eval_mode(model, loss_fn):
        for pair_ids, image, text in encode_pairs(model, loader, device):
            projected = loss_fn.project(image.float(), text.float())
            ids.append(pair_ids.to(device))
            z_img.append(projected[0])
            z_txt.append(projected[1])
    width = loss_fn.centroids_img.shape[1]
    if not ids:
        return (torch.zeros(0, dtype=torch.long, device=device), torch.zeros(0, width, device=device),
                torch.zeros(0, width, device=device))
    return torch.cat(ids), torch.cat(z_img), torch.cat(z_txt)


@dataclass
class ClusteringStep:
    """`step(epoch)` before an epoch: when the loss says clustering is due, cluster the epoch's pairs.

    `positions(epoch)` gives the dataset positions the epoch trains on (an episode may repeat a pair; each pair is
    encoded once). `external` is the `--external_teacher` table or None.
    """

    model: torch.nn.Module
    loss_fn: torch.nn.Module
    dataset: Dataset                  # the training pairs with the deterministic evaluation transform
    positions: Callable[[int], Sequence[int]]
    collate: Callable[[list], Any]
    batch_size: int
    workers: int
    device: torch.device
    seed: int
    external: np.ndarray | None = None

    def __call__(self, epoch: int) -> None:
        if not self.loss_fn.clustering_due(epoch):
            return
        positions = np.unique(np.asarray(self.positions(epoch), dtype=np.int64))
        shard = shard_range(len(positions), align=self.batch_size)
        loader = DataLoader(Subset(self.dataset, positions[shard.start:shard.stop].tolist()),
                            batch_size=self.batch_size, shuffle=False, num_workers=self.workers,
                            collate_fn=self.collate)
        local = project_pairs(self.model, self.loss_fn, loader, self.device)
        ids, z_img, z_txt = (gather_shards(part, len(positions), self.batch_size).cpu() for part in local)
        tables = None
        if rank_and_world()[0] == 0:
            external = None
            if self.loss_fn.external and self.external is not None:
                external = torch.from_numpy(np.asarray(self.external[ids.numpy()], dtype=np.float32))
            loss = self.loss_fn
            tables = cluster_tables(z_img, z_txt, loss.proto_k, loss.kmeans_iters, loss.kmeans_nredo,
                                    (self.seed + epoch) % 2**31, loss.pbt, external)
            print(f"epoch {epoch}: clustered {len(ids)} pairs into {min(loss.proto_k, len(ids))} clusters per "
                  "modality", flush=True)
        self.loss_fn.load_clusters(ids, broadcast_from_main(tables))
