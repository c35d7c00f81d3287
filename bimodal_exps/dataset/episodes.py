"""Episodic sampling (ProtoCLIP, Chen et al. 2022): each epoch trains on E pair ids drawn with replacement.

The draw is a pure function of (seed, epoch), identical on every rank and after a resume; the epoch then
runs over the E positions exactly like a plain epoch (shuffle, rank split, mid-epoch start), and items keep
their true pair ids, so per-sample loss state stays attached to the right pairs.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from dataset.sample_rng import SampleKey
from dataset.sampler import ResumableDistributedSampler


def episode_ids(seed: int, epoch: int, population: int, episode_size: int) -> np.ndarray:
    """`episode_size` dataset positions drawn uniformly with replacement from [0, population), seeded by (seed, epoch)."""
    return np.random.default_rng([seed, epoch]).integers(0, population, size=episode_size)


class EpisodicSampler(ResumableDistributedSampler):
    """A `ResumableDistributedSampler` over the E positions of the current episode, yielding keys of dataset positions."""

    def __init__(self, population: int, episode_size: int, batch_size: int, **kwargs: Any) -> None:
        super().__init__(range(episode_size), batch_size, **kwargs)
        self.population = population
        self.episode_size = episode_size
        self.order_key = f"episodes of {episode_size} from {population}"

    def set_epoch(self, epoch: int) -> None:
        """Start epoch `epoch` (its episode follows from (seed, epoch)); rank 0 prints its size and distinct ids."""
        super().set_epoch(epoch)
        if self.rank == 0:
            print(f"epoch {epoch}: episode of {self.episode_size} draws, "
                  f"{len(np.unique(self.episode()))} distinct of {self.population} pairs", flush=True)

    def episode(self, epoch: int | None = None) -> np.ndarray:
        """The dataset positions of `epoch`'s episode (default: the current epoch; position k of the epoch =
        element k)."""
        return episode_ids(self.seed, self.epoch if epoch is None else epoch, self.population, self.episode_size)

    def __iter__(self) -> Iterator[SampleKey]:
        """Keys of the episode's dataset positions; a pair drawn twice in an epoch gets the same augmentation."""
        ids = self.episode()
        return (key._replace(index=int(ids[key.index])) for key in super().__iter__())
