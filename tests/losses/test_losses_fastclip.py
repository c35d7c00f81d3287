"""FastCLIP v0–v3 (docs/losses.md §9): gradient conventions, τ rules and the γ schedule."""
from __future__ import annotations

import math

import pytest
import torch

from models.losses import build_loss


def fast(version: int, n: int = 8, **kw) -> torch.nn.Module:
    return build_loss(f"fastclip_v{version}", n, **kw).double()


def mean_x(h: torch.Tensor, tau) -> torch.Tensor:
    """[B] E_w[h/τ] with u = ĝ (softmax over negatives)."""
    x = (h / tau).masked_fill(torch.eye(h.shape[0], dtype=torch.bool), -math.inf)
    return (torch.softmax(x, 1) * x.nan_to_num(neginf=0.0)).sum(1)


def test_v1_features_get_half_gradient_of_log_g(ref):
    e, z = ref.unit(6, 5, seed=0)
    out = fast(1, temp=0.07)(e, z, torch.arange(6))
    assert out.stats["gamma"].item() == 1.0  # epoch 0
    h = ref.diff(e, z)
    closed = 0.5 * (ref.log_g(h["img"], 0.07).mean() + ref.log_g(h["txt"], 0.07).mean())
    for got, want in zip(ref.grads(out.loss, e, z), ref.grads(closed, e, z)):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)


def test_v0_half_for_features_full_for_logit_scale(ref):
    e, z = ref.unit(6, 5, seed=1)
    loss = fast(0, temp=0.1)
    out = loss(e, z, torch.arange(6))
    got = torch.autograd.grad(out.loss, (e, z, loss.logit_scale))
    theta = loss.logit_scale.detach().clone().requires_grad_()  # fp32(ln 10) promoted by .double()
    h = ref.diff(e, z)
    f = ref.log_g(h["img"], torch.exp(-theta)).mean() + ref.log_g(h["txt"], torch.exp(-theta)).mean()
    want = torch.autograd.grad(f, (e, z, theta))
    torch.testing.assert_close(got[0], 0.5 * want[0], rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(got[1], 0.5 * want[1], rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(got[2], want[2], rtol=1e-9, atol=1e-12)
    assert loss.param_groups()[0]["params"] == [loss.logit_scale]
    with torch.no_grad():
        loss.logit_scale.fill_(7.0)  # beyond ln 100: clamped before the forward
    assert loss(e, z, torch.arange(6)).stats["tau_img"].item() == pytest.approx(0.01)


@pytest.mark.parametrize("mode", ["reference", "consistent"])
def test_v3_tau_gradient_formula(ref, mode):
    e, z = ref.unit(6, 5, seed=2)
    rho = 2.0
    loss = fast(3, temp=0.1, rho=rho, v3_tau_grad=mode)
    tau = float(torch.exp(-loss.logit_scale.detach()))
    out = loss(e, z, torch.arange(6))
    g_e, g_theta = torch.autograd.grad(out.loss, (e, loss.logit_scale))
    h = {s: v.detach() for s, v in ref.diff(e, z).items()}
    t = torch.tensor(tau, dtype=torch.float64, requires_grad=True)
    objective = t * 0.5 * (ref.log_g(h["img"], t).mean() + ref.log_g(h["txt"], t).mean()) + rho * t
    (consistent,) = torch.autograd.grad(objective, t)
    extra = 0.5 * (mean_x(h["img"], tau).mean() + mean_x(h["txt"], tau).mean())
    d_tau = consistent - extra if mode == "reference" else consistent
    torch.testing.assert_close(g_theta, -tau * d_tau, rtol=1e-9, atol=1e-12)  # τ = e^{−θ}
    hg = ref.diff(e, z)
    feat = tau * 0.5 * (ref.log_g(hg["img"], tau).mean() + ref.log_g(hg["txt"], tau).mean())
    torch.testing.assert_close(g_e, ref.grads(feat, e)[0], rtol=1e-9, atol=1e-12)


def test_v2_sign_step_then_bias_corrected_step(ref):
    ids, rho, lr, b1, b2 = torch.arange(6), 1.0, 0.01, 0.9, 0.999
    loss = fast(2, n=6, rho=rho, tau_init=0.05, lr_tau=lr, sogclr_gamma=0.5, gamma_decay_epochs=4)
    tau0 = loss.tau_img.clone()
    e0, z0 = ref.unit(6, 5, seed=3)
    out = loss(e0, z0, ids)
    h0 = ref.diff(e0.detach(), z0.detach())["img"]
    t0 = tau0.double()
    g0 = (ref.log_g(h0, t0) + rho - mean_x(h0, t0[:, None])).clamp(-5, 5)
    torch.testing.assert_close(loss.tau_img, t0 - lr * torch.sign(g0), rtol=1e-6, atol=1e-9)  # epoch 0: β1=β2=0
    hg = ref.diff(e0, z0)
    closed = 0.5 * (ref.log_g(hg["img"], t0).mean() + ref.log_g(hg["txt"], t0).mean())
    torch.testing.assert_close(ref.grads(out.loss, e0)[0], ref.grads(closed, e0)[0], rtol=1e-9, atol=1e-12)

    loss.set_epoch(1, 8)
    gamma = 0.5 + 0.5 * 0.5 * (1 + math.cos(math.pi / 4))
    e1, z1 = ref.unit(6, 5, seed=4)
    out = loss(e1, z1, ids)
    assert out.stats["gamma"].item() == pytest.approx(gamma)
    h1 = ref.diff(e1.detach(), z1.detach())["img"]
    t1 = t0 - lr * torch.sign(g0)  # the τ stored after epoch 0
    u1 = (1 - gamma) * ref.log_g(h0, t0).exp() + gamma * ref.log_g(h1, t1).exp()
    x1 = (h1 / t1[:, None]).masked_fill(torch.eye(6, dtype=torch.bool), -math.inf)
    w1 = torch.exp(x1 - u1.log()[:, None])
    g1 = (u1.log() + rho - (w1 * x1.nan_to_num(neginf=0.0)).sum(1) / 5).clamp(-5, 5)
    m = b1 * g0 + (1 - b1) * g1
    v = b2 * g0 ** 2 + (1 - b2) * g1 ** 2
    step = lr * (m / (1 - b1 ** 2)) / ((v / (1 - b2 ** 2)).sqrt() + 1e-8)
    torch.testing.assert_close(loss.tau_img.double(), (t1 - step).clamp(0.01, 1.0), rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(loss.m_img, m, rtol=1e-6, atol=1e-9)


def test_fastclip_gamma_schedule_in_loss(ref):
    e, z = ref.unit(4, 3, seed=5)
    loss = fast(1, gamma_decay_epochs=18)
    got = []
    for epoch in (0, 1, 9, 17, 20):
        loss.set_epoch(epoch, 37)
        got.append(loss(e, z, torch.arange(4)).stats["gamma"].item())
    assert got == pytest.approx([1.0, 0.99392, 0.6, 0.20608, 0.2], abs=1e-5)
    const = fast(1, gamma_schedule="constant", sogclr_gamma=0.5)
    assert const(e, z, torch.arange(4)).stats["gamma"].item() == 1.0
    const.set_epoch(1, 3)
    assert const(e, z, torch.arange(4)).stats["gamma"].item() == 0.5
