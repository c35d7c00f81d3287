"""Where a resumed epoch begins: inside it when the batch order can be reproduced, else at its first batch."""
from types import SimpleNamespace

from engine.trainer import _resume_point


class Sampler:
    def __init__(self, order_key: str | None = None) -> None:
        if order_key is not None:
            self.order_key = order_key

    def set_epoch(self, epoch: int) -> None: ...

    def start_at_batch(self, batch: int) -> None: ...


def _run(sampler, steps: int = 10, batch: int = 8):
    return SimpleNamespace(sampler=sampler, steps_per_epoch=steps, args={"batch_size_train": batch}, start_epoch=2)


def _mid_epoch(**extra):
    return {"iteration": 4, "steps_per_epoch": 10, "world_size": 1, "batch_size": 8, "rng": ["rank0"], **extra}


def test_same_loader_continues_at_the_saved_step():
    start = _resume_point(_run(Sampler("webdataset, 2 reader(s) per rank")),
                          _mid_epoch(order_key="webdataset, 2 reader(s) per rank"), "ckpt")
    assert (start.iteration, start.rng) == (4, "rank0")
    assert _resume_point(_run(Sampler()), _mid_epoch(), "ckpt").iteration == 4  # written before order keys


def test_another_reader_count_or_batch_size_restarts_the_epoch(capsys):
    shards = _run(Sampler("webdataset, 1 reader(s) per rank"))
    assert _resume_point(shards, _mid_epoch(order_key="webdataset, 2 reader(s) per rank"), "ckpt").iteration == 0
    assert "epoch 2 restarts from its first batch" in capsys.readouterr().out
    assert _resume_point(_run(Sampler(), batch=16), _mid_epoch(), "ckpt").iteration == 0
    assert _resume_point(_run(object()), _mid_epoch(), "ckpt").iteration == 0  # cannot skip batches at all
