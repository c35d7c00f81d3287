"""Atomic, plain-data checkpoints and strict loading."""
import os
import pickle
import random

import numpy as np
import pytest
import torch

from engine.checkpoint import (CheckpointError, capture_rng_state, link_atomic, load_checkpoint, load_state_strict,
                               restore_rng_state, save_atomic)


class Payload:
    """Stands in for an attacker's object: loading it must be refused."""

    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_save_atomic_round_trips_and_leaves_no_temporary_files(tmp_path):
    path = tmp_path / "checkpoint_1.pth"
    save_atomic({"model": {"w": torch.arange(3.0)}, "args": {"lr": 0.1}}, path)
    loaded = load_checkpoint(path)
    assert torch.equal(loaded["model"]["w"], torch.arange(3.0)) and loaded["args"] == {"lr": 0.1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_1.pth"]


def test_failed_save_keeps_the_previous_file(tmp_path):
    path = tmp_path / "checkpoint_last.pth"
    save_atomic({"epoch": 1}, path)
    with pytest.raises((pickle.PicklingError, AttributeError)):
        save_atomic({"epoch": 2, "bad": lambda: 0}, path)
    assert load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint_last.pth"]


def test_link_atomic_names_the_same_content(tmp_path):
    save_atomic({"epoch": 3}, tmp_path / "checkpoint_3.pth")
    link_atomic(tmp_path / "checkpoint_3.pth", tmp_path / "checkpoint_last.pth")
    assert load_checkpoint(tmp_path / "checkpoint_last.pth")["epoch"] == 3


def test_malicious_pickle_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"model": {}, "payload": Payload()}, path)
    with pytest.raises(CheckpointError, match="not plain data"):
        load_checkpoint(path)


def test_missing_and_truncated_checkpoints_give_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.pth")
    save_atomic({"w": torch.zeros(1000)}, tmp_path / "full.pth")
    data = (tmp_path / "full.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cut.pth"):
        load_checkpoint(tmp_path / "cut.pth")


def test_strict_loading_lists_mismatched_keys():
    model = torch.nn.Sequential(torch.nn.Linear(2, 3))
    state = {"0.weight": torch.zeros(4, 2), "1.bias": torch.zeros(3)}
    with pytest.raises(CheckpointError) as info:
        load_state_strict(model, state, "model", "ckpt.pth")
    message = str(info.value)
    assert "missing: 0.bias" in message and "unexpected: 1.bias" in message and "0.weight (4, 2)" in message


def test_rng_state_round_trip_through_weights_only_file(tmp_path):
    torch.manual_seed(1), np.random.seed(1), random.seed(1)
    save_atomic({"rng": capture_rng_state()}, tmp_path / "rng.pth")
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(99), np.random.seed(99), random.seed(99)
    restore_rng_state(load_checkpoint(tmp_path / "rng.pth")["rng"])
    assert torch.equal(torch.rand(3), expected[0])
    assert np.array_equal(np.random.rand(3), expected[1]) and random.random() == expected[2]
