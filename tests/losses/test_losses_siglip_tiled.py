"""SigLIP against OpenCLIP's SigLipLoss, and the tiled losses' memory layout (docs/losses.md §16)."""
from __future__ import annotations

import math

import pytest
import torch
from open_clip.loss import SigLipLoss

from models.gcl.tiled import blocks
from models.losses import build_loss


@pytest.mark.parametrize("tile", [0, 3])
def test_siglip_equals_open_clip(ref, tile):
    e, z = ref.unit(7, 5, seed=3)
    loss = build_loss("siglip", 7, loss_tile=tile).double()
    with torch.no_grad():
        loss.logit_scale.fill_(1.3)
        loss.logit_bias.fill_(-2.0)
    out = loss(e, z, torch.arange(7))
    got = ref.grads(out.loss, e, z, loss.logit_scale, loss.logit_bias)
    scale = torch.tensor(1.3, dtype=torch.float64, requires_grad=True)
    bias = torch.tensor(-2.0, dtype=torch.float64, requires_grad=True)
    want_loss = SigLipLoss()(e, z, scale.exp(), bias)
    want = ref.grads(want_loss, e, z, scale, bias)
    torch.testing.assert_close(out.loss, want_loss, rtol=1e-12, atol=1e-12)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)
    assert out.stats["tau_img"].item() == pytest.approx(math.exp(-1.3))


def test_siglip_initial_scale_bias_and_groups():
    loss = build_loss("siglip", 4)
    assert loss.logit_scale.item() == pytest.approx(math.log(10.0)) and loss.logit_bias.item() == -10.0
    assert loss.param_groups() == [{"params": [loss.logit_scale, loss.logit_bias], "weight_decay": 0.0,
                                    "optimizer": "main"}]


def test_blocks_cover_the_range_with_a_ragged_last_block():
    assert blocks(7, 3) == [slice(0, 3), slice(3, 6), slice(6, 7)]
    assert blocks(7, 0) == [slice(0, 7)]


@pytest.mark.parametrize("name", ["clip", "siglip", "sogclr", "isogclr", "fastclip_v3", "hybrid"])
def test_tiled_backward_keeps_no_batch_by_batch_tensor(ref, name):
    """With loss_tile the autograd graph saves nothing of B×B size (untiled it saves the [B, B] similarities)."""
    batch, dim, tile = 48, 4, 8
    e, z = ref.unit(batch, dim, seed=4)

    def largest_saved(loss_tile: int) -> int:
        sizes = []
        loss = build_loss(name, batch, loss_tile=loss_tile).double()
        with torch.autograd.graph.saved_tensors_hooks(lambda t: sizes.append(t.numel()) or t, lambda t: t):
            out = loss(e, z, torch.arange(batch))
        out.loss.backward()
        return max(sizes)

    assert largest_saved(0) >= batch * batch
    assert largest_saved(tile) <= batch * dim
    assert e.grad is not None and torch.isfinite(e.grad).all()


def test_loss_tile_must_not_be_negative():
    with pytest.raises(ValueError, match="loss_tile must be >= 0"):
        build_loss("clip", 4, loss_tile=-1)
