"""Training sampler that can begin an epoch after its first k batches (exact mid-epoch resume) and keys every
index with the seed and epoch of its augmentation draws."""
from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

from torch.utils.data import Dataset, DistributedSampler

from dataset.sample_rng import SampleKey


class ResumableDistributedSampler(DistributedSampler):
    """`DistributedSampler` whose epoch can start at batch k instead of batch 0.

    The index order of an epoch is a pure function of (seed, epoch, rank, world size), so dropping the
    first k × `batch_size` indices of this rank continues exactly where an interrupted run stopped,
    without loading (decoding) the skipped images. `set_epoch` resets the start to batch 0, so only the
    resumed epoch is shortened. It yields `SampleKey(index, epoch, seed)`: the dataset seeds each sample's
    augmentation from them (`dataset.sample_rng`), in whichever process fetches it.
    """

    def __init__(self, dataset: Dataset, batch_size: int, **kwargs: Any) -> None:
        super().__init__(dataset, **kwargs)
        self.batch_size = batch_size
        self.start_batch = 0

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        self.start_batch = 0

    def start_at_batch(self, batch: int) -> None:
        """Skip the first `batch` batches of the current epoch (call after `set_epoch`)."""
        if not 0 <= batch * self.batch_size <= self.num_samples:
            raise ValueError(f"cannot start at batch {batch}: this rank has {self.num_samples // self.batch_size} "
                             f"batches of {self.batch_size} per epoch")
        self.start_batch = batch

    def __iter__(self) -> Iterator[SampleKey]:
        indices = itertools.islice(super().__iter__(), self.start_batch * self.batch_size, None)
        return (SampleKey(index, self.epoch, self.seed) for index in indices)

    def __len__(self) -> int:
        return self.num_samples - self.start_batch * self.batch_size
