"""Training loader over img2dataset webdataset shards (README "Training from webdataset shards").

Pipeline per process, built from webdataset's stages: shard list -> shard shuffle seeded by seed +
epoch (identical on all ranks) -> split by rank -> split by DataLoader worker -> tar members grouped
into samples -> sample shuffle -> decode to RGB PIL -> (image, caption, key, shard) -> id check ->
full batches, each image transformed (draws seeded per sample) and the captions tokenised per batch in the
worker. With `resampled`, shards are drawn with replacement per rank and worker instead of shuffled and split.

Epoch length (as in OpenCLIP's loader): num_batches = ⌈num_samples / (batch × world)⌉; each worker yields
⌈num_batches / workers⌉ batches (`with_epoch`, restarting its shards when they run out), so every rank
runs the same number of full, equal-size batches. Corrupt or incomplete samples are skipped and
counted; the count is printed once per epoch.

Mid-epoch resume at batch k (of this rank): the DataLoader takes batch j from worker j mod W, so every
worker drops its first ⌊k / W⌋ batches of decoded samples (no augmentation, no collation) and the
loader discards the first k mod W batches it then yields; the rest of the epoch is the interrupted one's.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from itertools import islice
from typing import Any, NamedTuple

import torch
import webdataset as wds
from torch.utils.data import DataLoader
from webdataset.tariterators import group_by_keys, tar_file_expander, url_opener

from dataset.collate import Batch, Tokenizer, TokenizingCollate
from dataset.errors import DataError
from dataset.webdataset_shards import expand_shards, scan_state_size
from dataset.webdataset_stages import (IMAGE_EXTENSIONS, EpochShuffle, ResampleSeed, SharedEpoch, SkipCounter,
                                       KeyToId, TransformingCollate, closing_streams, decode_rgb,
                                       split_by_rank)

SHARD_SHUFFLE = (2000, 500)     # (buffer, initial) as in the references
SAMPLE_SHUFFLE = (5000, 1000)


@dataclass(frozen=True)
class WebDatasetSpec:
    """What to read and how to split it; `data_size=None` scans the shards for max key + 1."""

    shards: str                  # brace pattern(s), `::`-separated
    num_samples: int             # samples per epoch (all ranks together)
    batch_size: int              # per process
    data_size: int | None = None
    seed: int = 0
    rank: int = 0
    world_size: int = 1
    workers: int = 0
    resampled: bool = False
    pin_memory: bool = False


class EpochLength(NamedTuple):
    per_worker: int              # batches each DataLoader worker yields
    per_rank: int                # batches per epoch on every rank (len of the loader)


def epoch_length(num_samples: int, batch_size: int, world_size: int, workers: int) -> EpochLength:
    """Batches per worker and per rank for one epoch of `num_samples` samples."""
    num_batches = math.ceil(num_samples / (batch_size * world_size))
    per_worker = math.ceil(num_batches / max(workers, 1))
    return EpochLength(per_worker, per_worker * max(workers, 1))


class WebDatasetLoader:
    """The DataLoader with an exact `len`, one skip-report line per epoch and a batch-count check; also the
    training loop's sampler (`set_epoch`, and `start_at_batch` for a mid-epoch resume)."""

    def __init__(self, loader: DataLoader, num_batches: int, skipped: SkipCounter, epoch: SharedEpoch,
                 rank: int, workers: int) -> None:
        self.loader, self.num_batches, self.skipped, self.epoch, self.rank = loader, num_batches, skipped, epoch, rank
        self.workers = max(workers, 1)
        self.start_batch = 0

    @property
    def order_key(self) -> str:
        """What besides world size and batch size fixes the batch order: a resume needs the same."""
        return f"webdataset, {self.workers} reader(s) per rank"

    def set_epoch(self, epoch: int) -> None:
        self.epoch.set_epoch(epoch)
        self.start_batch = 0

    def start_at_batch(self, batch: int) -> None:
        """Skip the first `batch` batches of the current epoch (call after `set_epoch`)."""
        if not 0 <= batch < self.num_batches:
            raise ValueError(f"cannot start at batch {batch}: this rank has {self.num_batches} batches per epoch")
        self.start_batch = batch
        self.epoch.skip_batches_per_worker(batch // self.workers)

    def __len__(self) -> int:
        return self.num_batches - self.start_batch

    def __iter__(self) -> Iterator[Batch]:
        self.skipped.reset()
        # create the DataLoader iterator now, as iter() of a plain DataLoader does (the training loop keeps the
        # global RNG state across iter(loader), whose first call draws the DataLoader's base seed)
        return self._epoch(iter(self.loader), len(self), self.start_batch % self.workers)

    def _epoch(self, batches: Iterator[Batch], expected: int, discard: int) -> Iterator[Batch]:
        produced = 0
        for index, batch in enumerate(batches):
            if index < discard:
                continue
            produced += 1
            yield batch
        if self.rank == 0 or self.skipped.value:
            print(f"webdataset epoch {self.epoch.get()}, rank {self.rank}: skipped {self.skipped.value} "
                  "corrupt or incomplete sample(s)", flush=True)
        if produced != expected:
            raise DataError(f"rank {self.rank} got {produced} of {expected} batches this epoch: a worker's "
                            "shards hold too few usable samples for one batch; use fewer --workers or more shards")


class EpochPipeline(wds.DataPipeline):
    """webdataset's pipeline of sample lists cut to `batches_per_worker` batches per epoch (restarting the shards
    when they run out), less the first batches this worker skips when a resumed epoch starts inside; only the
    batches it keeps are transformed and collated (`collate`).

    Skipping whole batches after grouping keeps a resumed epoch aligned with the uninterrupted one even when the
    skip spans a restart of the shards (each pass drops its own incomplete last batch)."""

    def __init__(self, *stages: Any, batches_per_worker: int, epoch: SharedEpoch,
                 collate: Callable[[list[Any]], Batch]) -> None:
        super().__init__(*stages)
        self.with_epoch(nbatches=batches_per_worker)
        self.batches_per_worker, self.epoch, self.collate = batches_per_worker, epoch, collate

    def __iter__(self) -> Iterator[Batch]:
        skipped = self.epoch.skipped_batches_per_worker()
        return map(self.collate, islice(self.iterator(), skipped, self.batches_per_worker))


def build_pipeline(spec: WebDatasetSpec, urls: list[str], data_size: int, transform: Callable[[Any], torch.Tensor],
                   tokenizer: Tokenizer, epoch: SharedEpoch, skipped: SkipCounter,
                   batches_per_worker: int) -> EpochPipeline:
    """The per-process webdataset pipeline, cut to `batches_per_worker` batches per epoch and worker."""
    if spec.resampled:
        shards = [wds.ResampledShards(urls, seed=spec.seed, worker_seed=ResampleSeed(spec.rank, epoch),
                                      deterministic=True)]
    else:
        shards = [wds.SimpleShardList(urls),
                  EpochShuffle(*SHARD_SHUFFLE, seed=spec.seed, epoch=epoch),
                  partial(split_by_rank, rank=spec.rank, world_size=spec.world_size),
                  wds.split_by_worker]
    return EpochPipeline(
        *shards,
        # wds.tarfile_to_samples, with each shard closed once read
        partial(url_opener, handler=skipped),
        closing_streams,
        partial(tar_file_expander, handler=skipped),
        partial(group_by_keys, handler=skipped),
        EpochShuffle(*SAMPLE_SHUFFLE, seed=spec.seed, epoch=epoch, rank=spec.rank),
        wds.decode(decode_rgb, handler=skipped),
        wds.to_tuple(";".join(IMAGE_EXTENSIONS), "txt", "__key__", "__url__", handler=skipped),
        wds.map(KeyToId(data_size)),
        wds.batched(spec.batch_size, collation_fn=None, partial=False),
        batches_per_worker=batches_per_worker, epoch=epoch,
        collate=TransformingCollate(transform, TokenizingCollate(tokenizer), spec.seed, epoch),
    )


class WebDatasetParts(NamedTuple):
    loader: WebDatasetLoader     # call loader.set_epoch(epoch) before every epoch
    state_size: int              # length of the per-sample loss state (ids are < state_size)


def create_webdataset_loader(spec: WebDatasetSpec, transform: Callable[[Any], torch.Tensor],
                             tokenizer: Tokenizer) -> WebDatasetParts:
    """Check the shards, size the state, and build the loader that yields `Batch(images, tokens, ids)`."""
    urls = expand_shards(spec.shards)
    readers = max(spec.workers, 1) * spec.world_size
    if not spec.resampled and len(urls) < readers:
        raise DataError(f"{len(urls)} shard(s) cannot feed {readers} readers (--workers {spec.workers} × "
                        f"{spec.world_size} process(es)); use fewer workers or --dataset_resampled")
    state_size = spec.data_size if spec.data_size is not None else scan_state_size(urls)
    epoch, skipped = SharedEpoch(), SkipCounter()
    length = epoch_length(spec.num_samples, spec.batch_size, spec.world_size, spec.workers)
    pipeline = build_pipeline(spec, urls, state_size, transform, tokenizer, epoch, skipped, length.per_worker)
    loader = DataLoader(pipeline, batch_size=None, shuffle=False, num_workers=spec.workers,
                        persistent_workers=spec.workers > 0, pin_memory=spec.pin_memory)
    return WebDatasetParts(WebDatasetLoader(loader, length.per_rank, skipped, epoch, spec.rank, spec.workers),
                           state_size)
