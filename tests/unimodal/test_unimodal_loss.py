"""Unimodal SogCLR / NT-Xent against their closed forms (docs/losses.md §13, §2)."""
from __future__ import annotations

import math

import pytest
import torch

from models.gcl.unimodal import NTXentLoss, UnimodalSogCLRLoss, build_unimodal_loss
from unimodal_reference import nt_xent, sogclr_closed_form, sogclr_linearised, two_views, negatives, g_hat

N, D, T = 6, 5, 0.1


def _grads(loss: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.autograd.grad(loss, (a, b))


@pytest.mark.parametrize("gamma", [1.0, 0.3])
def test_first_visit_gradient_equals_closed_form(gamma):
    """First visit: u = ĝ whatever γ, so ∇ surrogate = ∇ mean_i Σ_v [T·log ĝ^v_i − l_pos_i]."""
    loss_fn = UnimodalSogCLRLoss(N, temp=T, gamma=gamma).double()
    a, b = two_views(N, D, seed=1)
    got = _grads(loss_fn(a, b, torch.arange(N)).loss, a, b)
    want = _grads(sogclr_closed_form(a, b, T), a, b)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)
    assert got[0].abs().max() > 1e-3


def test_gamma_one_gradient_equals_closed_form_on_later_visits():
    """γ = 1 forgets the old estimate: on a second visit with new features the closed form holds again."""
    loss_fn = UnimodalSogCLRLoss(N, temp=T, gamma=1.0).double()
    loss_fn(*two_views(N, D, seed=2), torch.arange(N))
    a, b = two_views(N, D, seed=3)
    got = _grads(loss_fn(a, b, torch.arange(N)).loss, a, b)
    want = _grads(sogclr_closed_form(a, b, T), a, b)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)


def test_moving_average_recursion_over_steps():
    """Each view: u^v = ĝ^v on the first visit, else (1−γ)·u + γ·ĝ^v from the same old u; stored (u^a+u^b)/2.

    The gradient of every step is that of mean_i Σ_v [(T/u^v_i)·ĝ^v_i − l_pos_i] with the new u^v fixed.
    """
    gamma, num_samples = 0.3, 10
    loss_fn = UnimodalSogCLRLoss(num_samples, temp=T, gamma=gamma).double()
    stored = torch.full((num_samples,), math.nan, dtype=torch.float64)
    batches = [torch.tensor([0, 1, 2, 3, 4, 5]), torch.tensor([3, 4, 5, 6, 7, 8]), torch.tensor([8, 0, 3, 9, 1, 5]),
               torch.tensor([0, 1, 2, 3, 4, 5])]
    for step, ids in enumerate(batches):
        a, b = two_views(N, D, seed=10 + step)
        with torch.no_grad():
            neg_a, neg_b = negatives(a, b)
            ga, gb = g_hat(neg_a, T), g_hat(neg_b, T)
            old = stored[ids]
            first = torch.isnan(old)
            u_a = torch.where(first, ga, (1 - gamma) * old + gamma * ga)
            u_b = torch.where(first, gb, (1 - gamma) * old + gamma * gb)
            stored[ids] = (u_a + u_b) / 2
        got = _grads(loss_fn(a, b, ids).loss, a, b)
        want = _grads(sogclr_linearised(a, b, T, u_a, u_b), a, b)
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12, msg=lambda m: f"step {step}: {m}")
        seen = ~torch.isnan(stored)
        torch.testing.assert_close(loss_fn.log_u[seen].exp(), stored[seen], rtol=1e-12, atol=0.0)
        assert torch.isneginf(loss_fn.log_u[~seen]).all()
    # the last step revisits every id, so the stored value really mixes old and new estimates
    assert not first.any()
    assert ((stored[ids] - (ga + gb) / 2).abs() > 1e-3 * stored[ids]).all()


def test_state_is_in_raw_cosine_units():
    """u estimates E_neg exp(l/T) itself (SOG1), not exp((l − l_pos)/T): shifting l_pos changes no state."""
    loss_fn = UnimodalSogCLRLoss(N, temp=T, gamma=0.5).double()
    a, b = two_views(N, D, seed=4)
    loss_fn(a, b, torch.arange(N))
    neg_a, neg_b = negatives(a.detach(), b.detach())
    want = ((g_hat(neg_a, T) + g_hat(neg_b, T)) / 2).log()
    torch.testing.assert_close(loss_fn.log_u, want, rtol=1e-12, atol=1e-12)


def test_simclr_matches_nt_xent():
    a, b = two_views(N, D, seed=5)
    out = NTXentLoss(temp=T)(a, b, torch.arange(N))
    want = nt_xent(a, b, T)
    torch.testing.assert_close(out.loss, want, rtol=1e-12, atol=1e-12)
    for g, w in zip(_grads(out.loss, a, b), _grads(want, a, b)):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)


def test_state_survives_state_dict_round_trip():
    """The per-image state is a buffer: saved by state_dict and restored by load_state_dict."""
    src = UnimodalSogCLRLoss(N, temp=T, gamma=0.9).double()
    src(*two_views(N, D, seed=6), torch.arange(N))
    dst = UnimodalSogCLRLoss(N, temp=T, gamma=0.9).double()
    dst.load_state_dict(src.state_dict())
    assert torch.equal(dst.log_u, src.log_u) and torch.isfinite(dst.log_u).all()


def test_factory_names_and_errors():
    assert isinstance(build_unimodal_loss("dcl", 4), UnimodalSogCLRLoss)
    assert isinstance(build_unimodal_loss("sogclr", 4), UnimodalSogCLRLoss)
    assert isinstance(build_unimodal_loss("simclr", 4), NTXentLoss)
    assert isinstance(build_unimodal_loss("cl", 4), NTXentLoss)
    with pytest.raises(ValueError, match="loss_type"):
        build_unimodal_loss("moco", 4)
    with pytest.raises(ValueError, match="temperature"):
        build_unimodal_loss("dcl", 4, temp=0.0)
    with pytest.raises(IndexError, match="out of range"):
        UnimodalSogCLRLoss(4)(*two_views(3, D, seed=7), torch.tensor([0, 1, 4]))
