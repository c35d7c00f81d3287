"""iSogCLR (docs/losses.md §5) and TempNet (§6) against closed forms and finite differences."""
from __future__ import annotations

import copy
import math

import pytest
import torch

from models.losses import build_loss

WIDE = {"tau_min": 0.005, "tau_max": 1.0}


def rgcl(h: torch.Tensor, tau: torch.Tensor, rho: float, ref) -> torch.Tensor:
    """[B] τ_i·log ĝ_i(τ_i) + ρτ_i."""
    return tau * ref.log_g(h, tau) + rho * tau


@pytest.mark.parametrize("normalizer", ["negatives", "positive_included"])
def test_isogclr_eta_zero_is_sogclr(ref, normalizer):
    e, z = ref.unit(6, 5, seed=0, dtype=torch.float32)
    ids = torch.tensor([1, 4, 0, 7, 3, 2])
    iso = build_loss("isogclr", 8, tau_init=0.02, eta_init=0.0, sogclr_gamma=0.7, gcl_normalizer=normalizer)
    sog = build_loss("sogclr", 8, temp=0.02, sogclr_gamma=0.7, gcl_normalizer=normalizer)
    for seed in (0, 1):
        e, z = ref.unit(6, 5, seed=seed, dtype=torch.float32)
        a, b = iso(e, z, ids), sog(e, z, ids)
        assert torch.equal(a.loss, b.loss)
        assert all(torch.equal(x, y) for x, y in zip(ref.grads(a.loss, e, z), ref.grads(b.loss, e, z)))
    assert torch.equal(iso.log_u_img, sog.log_u_img) and torch.equal(iso.log_u_txt, sog.log_u_txt)
    assert torch.all(iso.tau_img[ids] == iso.tau_img.new_tensor(0.02))


def test_isogclr_one_step_is_finite_difference_tau_step(ref):
    e, z = ref.unit(6, 5, seed=2)
    ids, tau0, rho, eta = torch.arange(6), 0.05, 1.0, 1e-3
    loss = build_loss("isogclr", 6, tau_init=tau0, rho=rho, eta_init=eta, beta_u=1.0, sogclr_gamma=0.5,
                      **WIDE).double()
    start = {side: getattr(loss, f"tau_{side}")[ids].clone() for side in ("img", "txt")}  # fp32(0.05)
    loss(e, z, ids)
    h = {s: v.detach() for s, v in ref.diff(e, z).items()}
    eps = 1e-6
    for side in ("img", "txt"):
        t = start[side]
        fd = (rgcl(h[side], t + eps, rho, ref) - rgcl(h[side], t - eps, rho, ref)) / (2 * eps)
        assert fd.abs().max() < 5  # no clipping active
        torch.testing.assert_close(getattr(loss, f"m_{side}")[ids], fd, rtol=1e-6, atol=1e-8)
        torch.testing.assert_close(getattr(loss, f"tau_{side}")[ids], t - eta * fd, rtol=1e-9, atol=1e-11)


def test_isogclr_clipping_momentum_and_range(ref):
    e, z = ref.unit(6, 5, seed=3)
    ids = torch.arange(6)
    high = build_loss("isogclr", 6, rho=30.0, beta_u=0.9, eta_init=0.01).double()
    high(e, z, ids)
    torch.testing.assert_close(high.m_img[ids], torch.full((6,), 4.5, dtype=torch.float64))  # 0.9·clip(G, 5)
    # with γ = 1, G = ρ − KL(w ‖ uniform) ∈ [ρ − log(B−1), ρ]: always positive / negative below
    high = build_loss("isogclr", 6, rho=30.0, eta_init=0.01, sogclr_gamma=1.0).double()
    low = build_loss("isogclr", 6, rho_init=-30.0, eta_init=0.5, sogclr_gamma=1.0).double()
    for _ in range(3):
        high(e, z, ids), low(e, z, ids)
    assert torch.all(high.tau_img[ids] == high.tau_img.new_tensor(0.005))
    assert torch.all(low.tau_txt[ids] == low.tau_txt.new_tensor(0.05))


def test_isogclr_rho_flags_and_eta_schedule(ref):
    loss = build_loss("isogclr_new", 4, rho_init=1.0, rho=2.0, rho_T=3.0, eta_init=0.03, eta_sched="cosine")
    assert loss.rho == {"img": 2.0, "txt": 3.0}
    assert build_loss("sogclr_dro", 4, rho_init=6.5).rho == {"img": 6.5, "txt": 6.5}
    loss.set_epoch(15, 30)
    e, z = ref.unit(4, 3, seed=4)
    assert loss(e, z, torch.arange(4)).stats["eta"].item() == pytest.approx(0.021243, rel=1e-4)


# --- TempNet ------------------------------------------------------------------------------------

def tempnet(design: str = "tnet", **kw) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_loss("isogclr_tempnet", 10, embed_dim=5, tempnet_protos=7, tempnet_design=design, rho=2.0,
                      **kw).double().eval()


@pytest.mark.parametrize("design", ["tnet", "dtn"])
def test_tempnet_gradient_identity(ref, design):
    e, z = ref.unit(6, 5, seed=5)
    loss = tempnet(design)
    closed_model = copy.deepcopy(loss)
    out = loss(e.detach(), z.detach(), torch.arange(6))
    params = [p for g in loss.param_groups() for p in g["params"]]
    got = torch.autograd.grad(out.loss, params, allow_unused=True)
    h = ref.diff(e.detach(), z.detach())
    closed_model.temp_gen_img.init_prototypes(z.detach())  # what the first forward did
    closed_model.temp_gen_txt.init_prototypes(e.detach())
    tau_i, tau_t = closed_model.temp_gen_img(e), closed_model.temp_gen_txt(z)
    closed = rgcl(h["img"], tau_i, 2.0, ref).mean() + rgcl(h["txt"], tau_t, 2.0, ref).mean()
    cparams = [p for g in closed_model.param_groups() for p in g["params"]]
    want = torch.autograd.grad(closed, cparams, allow_unused=True)
    assert sum(g is not None for g in got) >= 5
    for a, b in zip(got, want):
        if a is None or b is None:
            assert a is None and b is None
        else:
            torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-12)


def test_tempnet_output_range():
    torch.manual_seed(1)
    x = torch.nn.functional.normalize(torch.randn(256, 5, dtype=torch.float64), dim=1)
    tnet = tempnet("tnet", tau_min=0.005, tau_max=0.05)
    with torch.no_grad():
        tnet.temp_gen_img.proj.weight.normal_(0.0, 10.0)
        tnet.temp_gen_img.head.weight.normal_(0.0, 50.0)  # drive r into both tails
        taus = tnet.temp_gen_img(x)
    assert taus.min() >= 0.005 and taus.max() <= 0.05 and taus.max() - taus.min() > 0.03  # saturates, never exceeds
    dtn = tempnet("dtn")
    with torch.no_grad():
        dtn.temp_gen_img.head.bias.fill_(-5.0)
        assert torch.all(dtn.temp_gen_img(x) == 0.001)


def test_tempnet_constant_tau_reduction(ref):
    e, z = ref.unit(6, 5, seed=6)
    tau0, lo, hi = 0.02, 0.005, 0.05
    loss = tempnet()
    with torch.no_grad():
        for net in (loss.temp_gen_img, loss.temp_gen_txt):
            net.head.weight.zero_()
            net.head.bias.fill_(math.log((tau0 - lo) / (hi - tau0)))  # logit((τ₀ − τ_min)/(τ_max − τ_min))
    out = loss(e, z, torch.arange(6))
    sog = build_loss("sogclr", 10, temp=tau0).double()(e, z, torch.arange(6))
    for a, b in zip(ref.grads(out.loss, e, z), ref.grads(sog.loss, e, z)):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(out.stats["tau_img"], torch.tensor(tau0, dtype=torch.float64))
    # L_TN's gradient on c reduces to mean_i G_i·∂τ/∂c with G_i = ∂/∂τ[τ log ĝ_i + ρτ] (u = ĝ here)
    (g_c,) = torch.autograd.grad(out.loss, loss.temp_gen_img.head.bias, retain_graph=True)
    h = ref.diff(e.detach(), z.detach())["img"]
    t = torch.full((6,), tau0, dtype=torch.float64, requires_grad=True)
    (g_tau,) = torch.autograd.grad(rgcl(h, t, 2.0, ref).mean(), t)
    s = (tau0 - lo) / (hi - lo)
    torch.testing.assert_close(g_c.squeeze(), (hi - lo) * s * (1 - s) * g_tau.sum(), rtol=1e-7, atol=1e-12)


def test_tempnet_prototypes_dropout_and_groups(ref):
    e, z = ref.unit(4, 5, seed=7)
    loss = tempnet()
    assert not bool(loss.protos_initialised)
    loss(e, z, torch.arange(4))
    assert bool(loss.protos_initialised)
    torch.testing.assert_close(loss.temp_gen_img.prototypes[:4], z.detach())  # image net ← text embeddings
    torch.testing.assert_close(loss.temp_gen_txt.prototypes[:4], e.detach())
    state = copy.deepcopy(loss.state_dict())
    resumed = tempnet()
    resumed.load_state_dict(state)
    e2, z2 = ref.unit(4, 5, seed=8)
    resumed(e2, z2, torch.arange(4))
    torch.testing.assert_close(resumed.temp_gen_img.prototypes, state["temp_gen_img.prototypes"])  # not redone
    loss.train()
    torch.manual_seed(3)
    a = loss.temp_gen_img(e)
    torch.manual_seed(3)
    b = loss.temp_gen_img(e)
    assert torch.equal(a, b) and not torch.equal(a, loss.eval().temp_gen_img(e))
    (group,) = loss.param_groups()
    assert group["optimizer"] == "own" and group["weight_decay"] == 0.0
    assert len(group["params"]) == len(list(loss.parameters())) == 12
    with pytest.raises(ValueError, match="embed_dim"):
        loss(*ref.unit(4, 3, seed=9), torch.arange(4))
