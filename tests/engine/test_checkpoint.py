"""Atomic, plain-data checkpoints and strict loading."""
import errno
import os
import pickle
import random

import numpy as np
import pytest
import torch

from engine.checkpoint import (FORMAT_VERSION, OPTIONAL_KEYS, RESUME_KEYS, CheckpointError, capture_rng_state,
                               check_resume_keys, link_atomic, load_checkpoint, load_state_strict, prune_numbered,
                               remove_stale_temporaries, restore_rng_state, save_atomic)


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


def test_disk_full_is_a_checkpoint_error_and_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint_last.pth"
    save_atomic({"epoch": 1}, path)

    def disk_full(obj, handle, *args, **kwargs):
        handle.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(CheckpointError, match=r"cannot write checkpoint .*checkpoint_last\.pth: No space left"):
        save_atomic({"epoch": 2}, path)
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint_last.pth"]


def test_required_keys_and_non_dict_files_give_clear_errors(tmp_path):
    torch.save(torch.zeros(2), tmp_path / "tensor.pth")
    with pytest.raises(CheckpointError, match="holds a Tensor, not a checkpoint dict"):
        load_checkpoint(tmp_path / "tensor.pth")
    save_atomic({"epoch": 1}, tmp_path / "no_model.pth")
    with pytest.raises(CheckpointError, match="no_model.pth lacks model"):
        load_checkpoint(tmp_path / "no_model.pth", required=("model",))


def test_resume_keys_are_strict_with_an_explicit_optional_list():
    complete = {key: 0 for key in RESUME_KEYS} | {"format_version": FORMAT_VERSION}
    check_resume_keys(complete, "a.pth")
    check_resume_keys(complete | {key: {} for key in OPTIONAL_KEYS}, "a.pth")
    with pytest.raises(CheckpointError, match=r"missing: loss, optimizer; unexpected: extra"):
        check_resume_keys({k: v for k, v in complete.items() if k not in ("loss", "optimizer")} | {"extra": 1},
                          "a.pth")
    with pytest.raises(CheckpointError, match="newer than this code"):
        check_resume_keys(complete | {"format_version": FORMAT_VERSION + 1}, "a.pth")


def test_prune_keeps_the_newest_and_the_file_last_names(tmp_path):
    for epoch in (1, 2, 3, 10):
        save_atomic({"epoch": epoch}, tmp_path / f"checkpoint_{epoch}.pth")
    link_atomic(tmp_path / "checkpoint_2.pth", tmp_path / "checkpoint_last.pth")
    (tmp_path / "checkpoint_best.pth").write_bytes(b"x")                      # not numbered: never touched
    deleted = prune_numbered(tmp_path, keep=2)
    assert sorted(p.name for p in deleted) == ["checkpoint_1.pth"]           # 3 and 10 newest, 2 is last
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_10.pth", "checkpoint_2.pth", "checkpoint_3.pth",
                                                          "checkpoint_best.pth", "checkpoint_last.pth"]
    assert load_checkpoint(tmp_path / "checkpoint_last.pth")["epoch"] == 2
    assert prune_numbered(tmp_path, keep=0) == []


def test_stale_temporary_files_are_removed(tmp_path):
    (tmp_path / ".checkpoint_last.pth.abc123.tmp").write_bytes(b"partial")
    (tmp_path / ".checkpoint_last.pth.link.tmp").write_bytes(b"")
    (tmp_path / "keep.tmp").write_bytes(b"")
    assert len(remove_stale_temporaries(tmp_path)) == 2
    assert [p.name for p in tmp_path.iterdir()] == ["keep.tmp"]
