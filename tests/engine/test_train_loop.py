"""The step loop: non-finite steps skipped and counted, the stop after K in a row with its position, the
per-step hook, and a mid-epoch start that restores the RNG after the loader's iterator exists."""
import pytest
import torch

from dataset.collate import Batch
from engine.checkpoint import capture_rng_state
from engine.optim import LRSchedule, Optimizers
from engine.train import EpochStart, StepConfig, TooManySkippedSteps, train_one_epoch
from models.gcl.base import LossOutput


class ScaledSquare(torch.nn.Module):
    """loss = w² × the batch's scale (a NaN scale makes a non-finite step)."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(()))

    def forward(self, images, tokens, ids):
        loss = self.w ** 2 * images.mean()
        return LossOutput(loss, {})


def batches(scales):
    return [Batch(torch.full((2, 1), float(s)), {"input_ids": torch.zeros(2, 1, dtype=torch.long)}, torch.tensor([0, 1]))
            for s in scales]


def run_epoch(scales, max_skips=100, start=EpochStart(), on_step_end=None):
    task = ScaledSquare()
    optimizers = Optimizers(torch.optim.SGD(task.parameters(), lr=0.1))
    schedule = LRSchedule(optimizers, "step", "constant", 1, len(scales), 0.0, 0.1)
    config = StepConfig(device=torch.device("cpu"), show_progress=False, max_consecutive_skips=max_skips)
    stats = train_one_epoch(task, batches(scales), optimizers, schedule,
                            torch.amp.GradScaler("cpu", enabled=False), 0, config, start, on_step_end)
    return task, stats


def test_non_finite_steps_are_skipped_counted_and_reported_to_the_hook():
    calls = []
    task, stats = run_epoch([1, float("nan"), 1, float("inf"), 1], on_step_end=lambda e, i: calls.append((e, i)))
    assert stats["skipped_steps"] == 2.0 and stats["loss"] == pytest.approx((1 + 0.8 ** 2 + 0.64 ** 2) / 3)
    assert task.w.item() == pytest.approx(0.8 ** 3)                           # three real updates
    assert calls == [(0, 1), (0, 2), (0, 3), (0, 4), (0, 5)]


def test_k_consecutive_non_finite_steps_stop_with_the_position():
    with pytest.raises(TooManySkippedSteps) as info:
        run_epoch([1, float("nan"), float("nan"), 1], max_skips=2)
    assert (info.value.epoch, info.value.iteration) == (0, 3)
    assert "2 consecutive non-finite (NaN/Inf) losses up to epoch 0, iteration 2" in str(info.value)
    info.value.checkpoint = "out/checkpoint_last.pth"
    assert str(info.value).endswith("saved in out/checkpoint_last.pth (--resume continues after them)")


class AugmentingLoader:
    """Like a DataLoader with workers 0: creating the iterator draws from the torch RNG (the base seed), and
    loading each batch draws its augmentation."""

    def __init__(self, num_batches: int) -> None:
        self.num_batches, self.augmentations = num_batches, []

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self):
        torch.rand(10)
        return self._load()

    def _load(self):
        for batch in batches([1] * self.num_batches):
            self.augmentations.append(torch.rand(3))
            yield batch


def test_mid_epoch_start_numbers_steps_from_there_and_restores_the_rng():
    torch.manual_seed(0)
    saved = capture_rng_state()
    expected = [torch.rand(3), torch.rand(3)]
    task, loader, calls = ScaledSquare(), AugmentingLoader(2), []
    optimizers = Optimizers(torch.optim.SGD(task.parameters(), lr=0.1))
    torch.manual_seed(123)                                                    # the epoch-start reseed
    train_one_epoch(task, loader, optimizers, LRSchedule(optimizers, "step", "constant", 1, 5, 0.0, 0.1),
                    torch.amp.GradScaler("cpu", enabled=False), 0,
                    StepConfig(device=torch.device("cpu"), show_progress=False), EpochStart(3, saved),
                    lambda epoch, iterations_done: calls.append(iterations_done))
    assert calls == [4, 5]
    assert all(torch.equal(a, b) for a, b in zip(loader.augmentations, expected, strict=True))
