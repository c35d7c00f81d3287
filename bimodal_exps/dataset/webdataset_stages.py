"""The project's own stages of the webdataset training pipeline; everything else is webdataset's.

DataLoader workers live in other processes (persistent across epochs), so the epoch number and the
count of skipped samples live in shared memory: `SharedEpoch` is set by the training loop and read by
the workers' shuffles, `SkipCounter` is the pipeline's error handler and counts what it skips.
All stages are picklable (workers may be started with spawn).
"""
from __future__ import annotations

import io
import logging
import multiprocessing
import random
from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from typing import Any

import torch
import webdataset as wds
from PIL import Image
from torch.utils.data import get_worker_info
from webdataset.autodecode import DecodingError
from webdataset.utils import make_seed

from dataset.errors import DataError
from dataset.images import MAX_IMAGE_PIXELS  # also sets the PIL policy of every dataset (truncated JPEGs load)
from dataset.sample_rng import transform_sample
from dataset.webdataset_shards import sample_id

logger = logging.getLogger(__name__)

MAX_REPORTED = 5
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")


def _worker_id() -> int:
    info = get_worker_info()
    return info.id if info is not None else 0


class SharedEpoch:
    """The epoch number, shared with DataLoader workers; `set_epoch` is what the training loop calls. Also the
    number of batches every worker skips at the start of a resumed epoch (0 otherwise; `set_epoch` resets it)."""

    def __init__(self, epoch: int = 0) -> None:
        self._value = multiprocessing.Value("i", epoch)
        self._skip = multiprocessing.Value("q", 0)

    def set_epoch(self, epoch: int) -> None:
        self._value.value = epoch
        self._skip.value = 0

    def get(self) -> int:
        return self._value.value

    def skip_batches_per_worker(self, batches: int) -> None:
        self._skip.value = batches

    def skipped_batches_per_worker(self) -> int:
        return self._skip.value


class SkipCounter:
    """Error handler of the reading/decoding stages: skip the sample, count it, log the first few.

    `DataError` (a key outside the state, raised by our own stage) is never skipped.
    """

    def __init__(self) -> None:
        self._count = multiprocessing.Value("q", 0)
        self._reported = 0

    def __call__(self, error: Exception) -> bool:
        if isinstance(error, DataError):
            raise error
        with self._count.get_lock():
            self._count.value += 1
        if self._reported < MAX_REPORTED:
            self._reported += 1
            logger.warning("webdataset: skipped a sample: %s", describe_error(error))
        return True

    @property
    def value(self) -> int:
        return self._count.value

    def reset(self) -> None:
        with self._count.get_lock():
            self._count.value = 0


def describe_error(error: Exception) -> str:
    """One line naming the shard and key where webdataset provides them."""
    if isinstance(error, DecodingError):
        return f"{error.url}: key {error.key}: cannot decode .{error.k} ({error.__cause__})"
    return f"{type(error).__name__}: " + " ".join(str(arg) for arg in error.args if arg is not None)


def decode_rgb(extension: str, data: bytes) -> Image.Image | None:
    """wds.decode handler of the image members: an RGB PIL image, under the pixel limit of the JSON path
    (checked from the header, before decoding); other members are left to webdataset's decoders."""
    if extension.lstrip(".").lower() not in IMAGE_EXTENSIONS:
        return None
    with Image.open(io.BytesIO(data)) as image:
        width, height = image.size
        if width * height > MAX_IMAGE_PIXELS:
            raise ValueError(f"{width}×{height} pixels, over dataset.images.MAX_IMAGE_PIXELS = {MAX_IMAGE_PIXELS}")
        return image.convert("RGB")


class EpochShuffle(wds.PipelineStage):
    """webdataset's buffered shuffle with an RNG seeded from the seed and the shared epoch.

    Without `rank`: the RNG is `Random(seed + epoch)`, identical on every rank and worker (the shard
    order before splitting). With `rank`: the RNG also depends on the rank, the worker and how often
    this worker has restarted its shards in the current epoch (the sample order).
    """

    def __init__(self, bufsize: int, initial: int, seed: int, epoch: SharedEpoch, rank: int | None = None) -> None:
        self.bufsize, self.initial, self.seed, self.epoch, self.rank = bufsize, initial, seed, epoch, rank
        self._passes: tuple[int, int] = (-1, 0)  # (epoch, passes started in it), per process

    def run(self, src: Iterable[Any]) -> Iterator[Any]:
        epoch = self.epoch.get()
        if self.rank is None:
            rng = random.Random(self.seed + epoch)
        else:
            passes = self._passes[1] + 1 if self._passes[0] == epoch else 0
            self._passes = (epoch, passes)
            rng = random.Random(make_seed(self.seed, epoch, self.rank, _worker_id(), passes))
        return wds.shuffle(self.bufsize, self.initial, rng=rng)(iter(src))


def closing_streams(sources: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Pass opened shards on and close each once it is read (or the epoch is cut short): webdataset's
    url_opener leaves that to the garbage collector, which warns (ResourceWarning) for every shard."""
    current = None
    try:
        for current in sources:
            yield current
            current["stream"].close()
    finally:
        if current is not None:
            current["stream"].close()


def split_by_rank(src: Iterable[Any], rank: int, world_size: int) -> Iterator[Any]:
    """Every `world_size`-th shard from `rank` on: wds.split_by_node with the rank given explicitly
    (it reads RANK/WORLD_SIZE or the process group, which spawned workers and srun jobs may lack)."""
    yield from islice(src, rank, None, world_size)


class ResampleSeed:
    """`worker_seed` of wds.ResampledShards: distinct per rank, worker and epoch, reproducible."""

    def __init__(self, rank: int, epoch: SharedEpoch) -> None:
        self.rank, self.epoch = rank, epoch

    def __call__(self) -> int:
        return make_seed(self.rank, _worker_id(), self.epoch.get())


class KeyToId:
    """(image, caption, key, shard) -> (image, caption, id, id), the id being the integer key (checked)."""

    def __init__(self, data_size: int) -> None:
        self.data_size = data_size

    def __call__(self, sample: tuple[Any, str, str, str]) -> tuple[Any, str, int, int]:
        image, caption, key, shard = sample
        index = sample_id(key, shard, self.data_size)
        return image, caption, index, index


class TransformingCollate:
    """Apply the training transform to a batch's images, then collate. Each image draws from RNGs seeded by
    (seed, shared epoch, sample id) (`dataset.sample_rng`), so its augmentation does not depend on the worker
    layout or on what the worker did before (a sample met twice in one epoch is augmented alike). Transforming
    whole batches after the skip of a resumed epoch leaves the batches it drops unaugmented."""

    def __init__(self, transform: Callable[[Any], torch.Tensor], collate: Callable[[list[Any]], Any], seed: int,
                 epoch: SharedEpoch) -> None:
        self.transform, self.collate, self.seed, self.epoch = transform, collate, seed, epoch

    def __call__(self, batch: list[tuple[Any, str, int, int]]) -> Any:
        epoch = self.epoch.get()
        return self.collate([(transform_sample(self.transform, image, self.seed, epoch, sample_id), caption,
                              sample_id, pair_id) for image, caption, sample_id, pair_id in batch])
