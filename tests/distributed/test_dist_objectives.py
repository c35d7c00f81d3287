"""A uni-directional objective (dino) under 2-rank torchrun equals one process on the same global batches (weights,
prototypes, centre): its trainable teacher tower gets no gradient, which DDP must tolerate. See
test_dist_torchrun_e2e.py for why the global batches agree and why SGD; the loss-level 2-rank equality of every
objective is in tests/losses/test_losses_distributed.py."""
from __future__ import annotations

import torch

from dist_helpers import TINY, data_flags, load_checkpoint, run_single, run_torchrun

PER_RANK_BATCH, WORLD = 16, 2


def _args(shapes, out, ita_type: str, batch: int) -> list[str]:
    return [*data_flags(shapes), *TINY, "--epochs", "1", "--ita_type", ita_type, "--batch_size_train", str(batch),
            "--train_transform", "deterministic", "--opt", "sgd", "--lr", "0.05", "--momentum", "0.9",
            "--warmup_epochs", "0", "--zs_dataset", "none", "--output_dir", str(out), "--seed", "0",
            "--memory_bank_size", "24", "--num_prototypes", "24"]


def test_dino_two_ranks_match_one_process(shapes, tmp_path):
    distributed = run_torchrun(_args(shapes, tmp_path / "w2", "dino", PER_RANK_BATCH), nproc=WORLD, timeout=240)
    assert distributed.codes == [0], distributed.output[-3000:]
    single = run_single(_args(shapes, tmp_path / "w1", "dino", WORLD * PER_RANK_BATCH), timeout=240)
    assert single.codes == [0], single.output[-3000:]
    a, b = load_checkpoint(tmp_path / "w1" / "checkpoint_1.pth"), load_checkpoint(tmp_path / "w2" / "checkpoint_1.pth")
    assert not torch.equal(a["loss"]["center"], torch.zeros_like(a["loss"]["center"]))
    for part in ("model", "loss"):
        for name, value in a[part].items():
            torch.testing.assert_close(b[part][name], value, rtol=1e-5, atol=1e-5,
                                       msg=lambda m, n=name: f"{part}.{n}: {m}")


def test_protoclip_two_ranks_cluster_and_train_like_one_process(shapes, tmp_path):
    """ProtoCLIP's clustering step (each rank encodes a shard, rank 0 clusters, tables broadcast) installs the
    single process's labels and tables, and the epoch then trains to the same weights."""
    extra = ["--proto_k", "4", "--pbt", "--proto_target_temp", "0.1", "--proto_hidden_dim", "16"]
    distributed = run_torchrun([*_args(shapes, tmp_path / "w2", "protoclip", PER_RANK_BATCH), *extra], nproc=WORLD,
                               timeout=240)
    assert distributed.codes == [0], distributed.output[-3000:]
    single = run_single([*_args(shapes, tmp_path / "w1", "protoclip", WORLD * PER_RANK_BATCH), *extra], timeout=240)
    assert single.codes == [0], single.output[-3000:]
    a, b = load_checkpoint(tmp_path / "w1" / "checkpoint_1.pth"), load_checkpoint(tmp_path / "w2" / "checkpoint_1.pth")
    assert a["loss"]["labels_img"].min() >= 0
    for name in ("labels_img", "labels_txt"):
        assert torch.equal(a["loss"][name], b["loss"][name]), name
    for part in ("model", "loss"):
        for name, value in a[part].items():
            torch.testing.assert_close(b[part][name], value, rtol=1e-5, atol=1e-5,
                                       msg=lambda m, n=name: f"{part}.{n}: {m}")
