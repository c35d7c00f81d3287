"""Per-sample augmentation seeds: a training sample's augmentation is a function of (seed, epoch, pair id) only,
the same in the main process and in DataLoader workers, and seeding it leaves the caller's RNG streams alone."""
import random

import pytest
import torch
from torch.utils.data import DataLoader

from data_helpers import SMALL
from dataset.collate import TokenizingCollate
from dataset.image_text import ImageTextDataset
from dataset.sample_rng import SampleKey, iter_keeping_rng, sample_seed, seeded_draws
from dataset.sampler import ResumableDistributedSampler
from dataset.transforms import build_train_transform
from wds_helpers import CaptionLength

BATCH = 8


@pytest.fixture(scope="module")
def dataset(shapes_demo):
    return ImageTextDataset(shapes_demo.train_json, shapes_demo.train_images, build_train_transform(16))


def test_seeded_draws_repeat_and_leave_the_callers_streams_where_they_were():
    torch.manual_seed(1)
    random.seed(1)
    expected = torch.rand(3), random.random()
    torch.manual_seed(1)
    random.seed(1)
    with seeded_draws(sample_seed(0, 2, 5)):
        inside = torch.rand(4), random.random()
    with seeded_draws(sample_seed(0, 2, 5)):
        assert torch.equal(torch.rand(4), inside[0]) and random.random() == inside[1]
    assert torch.equal(torch.rand(3), expected[0]) and random.random() == expected[1]


def test_sample_seeds_differ_per_seed_epoch_and_id():
    seeds = {sample_seed(seed, epoch, index) for seed in (0, 1) for epoch in (0, 1) for index in (0, 1, 10)}
    assert len(seeds) == 12 and all(0 <= seed < 2**63 for seed in seeds)


def test_an_item_fetched_with_a_key_depends_on_the_key_only(dataset):
    torch.manual_seed(0)
    image = dataset[SampleKey(3, 1, 7)][0]
    torch.manual_seed(99)                                                     # another global state: no effect
    assert torch.equal(dataset[SampleKey(3, 1, 7)][0], image)
    assert not torch.equal(dataset[SampleKey(3, 2, 7)][0], image)            # a new epoch, a new augmentation
    assert not torch.equal(dataset[SampleKey(3, 1, 8)][0], image)            # another --seed
    torch.manual_seed(5)
    plain = dataset[3][0]                                                     # a plain index: the global RNG
    torch.manual_seed(5)
    assert torch.equal(dataset[3][0], plain) and not torch.equal(plain, image)


def _epochs(dataset, workers: int, start_batch: int = 0) -> list[list]:
    """Epochs 1 and 2 through a persistent-worker loader, epoch 1 started at `start_batch`."""
    sampler = ResumableDistributedSampler(dataset, BATCH, num_replicas=1, rank=0, seed=3, drop_last=True)
    loader = DataLoader(dataset, batch_size=BATCH, sampler=sampler, drop_last=True, num_workers=workers,
                        collate_fn=TokenizingCollate(CaptionLength()), persistent_workers=workers > 0)
    epochs = []
    for epoch in (1, 2):
        sampler.set_epoch(epoch)
        if epoch == 1 and start_batch:
            sampler.start_at_batch(start_batch)
        epochs.append(list(loader))
    return epochs


def _same(a: list, b: list) -> bool:
    return len(a) == len(b) and all(torch.equal(x.ids, y.ids) and torch.equal(x.images, y.images)
                                    for x, y in zip(a, b))


def test_worker_count_and_a_mid_epoch_start_leave_the_batches_unchanged(dataset):
    in_process = _epochs(dataset, 0)
    assert len(in_process[0]) == SMALL["num_train"] // BATCH and not _same(in_process[0], in_process[1])
    two_workers = _epochs(dataset, 2)
    assert _same(two_workers[0], in_process[0]) and _same(two_workers[1], in_process[1])
    resumed = _epochs(dataset, 2, start_batch=2)
    assert _same(resumed[0], in_process[0][2:]) and _same(resumed[1], in_process[1])


def test_creating_a_loader_iterator_draws_nothing_from_the_global_rng(dataset):
    loader = DataLoader(dataset, batch_size=BATCH)
    torch.manual_seed(0)
    expected = torch.rand(2)
    torch.manual_seed(0)
    iter_keeping_rng(loader)                                                  # iter(loader) draws a base seed
    assert torch.equal(torch.rand(2), expected)
