"""ResumableDistributedSampler: an epoch started at batch k yields exactly the indices after its first k batches,
each keyed with the sampler's seed and the epoch."""
import pytest
from torch.utils.data import DataLoader

from dataset.sample_rng import SampleKey
from dataset.sampler import ResumableDistributedSampler


class Keys(list):
    """A dataset whose item is the key it was fetched with."""

    def __getitem__(self, key):
        return key


@pytest.mark.parametrize("rank, world_size", [(0, 1), (1, 3)])
def test_starting_at_batch_k_continues_the_same_epoch_order(rank, world_size):
    dataset = Keys(range(50))
    sampler = ResumableDistributedSampler(dataset, 4, num_replicas=world_size, rank=rank, seed=7, drop_last=True)
    sampler.set_epoch(3)
    full = list(sampler)
    assert all(isinstance(key, SampleKey) and key.epoch == 3 and key.seed == 7 for key in full)
    sampler.start_at_batch(2)
    assert list(sampler) == full[8:] and len(sampler) == len(full) - 8
    loader = DataLoader(dataset, batch_size=4, sampler=sampler, drop_last=True, collate_fn=list, num_workers=1,
                        persistent_workers=True)
    assert [key for batch in loader for key in batch] == full[8:len(full) // 4 * 4]
    sampler.set_epoch(5)                                                      # the epoch reaches persistent workers
    assert {key.epoch for batch in loader for key in batch} == {5}
    sampler.set_epoch(4)                                                      # only the resumed epoch is short
    assert sampler.start_batch == 0 and len(list(sampler)) == len(full) and list(sampler) != full


def test_start_beyond_the_epoch_is_refused():
    sampler = ResumableDistributedSampler(list(range(10)), 4, num_replicas=1, rank=0)
    sampler.start_at_batch(2)
    with pytest.raises(ValueError, match="cannot start at batch 3"):
        sampler.start_at_batch(3)
