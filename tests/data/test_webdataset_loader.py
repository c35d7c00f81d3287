"""The webdataset training loader: ids are the keys, skips are counted, ranks/workers split the epoch,
epochs reshuffle reproducibly, the epoch length follows the formula, out-of-range keys fail."""
import pytest
import torch

from dataset.errors import DataError, without_worker_traceback
from dataset.transforms import build_train_transform
from dataset.webdataset_loader import WebDatasetSpec, create_webdataset_loader, epoch_length
from dataset.webdataset_stages import decode_rgb
from wds_helpers import CaptionLength, jpeg, write_shards

IMAGE_RES = 16
BATCH = 4


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """4 shards × 8 readable samples (32 keys with gaps) + 1 corrupt image."""
    return write_shards(tmp_path_factory.mktemp("wds"))


def make(shards, **overrides):
    settings = {"shards": shards.pattern, "num_samples": len(shards.keys), "batch_size": BATCH,
                "data_size": shards.data_size, "seed": 7, **overrides}
    return create_webdataset_loader(WebDatasetSpec(**settings), build_train_transform(IMAGE_RES), CaptionLength())


def epoch_batches(parts, epoch: int) -> list:
    parts.loader.set_epoch(epoch)
    batches = list(parts.loader)
    for batch in batches:
        assert batch.images.shape == (BATCH, 3, IMAGE_RES, IMAGE_RES) and batch.texts["input_ids"].shape == (BATCH, 1)
        assert batch.ids.dtype == torch.int64
    return batches


def epoch_ids(parts, epoch: int) -> list[int]:
    return [i for batch in epoch_batches(parts, epoch) for i in batch.ids.tolist()]


def test_ids_are_the_keys_and_the_corrupt_sample_is_skipped_and_counted(shards, capsys):
    parts = make(shards)
    ids = epoch_ids(parts, 0)
    assert sorted(ids) == sorted(shards.keys) and len(ids) == 32
    assert parts.loader.skipped.value == len(shards.corrupt) == 1
    assert "skipped 1 corrupt or incomplete sample(s)" in capsys.readouterr().out
    assert parts.state_size == shards.data_size


def test_captions_travel_with_their_keys(shards):
    parts = make(shards)
    parts.loader.set_epoch(0)
    batch = next(iter(parts.loader))
    expected = [len(shards.keys[key]) for key in batch.ids.tolist()]
    assert batch.texts["input_ids"][:, 0].tolist() == expected


def test_two_ranks_see_disjoint_halves_of_the_epoch(shards):
    rank_ids = [epoch_ids(make(shards, rank=rank, world_size=2), 3) for rank in (0, 1)]
    assert len(rank_ids[0]) == len(rank_ids[1]) == 16
    assert not set(rank_ids[0]) & set(rank_ids[1])
    assert sorted(rank_ids[0] + rank_ids[1]) == sorted(shards.keys)


def test_epochs_differ_and_are_reproducible_from_the_seed(shards):
    parts = make(shards)
    first, second = epoch_ids(parts, 0), epoch_ids(parts, 1)
    assert first != second and sorted(first) == sorted(second)
    assert epoch_ids(make(shards), 1) == second
    assert epoch_ids(make(shards, seed=8), 1) != second


def test_persistent_workers_split_the_shards_and_follow_the_epoch(shards):
    parts = make(shards, workers=2)
    assert len(parts.loader) == 8
    first, second = epoch_ids(parts, 0), epoch_ids(parts, 1)
    assert sorted(first) == sorted(second) == sorted(shards.keys)
    assert first != second
    assert parts.loader.skipped.value == 1   # counted across worker processes
    assert epoch_ids(make(shards, workers=2), 1) == second   # the workers saw epoch 1, not a re-run of epoch 0


def test_augmentations_follow_seed_epoch_and_key_not_the_process(shards):
    in_process, one_worker = epoch_batches(make(shards), 1), epoch_batches(make(shards, workers=1), 1)
    assert all(torch.equal(a.ids, b.ids) and torch.equal(a.images, b.images)
               for a, b in zip(in_process, one_worker, strict=True))
    other_epoch = {i: image for batch in epoch_batches(make(shards), 2) for i, image in zip(batch.ids.tolist(), batch.images)}
    assert not any(torch.equal(image, other_epoch[i]) for batch in in_process
                   for i, image in zip(batch.ids.tolist(), batch.images))


def test_batches_per_epoch_follow_the_formula(shards):
    # pipeline spec §2.6: CC12M, batch 512, 8 processes, 2 workers -> 2,244 iterations per process
    assert epoch_length(9_184_307, 512, 8, 2) == (1122, 2244)
    assert epoch_length(10, 4, 1, 0) == (3, 3)
    parts = make(shards, num_samples=50)   # ⌈50/4⌉ = 13 batches: the shards are read again
    assert len(parts.loader) == 13 and len(epoch_ids(parts, 0)) == 13 * BATCH


def test_resampled_mode_draws_full_reproducible_epochs(shards):
    parts = make(shards, resampled=True, num_samples=24)
    ids = epoch_ids(parts, 2)
    assert len(ids) == 24 and set(ids) <= set(shards.keys)
    assert epoch_ids(make(shards, resampled=True, num_samples=24), 2) == ids


@pytest.mark.parametrize("workers", [0, 1])
def test_a_key_beyond_data_size_names_the_shard_and_the_key(shards, workers):
    parts = make(shards, data_size=20, workers=workers)
    with pytest.raises(DataError) as info:
        epoch_ids(parts, 0)
    message = without_worker_traceback(str(info.value))   # what clip.py prints
    assert "\n" not in message and ".tar" in message and "--data_size 20" in message
    assert any(f"{key:06d}" in message for key in shards.keys if key >= 20)


def test_images_decode_to_rgb_under_the_pixel_limit(monkeypatch):
    assert decode_rgb(".jpg", jpeg(0)).mode == "RGB" and decode_rgb(".txt", b"caption") is None
    monkeypatch.setattr("dataset.webdataset_stages.MAX_IMAGE_PIXELS", 100)
    with pytest.raises(ValueError, match="16×16 pixels"):   # a DecodingError for the pipeline: skipped, counted
        decode_rgb(".JPG", jpeg(0))


def test_too_few_shards_for_the_readers_is_an_error(shards):
    with pytest.raises(DataError, match="4 shard.*8 readers"):
        make(shards, workers=2, world_size=4)


@pytest.mark.parametrize("workers, start", [(0, 3), (2, 4), (2, 5)])
def test_an_epoch_resumed_at_batch_k_yields_the_rest_of_the_same_epoch(shards, workers, start):
    full = epoch_batches(make(shards, workers=workers), 1)
    parts = make(shards, workers=workers)
    parts.loader.set_epoch(1)
    parts.loader.start_at_batch(start)
    assert len(parts.loader) == 8 - start
    rest = list(parts.loader)
    assert [i for batch in rest for i in batch.ids.tolist()] == [i for batch in full[start:] for i in batch.ids.tolist()]
    assert all(torch.equal(a.images, b.images) for a, b in zip(rest, full[start:], strict=True))  # same augmentations
    assert epoch_ids(parts, 2) == epoch_ids(make(shards, workers=workers), 2)  # the next epoch is whole again
    with pytest.raises(ValueError, match="cannot start at batch 8"):
        parts.loader.start_at_batch(8)


def test_a_resume_past_a_restart_of_the_shards_continues_the_same_batches(shards):
    # batches of 3 from 32 samples: each pass over the shards ends with 2 dropped samples, batch 12 is in pass 2
    def batches(start: int) -> list:
        parts = make(shards, batch_size=3, num_samples=45)
        parts.loader.set_epoch(1)
        parts.loader.start_at_batch(start)
        return list(parts.loader)

    full, rest = batches(0), batches(12)
    assert len(full) == 15 and [b.ids.tolist() for b in rest] == [b.ids.tolist() for b in full[12:]]
    assert all(torch.equal(a.images, b.images) for a, b in zip(rest, full[12:], strict=True))
