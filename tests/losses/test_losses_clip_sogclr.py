"""CLIP (docs/losses.md §3) and SogCLR (§4) against closed forms."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from models.losses import build_loss


def test_clip_equals_direct_cross_entropy(ref):
    e, z = ref.unit(7, 5, seed=0)
    out = build_loss("clip", 1, temp=0.07)(e, z, torch.arange(7))
    s = e @ z.T / 0.07
    direct = 0.5 * (-(torch.log_softmax(s, 1).diagonal()).mean() - torch.log_softmax(s, 0).diagonal().mean())
    torch.testing.assert_close(out.loss, direct)
    assert out.stats["tau_img"].item() == pytest.approx(0.07) and not out.stats["objective"].requires_grad


def test_clip_two_pair_closed_form(ref):
    e, z = ref.unit(2, 3, seed=1)
    out = build_loss("clip", 1, temp=0.1)(e, z, torch.arange(2))
    s = (e @ z.T).detach()
    per_dir = [-F.logsigmoid((s[i, i] - s[i, 1 - i]) / 0.1) for i in range(2)]
    per_dir_t = [-F.logsigmoid((s[i, i] - s[1 - i, i]) / 0.1) for i in range(2)]
    torch.testing.assert_close(out.loss.detach(), 0.5 * (sum(per_dir) / 2 + sum(per_dir_t) / 2))


def test_clip_learnable_temperature_gradient_and_clamp(ref):
    e, z = ref.unit(6, 4, seed=2)
    loss = build_loss("clip", 1, temp=0.05, learnable_temp=True).double()
    out = loss(e, z, torch.arange(6))
    (g,) = torch.autograd.grad(out.loss, loss.log_temp)
    s, inv_tau = (e @ z.T).detach(), 1 / 0.05
    p_img, p_txt = torch.softmax(s * inv_tau, 1), torch.softmax(s.T * inv_tau, 1)
    d_inv_tau = 0.5 * (((p_img * s).sum(1) - s.diagonal()).mean() + ((p_txt * s.T).sum(1) - s.diagonal()).mean())
    torch.testing.assert_close(g, -inv_tau * d_inv_tau)  # θ = log τ, so ∂/∂θ = −(1/τ)·∂/∂(1/τ)
    groups = loss.param_groups()
    assert groups == [{"params": [loss.log_temp], "weight_decay": 0.0, "optimizer": "main"}]
    with torch.no_grad():
        loss.log_temp.fill_(math.log(3.0))
    assert loss(e, z, torch.arange(6)).stats["tau_img"].item() == pytest.approx(0.5)
    assert build_loss("clip", 1).param_groups() == []


@pytest.mark.parametrize("tau", [0.05, 0.5])
def test_sogclr_gamma_one_gradient_is_decoupled_closed_form(ref, tau):
    e, z = ref.unit(6, 5, seed=3)
    loss = build_loss("sogclr", 10, temp=tau, sogclr_gamma=0.4).double()  # first visit: u = ĝ
    out = loss(e, z, torch.arange(6) + 2)
    h = ref.diff(e, z)
    closed = tau * (ref.log_g(h["img"], tau).mean() + ref.log_g(h["txt"], tau).mean())
    for got, want in zip(ref.grads(out.loss, e, z), ref.grads(closed, e, z)):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(out.stats["objective"], closed.detach())


def test_sogclr_positive_included_is_two_tau_clip(ref):
    e, z = ref.unit(6, 5, seed=4)
    out = build_loss("sogclr", 6, temp=0.1, gcl_normalizer="positive_included").double()(e, z, torch.arange(6))
    clip = 2 * 0.1 * ref.clip(e, z, 0.1)
    for got, want in zip(ref.grads(out.loss, e, z), ref.grads(clip, e, z)):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)


def test_sogclr_fp32_math_under_low_precision_inputs(ref):
    e, z = ref.unit(6, 5, seed=5)
    loss = build_loss("sogclr", 6, temp=0.05)
    out16 = loss(e.detach().bfloat16(), z.detach().bfloat16(), torch.arange(6))
    assert out16.loss.dtype == torch.float32 and loss.log_u_img.dtype == torch.float64  # the state is float64
    plain = build_loss("sogclr", 6, temp=0.05)(e.detach().float(), z.detach().float(), torch.arange(6))
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the loss disables autocast: bit-identical result
        auto = build_loss("sogclr", 6, temp=0.05)(e.detach().float(), z.detach().float(), torch.arange(6))
    assert torch.equal(auto.loss, plain.loss)
