"""Per-sample augmentation randomness: every training sample draws from RNGs seeded by (seed, epoch, sample id).

A sample's augmentation is then a function of the run's `--seed`, the epoch and the sample's id only, not of
which DataLoader worker (or the main process) computes it, of how many samples that worker processed before,
nor of whether the run was resumed: worker count and kill-and-resume leave the augmentations unchanged.

torchvision transforms draw from torch's global generator and the blur of the unimodal views from Python's
`random`, so `seeded_draws` seeds those two for the duration of one sample and restores their previous states
afterwards, which keeps the main process's own streams undisturbed when `--workers 0`; this costs about 40 µs
of CPU per sample (a 64 px training transform takes about 1 ms). NumPy's global RNG is left alone: no
transform here draws from it, and saving and restoring it would add about 120 µs per sample; a transform
added later must draw from torch or `random`.
"""
from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple

import torch


class SampleKey(NamedTuple):
    """What a training sampler yields instead of a bare index: the index and the (seed, epoch) of its draws.

    Carrying the epoch inside the key delivers it to persistent DataLoader workers without shared state.
    """

    index: int
    epoch: int
    seed: int


def sample_seed(seed: int, epoch: int, sample_id: int) -> int:
    """A 63-bit seed that is a fixed function of (seed, epoch, sample id), well mixed (BLAKE2b)."""
    digest = hashlib.blake2b(f"{seed}:{epoch}:{sample_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


@contextmanager
def seeded_draws(seed: int) -> Iterator[None]:
    """Seed torch's CPU generator and Python's `random` with `seed` inside the block and put their previous states
    back afterwards (CUDA generators are neither used by transforms nor touched)."""
    saved = torch.get_rng_state(), random.getstate()
    torch.default_generator.manual_seed(seed)
    random.seed(seed)
    try:
        yield
    finally:
        torch.set_rng_state(saved[0])
        random.setstate(saved[1])


def transform_sample(transform: Callable[[Any], Any], image: Any, seed: int, epoch: int, sample_id: int) -> Any:
    """`transform(image)` with the draws of sample `sample_id` in `epoch` of a run seeded `seed`."""
    with seeded_draws(sample_seed(seed, epoch, sample_id)):
        return transform(image)


def iter_keeping_rng(loader: Iterable[Any]) -> Iterator[Any]:
    """`iter(loader)` with torch's global generator left as it was: a DataLoader draws its base seed from it when
    it starts an epoch without persistent workers but not when it resumes persistent ones, so the draw would make
    the main process's later random numbers (dropout, loss sampling) depend on `--workers`."""
    with torch.random.fork_rng(devices=[]):
        return iter(loader)
