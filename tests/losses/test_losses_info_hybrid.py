"""InfoSogCLR (docs/losses.md §7) and HybridSogCLR (§8) against closed forms and the HYB reference recipe."""
from __future__ import annotations

import math

import pytest
import torch

from models.gcl.estimator import Normaliser, gcl_direction
from models.losses import build_loss

NO_REG = {"cov_coeff": 0.0, "std_coeff": 0.0}


def test_info_alpha_zero_is_sogclr(ref):
    mine = build_loss("sogclr_mine", 8, temp=0.05, sogclr_gamma=0.6, **NO_REG).double()
    sog = build_loss("sogclr", 8, temp=0.05, sogclr_gamma=0.6).double()
    ids = torch.tensor([0, 5, 2, 7, 1])
    for seed in (0, 1):
        e, z = ref.unit(5, 4, seed=seed)
        a, b = mine(e, z, ids), sog(e, z, ids)
        assert torch.equal(a.loss, b.loss)
    assert torch.equal(mine.log_u_img, sog.log_u_img) and torch.equal(mine.log_u_txt, sog.log_u_txt)


def test_info_alpha_batch_is_two_tau_clip_and_isog_parity(ref):
    e, z = ref.unit(6, 5, seed=2)
    out = build_loss("infosogclr", 6, temp=0.1, info_alpha="batch", **NO_REG).double()(e, z, torch.arange(6))
    for got, want in zip(ref.grads(out.loss, e, z), ref.grads(2 * 0.1 * ref.clip(e, z, 0.1), e, z)):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)
    # ISOG `sogclr` (positive included, B terms over B−1) is α = 1/B up to log(B/(B−1)) in the state
    mine = build_loss("sogclr_mine", 6, temp=0.1, sogclr_gamma=0.5, info_alpha="batch", **NO_REG).double()
    isog = build_loss("sogclr", 6, temp=0.1, sogclr_gamma=0.5, gcl_normalizer="positive_included").double()
    for seed in (3, 4):
        e, z = ref.unit(6, 5, seed=seed)
        a, b = mine(e, z, torch.arange(6)), isog(e, z, torch.arange(6))
        for got, want in zip(ref.grads(a.loss, e, z), ref.grads(b.loss, e, z)):
            torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(isog.log_u_img - mine.log_u_img, torch.full((6,), math.log(6 / 5), dtype=torch.float64))


def test_info_alpha_to_one_kills_the_gradient(ref):
    e, z = ref.unit(6, 5, seed=5)
    norms = []
    for alpha in (0.0, 1 - 1e-6, 1 - 1e-8):
        out = build_loss("sogclr_mine", 6, temp=0.1, info_alpha=alpha, **NO_REG).double()(e, z, torch.arange(6))
        norms.append(torch.cat([g.flatten() for g in ref.grads(out.loss, e, z)]).norm())
    assert norms[2] < 1e-4 * norms[0]
    assert norms[1] / norms[2] == pytest.approx(100, rel=1e-3)  # ∝ (1 − α) as α → 1


@pytest.mark.parametrize("alpha", [0.0, 0.3])
def test_alpha_rgcl_gradient_is_finite_difference(ref, alpha):
    e, z = ref.unit(6, 5, seed=6)
    h = ref.diff(e, z)["img"].detach()
    tau, rho, eps = torch.full((6,), 0.07, dtype=torch.float64), 1.5, 1e-6
    d = gcl_direction(h, torch.arange(6), tau, torch.full((6,), -math.inf, dtype=torch.float64),
                      Normaliser.with_alpha(alpha, 6), 1.0, torch.ones(6, dtype=torch.bool))

    def f(t):
        return t * ref.log_g(h, t, alpha) + rho * t
    torch.testing.assert_close(d.rgcl_grad(rho), (f(tau + eps) - f(tau - eps)) / (2 * eps), rtol=1e-6, atol=1e-8)
    naive = ref.log_g(h, tau, alpha)
    torch.testing.assert_close(d.log_u, naive, rtol=1e-12, atol=1e-12)  # stable LSE form = naive form


def test_info_penalties_cover_both_modalities(ref):
    e, z = ref.unit(7, 4, seed=7)
    ids = torch.arange(7)
    base = build_loss("sogclr", 7, temp=0.05).double()(e, z, ids).loss
    mine = build_loss("sogclr_mine", 7, temp=0.05).double()(e, z, ids)
    v2 = build_loss("sogclr_v2_mine", 7, temp=0.05).double()(e, z, ids)

    def cov_pen(x):
        c = torch.cov(x.T)
        return (c.square().sum() - c.diagonal().square().sum()) / x.shape[1]

    def var_pen(x):
        return torch.relu(1 - torch.sqrt(x.var(0) + 1e-4)).mean()
    cov = cov_pen(e) + cov_pen(z)
    var = 0.5 * (var_pen(e) + var_pen(z))
    torch.testing.assert_close(mine.loss - base, cov, rtol=1e-10, atol=1e-12)  # cov_coeff 1, std_coeff 0
    torch.testing.assert_close(v2.loss - base, cov + 5.0 * var, rtol=1e-10, atol=1e-12)  # v2: std_coeff 5
    for got, want in zip(ref.grads(mine.loss, e, z), ref.grads(base + cov, e, z)):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)
    assert ref.grads(cov_pen(z), z)[0].abs().max() > 1e-3  # the text term is live, not the image slip


# --- HybridSogCLR --------------------------------------------------------------------------------

def test_hybrid_adaptive_tau_formula_range_and_sogclr_equivalence(ref):
    e, z = ref.unit(6, 5, seed=8)
    out = build_loss("hybrid", 6, tau_init=0.01, sogclr_gamma=0.3).double()(e, z, torch.arange(6))
    tau_t = 0.01 * (1 + torch.tanh(torch.std(e.detach() @ z.detach().T)))
    torch.testing.assert_close(out.stats["tau_img"], tau_t)
    assert 0.01 <= tau_t < 0.02
    sog = build_loss("sogclr", 6, temp=float(tau_t), sogclr_gamma=0.3).double()(e, z, torch.arange(6))
    for got, want in zip(ref.grads(out.loss, e, z), ref.grads(sog.loss, e, z)):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)
    same_e = torch.nn.functional.normalize(torch.ones(4, 3, dtype=torch.float64), dim=1)
    flat = build_loss("hybrid", 4, tau_init=0.01).double()(same_e, same_e.clone(), torch.arange(4))
    assert flat.stats["tau_img"].item() == pytest.approx(0.01, abs=1e-12)  # std 0 gives τ₀


def hyb_reference(e, z, tau0):
    """HYB's recipe (docs/losses.md §8) at epoch 0 (s = ĝ) without chunking."""
    s = e @ z.T
    tau_t = tau0 * (1 + torch.tanh(s.detach().std()))
    d = s / tau_t
    b = e.shape[0]
    d_i = (d - d.diagonal()[:, None]).clamp(-1e3, 1e3)
    d_t = (d - d.diagonal()[None, :]).clamp(-1e3, 1e3)
    with torch.no_grad():
        e_i, e_t = d_i.exp().clamp(max=1e3), d_t.exp().clamp(max=1e3)
        w_i = e_i / (e_i.sum(1, keepdim=True) / (b - 1) + 1e-8)
        w_t = e_t / (e_t.sum(0, keepdim=True) / (b - 1) + 1e-8)
        a = torch.softmax((e - e.mean(0)).norm(dim=1), 0)
        c = torch.softmax((z - z.mean(0)).norm(dim=1), 0)
    base = 0.5 * ((w_i * d_i).mean() + (w_t * d_t).mean())
    cov = e.var(0).mean() + z.var(0).mean()
    diff = -(d * a[:, None] * c[None, :]).mean()
    return base + 0.1 * cov + 0.1 * diff, base


@pytest.mark.parametrize("tau0", [0.5, 0.004])  # 0.5: |d| ≤ 4, no cap; 0.004: exp() hits the 1e3 cap
def test_hybrid_parity_mode_matches_reference(ref, tau0):
    e, z = ref.unit(6, 5, seed=9)
    out = build_loss("hybrid", 6, tau_init=tau0, hybrid_parity=True).double()(e, z, torch.arange(6))
    want, _ = hyb_reference(e, z, tau0)
    torch.testing.assert_close(out.loss, want, rtol=1e-6, atol=1e-9)
    for got, exp in zip(ref.grads(out.loss, e, z), ref.grads(want, e, z)):
        torch.testing.assert_close(got, exp, rtol=1e-6, atol=1e-9)
    if tau0 == 0.5:  # no cap active: Base gradient = ((B−1)/B)·∇CLIP(τ_t)
        tau_t = float(out.stats["tau_img"])
        _, base = hyb_reference(e, z, tau0)
        for got, exp in zip(ref.grads(base, e, z), ref.grads(5 / 6 * ref.clip(e, z, tau_t), e, z)):
            torch.testing.assert_close(got, exp, rtol=1e-6, atol=1e-9)


def test_hybrid_parity_aliases_ids_onto_8192_slots(ref):
    e, z = ref.unit(4, 5, seed=10)
    loss = build_loss("hybrid", 10_000, hybrid_parity=True).double()
    loss(e, z, torch.tensor([9000, 5, 8191, 9999]))
    plain = build_loss("hybrid", 10_000, hybrid_parity=True).double()
    plain(e, z, torch.tensor([0, 1, 2, 3]))
    assert torch.isneginf(loss.log_u_img[[9000, 9999]]).all()
    assert torch.equal(loss.log_u_img[8191], plain.log_u_img[3]) and torch.equal(loss.log_u_img[5], plain.log_u_img[1])


def test_hybrid_vicreg_terms(ref):
    e, z = ref.unit(8, 4, seed=11)
    ids = torch.arange(8)
    plain = build_loss("hybrid", 8).double()(e, z, ids).loss
    reg = build_loss("hybrid", 8, cov_coeff=0.3, std_coeff=2.0).double()(e, z, ids).loss

    def cov_pen(x):
        c = torch.cov(x.T)
        return (c.square().sum() - c.diagonal().square().sum()) / x.shape[1]
    hinge = sum(torch.relu(0.5 - torch.sqrt(x.var(0) + 1e-4)).mean() for x in (e, z))  # target 1/√d
    torch.testing.assert_close(reg - plain, 0.3 * (cov_pen(e) + cov_pen(z)) + 2.0 * hinge, rtol=1e-10, atol=1e-12)


def test_individual_tau_with_alpha_zero_is_isogclr_step_by_step(ref):
    """InfoSogCLR's individual τ (docs/losses.md §7) with α = 0 is iSogCLR (constant η): same gradients and per-sample ℓ, τ, m after every step."""
    tau_flags = {"tau_init": 0.02, "rho_I": 5.0, "rho_T": 4.0, "eta_init": 0.01, "beta_u": 0.8}
    mine = build_loss("sogclr_mine", 8, individual_tau=True, sogclr_gamma=0.7, **tau_flags, **NO_REG).double()
    isog = build_loss("isogclr", 8, sogclr_gamma=0.7, **tau_flags).double()
    for step, ids in enumerate(([0, 5, 2, 7, 1], [5, 3, 0, 6, 4], [1, 2, 5, 7, 0])):
        e, z = ref.unit(5, 4, seed=10 + step)
        a, b = mine(e, z, torch.tensor(ids)), isog(e, z, torch.tensor(ids))
        for got, want in zip(ref.grads(a.loss, e, z), ref.grads(b.loss, e, z)):
            torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-14)
        for name in ("log_u_img", "log_u_txt", "tau_img", "tau_txt", "m_img", "m_txt"):
            torch.testing.assert_close(getattr(mine, name), getattr(isog, name), rtol=1e-12, atol=1e-14, msg=name)
    assert not torch.equal(mine.tau_img, torch.full_like(mine.tau_img, 0.02))  # τ moved


def test_individual_tau_step_follows_the_alpha_objective_derivative(ref):
    """First visit (ℓ = log g_α, m = 0): τ_new = τ − η·β_u·clip(G) with G = d/dτ[τ·log g_α(τ) + ρτ]."""
    alpha, tau0, rho, eta, beta_u, eps = 0.3, 0.03, 0.2, 1e-3, 0.9, 1e-7
    loss = build_loss("infosogclr", 6, individual_tau=True, info_alpha=str(alpha), tau_init=tau0, rho=rho,
                      eta_init=eta, beta_u=beta_u, **NO_REG).double()
    e, z = ref.unit(6, 5, seed=21)
    out = loss(e, z, torch.arange(6))
    for side in ("img", "txt"):
        h = ref.diff(e, z)[side].detach()

        def f(t, h=h):
            return t * ref.log_g(h, t, alpha) + rho * t
        g = ((f(tau0 + eps) - f(tau0 - eps)) / (2 * eps)).clamp(-5.0, 5.0)
        torch.testing.assert_close(getattr(loss, f"m_{side}"), beta_u * g, rtol=1e-5, atol=1e-8)
        torch.testing.assert_close(getattr(loss, f"tau_{side}"), tau0 - eta * beta_u * g, rtol=1e-6, atol=1e-9)
        assert out.stats[f"tau_{side}"].item() == pytest.approx(tau0)  # this step used the old τ


def test_individual_tau_flags_warn_only_without_the_switch():
    from cli.options import parse_args
    _, notes = parse_args(["--ita_type", "sogclr_mine", "--rho_init", "6.0"])
    assert "--rho_init is not used by --ita_type sogclr_mine without --individual_tau" in notes
    _, notes = parse_args(["--ita_type", "sogclr_mine", "--rho_init", "6.0", "--individual_tau"])
    assert not any("rho_init" in note for note in notes)
