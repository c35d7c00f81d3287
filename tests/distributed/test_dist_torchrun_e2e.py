"""A 2-rank torchrun training run of clip.py ends with the weights of a 1-process run on the same global batches.

Why the global batches agree: DistributedSampler draws one permutation (seed + epoch) whatever the world
size and gives rank r the positions r, r + W, ...; with per-rank batch b the union of the ranks' batches at
step k is positions [k·W·b, (k+1)·W·b) of that permutation, which is batch k of a 1-process run with batch
W·b. Inside a batch only the order differs, and the losses are permutation-equivariant (ids follow their
features). Training images use `--train_transform deterministic`; the tiny towers have no dropout/BatchNorm.

SGD rather than AdamW: the gradient of attention key biases is exactly zero in exact arithmetic (softmax is
shift-invariant), so it is float noise, which Adam's 1/sqrt(v) scaling turns into ±lr steps; with SGD a
weight difference measures a gradient difference.
"""
from __future__ import annotations

import json

import pytest
import torch

from dist_helpers import TINY, data_flags, load_checkpoint, run_single, run_torchrun
from models.config import ModelConfig
from models.factory import create_model

PER_RANK_BATCH, WORLD = 16, 2


@pytest.fixture(scope="module")
def initial(tmp_path_factory) -> tuple[str, dict[str, torch.Tensor]]:
    """Start weights shared by both runs (`--checkpoint`), so the test can also see that training moved them."""
    torch.manual_seed(0)
    config = ModelConfig(image_encoder="test_vit", image_res=32, text_encoder="Transformer", text_width=64,
                         text_heads=2, text_layers=2, context_length=32, embed_dim=32)
    state = create_model(config).state_dict()
    path = tmp_path_factory.mktemp("init") / "init.pth"
    torch.save({"model": state}, path)
    return str(path), state


def _args(shapes, out, ita_type: str, batch: int, init: str) -> list[str]:
    return [*data_flags(shapes), *TINY, "--epochs", "1", "--ita_type", ita_type, "--batch_size_train", str(batch),
            "--train_transform", "deterministic", "--opt", "sgd", "--lr", "0.05", "--momentum", "0.9",
            "--warmup_epochs", "0", "--zs_dataset", "none", "--checkpoint", init, "--output_dir", str(out)]


@pytest.mark.parametrize(("ita_type", "accum"), [("clip", 1), ("sogclr", 1), ("isogclr", 2)])
def test_two_ranks_match_one_process_with_the_global_batch(shapes, tmp_path, initial, ita_type, accum):
    """With `accum` > 1 each rank runs `accum` micro-batches of PER_RANK_BATCH/accum per step (gradient caching,
    DDP sync on the last one)."""
    init_path, init_state = initial
    args = _args(shapes, tmp_path / "w2", ita_type, PER_RANK_BATCH // accum, init_path) + ["--accum_freq", str(accum)]
    distributed = run_torchrun(args, nproc=WORLD, timeout=180)
    assert distributed.codes == [0], distributed.output[-3000:]
    assert "world size 2" in distributed.output and distributed.output.count("training ") == 1  # rank 0 prints
    single = run_single(_args(shapes, tmp_path / "w1", ita_type, WORLD * PER_RANK_BATCH, init_path), timeout=180)
    assert single.codes == [0], single.output[-3000:]

    a, b = load_checkpoint(tmp_path / "w1" / "checkpoint_1.pth"), load_checkpoint(tmp_path / "w2" / "checkpoint_1.pth")
    assert a["step"] == b["step"] == 256 // (WORLD * PER_RANK_BATCH)
    assert max((a["model"][k] - init_state[k]).abs().max().item() for k in init_state) > 1e-2  # it trained
    for name, value in a["model"].items():
        torch.testing.assert_close(b["model"][name], value, rtol=1e-5, atol=1e-5, msg=lambda m, n=name: f"{n}: {m}")
    for name, value in a["loss"].items():  # log-domain state ~ h/τ: compare relative to its scale
        scale = max(value[value.isfinite()].abs().max().item(), 1.0) if value.is_floating_point() else 1.0
        torch.testing.assert_close(b["loss"][name], value, rtol=0, atol=1e-5 * scale,
                                   msg=lambda m, n=name: f"{n}: {m}")
    logs = [json.loads((tmp_path / d / "log.txt").read_text()) for d in ("w1", "w2")]
    assert logs[0]["train_loss"] == pytest.approx(logs[1]["train_loss"], rel=1e-5)
    assert sorted(p.name for p in (tmp_path / "w2").iterdir()) == sorted(p.name for p in (tmp_path / "w1").iterdir())
