"""Shared GCL core: MA recursion, log-domain vs (s, β), extreme logits, ids, duplicates, state, schedules."""
from __future__ import annotations

import io
import math

import pytest
import torch

from models.gcl.estimator import Normaliser, gcl_direction
from models.gcl.schedules import eta_at, gamma_at
from models.gcl.state import resolve_duplicates
from models.losses import DISTILL_TYPES, ITA_TYPES, build_loss

STATEFUL = [n for n in ITA_TYPES if n not in ("clip", "siglip", *DISTILL_TYPES)]  # objectives: test_objectives_*
SMALL = {"embed_dim": 6, "tempnet_protos": 4, "tempnet_dropout": 0.0}


def sogclr(n: int = 20, **kw) -> torch.nn.Module:
    return build_loss("sogclr", n, **kw).double()


# --- moving-average recursion (docs/losses.md §2) --------------------------------------------------------------

@pytest.mark.parametrize("gamma", [0.3, 0.8])
def test_constant_features_first_visit_and_zero_init(ref, gamma):
    e, z = ref.unit(5, 4, seed=1)
    ids = torch.tensor([4, 0, 9, 2, 7])
    g = {s: ref.log_g(h.detach(), 0.1).exp() for s, h in ref.diff(e, z).items()}
    first, zero = sogclr(temp=0.1, sogclr_gamma=gamma), sogclr(temp=0.1, sogclr_gamma=gamma, state_init="zero")
    for k in range(1, 4):
        first(e, z, ids), zero(e, z, ids)
        for s in ("img", "txt"):
            torch.testing.assert_close(getattr(first, f"log_u_{s}")[ids].exp(), g[s], rtol=1e-6, atol=0)
            expected = (1 - (1 - gamma) ** k) * g[s]
            torch.testing.assert_close(getattr(zero, f"log_u_{s}")[ids].exp(), expected, rtol=1e-6, atol=0)
    untouched = torch.ones(20, dtype=torch.bool)
    untouched[ids] = False
    assert torch.isneginf(first.log_u_img[untouched]).all()


def test_moving_average_with_changing_features_and_epoch0(ref):
    ids = torch.arange(6)
    batches = [ref.unit(6, 5, seed=s) for s in (2, 3, 4)]
    g = [ref.log_g(ref.diff(e, z)["img"].detach(), 0.2).exp() for e, z in batches]
    first, ep0 = sogclr(temp=0.2, sogclr_gamma=0.6), sogclr(temp=0.2, sogclr_gamma=0.6, state_init="epoch0")
    for step, (e, z) in enumerate(batches):
        epoch = 0 if step < 2 else 1
        first.set_epoch(epoch, 3), ep0.set_epoch(epoch, 3)
        first(e, z, ids), ep0(e, z, ids)
    u_first = 0.4 * (0.4 * g[0] + 0.6 * g[1]) + 0.6 * g[2]
    u_ep0 = 0.4 * g[1] + 0.6 * g[2]  # epoch 0 keeps only the latest ĝ; averaging from epoch 1
    torch.testing.assert_close(first.log_u_img[ids].exp(), u_first, rtol=1e-6, atol=0)
    torch.testing.assert_close(ep0.log_u_img[ids].exp(), u_ep0, rtol=1e-6, atol=0)


# --- log domain (docs/losses.md §2) vs the reference (s, β) pair and β-shift invariance ------------------------

def pair_step(h, tau, s, beta, gamma):
    """The reference stabilised update, negatives only, with ISOG-style zero init."""
    b = h.shape[0]
    x = (h / tau).masked_fill(torch.eye(b, dtype=torch.bool), -math.inf)
    new_beta = torch.maximum(beta, x.max(1).values)
    e = torch.exp(x - new_beta[:, None])
    s = (1 - gamma) * s * torch.exp(beta - new_beta) + gamma * e.sum(1) / (b - 1)
    return s, new_beta, e / s[:, None]


@pytest.mark.parametrize("shift", [0.0, 7.5])
def test_log_domain_equals_pair_form_and_beta_shift(ref, shift):
    tau, gamma, ids = 0.05, 0.7, torch.arange(5)
    loss = sogclr(temp=tau, sogclr_gamma=gamma, state_init="zero")
    zeros = torch.zeros(5, dtype=torch.float64)
    pair = {"img": (zeros, zeros), "txt": (zeros, zeros)}
    for step in range(3):
        e, z = ref.unit(5, 4, seed=10 + step)
        h = ref.diff(e, z)
        expected = 0.0
        for side, (s, beta) in pair.items():
            if step == 1:  # the same u represented with a β shifted by a constant
                s, beta = s * math.exp(-shift), beta + shift
            s, beta, w = pair_step(h[side].detach(), tau, s, beta, gamma)
            pair[side] = (s, beta)
            expected = expected + (w * h[side]).sum(1).mean() / 4
        out = loss(e, z, ids)
        for got, want in zip(ref.grads(out.loss, e, z), ref.grads(expected, e, z)):
            torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)
        for side, (s, beta) in pair.items():
            torch.testing.assert_close(getattr(loss, f"log_u_{side}")[ids], torch.log(s) + beta,
                                       rtol=1e-10, atol=1e-10)


def test_extreme_logits_stay_finite():
    # z_i = −e_i makes the positive the worst candidate: S_ij − S_ii up to 2, x up to 2000 at τ = 0.001
    g = torch.Generator().manual_seed(0)
    e = torch.nn.functional.normalize(torch.randn(8, 3, generator=g), dim=1)
    z = -e.clone()
    ids = torch.arange(8)
    for name, kw in [("sogclr", {"temp": 0.001}), ("sogclr_mine", {"temp": 0.001, "info_alpha": "batch"}),
                     ("isogclr", {"tau_init": 0.005}), ("fastclip_v1", {"temp": 0.001}),
                     ("hybrid", {"tau_init": 0.001})]:
        loss = build_loss(name, 8, **kw)
        for epoch in range(2):
            loss.set_epoch(epoch, 2)
            ei, zi = e.clone().requires_grad_(), z.clone().requires_grad_()
            out = loss(ei, zi, ids)
            out.loss.backward()
            assert torch.isfinite(out.loss) and torch.isfinite(ei.grad).all() and torch.isfinite(zi.grad).all(), name
            assert int(out.stats["nonfinite"]) == 0, name
            assert torch.isfinite(loss.log_u_img).all() and torch.isfinite(loss.log_u_txt).all(), name
    h = (e @ e.T) * -1 - (-1.0)
    d = gcl_direction(h, torch.arange(8), torch.full((8,), 0.001), torch.full((8,), -math.inf),
                      Normaliser.negatives_only(8), 1.0, torch.ones(8, dtype=torch.bool))
    assert torch.isfinite(d.weights).all()
    # (B−1)·ĝ/u with u = ĝ; fp32 spacing at x ≈ 2000 is 1.2e-4, hence the tolerance
    torch.testing.assert_close(d.weights.sum(1), torch.full((8,), 7.0), rtol=1e-3, atol=0)


# --- ids: bounds and duplicates ---------------------------------------------------------------

def test_ids_out_of_range_raise(ref):
    e, z = ref.unit(3, 4, seed=0)
    loss = sogclr(n=10)
    with pytest.raises(IndexError, match=r"pair id 10 .*num_samples=10"):
        loss(e, z, torch.tensor([0, 10, 3]))
    with pytest.raises(IndexError, match=r"pair id -1"):
        loss(e, z, torch.tensor([0, -1, 3]))
    with pytest.raises(TypeError):
        loss(e, z, torch.tensor([0.0, 1.0, 2.0]))
    assert torch.isneginf(loss.log_u_img).all()  # nothing was written


def test_resolve_duplicates_last_occurrence_wins():
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(0, 6, (40,), generator=g)
    values = torch.randn(40, 2, generator=g)
    sorted_ids, rows = resolve_duplicates(ids, values)
    last = {int(i): values[k] for k, i in enumerate(ids)}
    for i, row in zip(sorted_ids.tolist(), rows):
        assert torch.equal(row, last[i])


def test_duplicate_ids_in_a_batch_resolve_to_last(ref):
    e, z = ref.unit(4, 5, seed=5)
    dup = sogclr(n=12)
    dup(e, z, torch.tensor([3, 5, 3, 7]))
    plain = sogclr(n=12)
    plain(e, z, torch.tensor([0, 1, 2, 4]))
    assert torch.equal(dup.log_u_img[3], plain.log_u_img[2]) and not torch.equal(dup.log_u_img[3], plain.log_u_img[0])
    assert torch.equal(dup.log_u_txt[[5, 7]], plain.log_u_txt[[1, 4]])


def test_nonfinite_rows_are_skipped_and_counted(ref):
    e, z = ref.unit(4, 5, seed=6)
    loss = sogclr(n=8)
    loss(e, z, torch.arange(4))
    before = loss.state_dict()
    bad = e.detach().clone()
    bad[1] = float("nan")
    out = loss(bad, z, torch.tensor([0, 1, 2, 3]))
    assert torch.isnan(out.loss)  # never a fake zero loss
    assert int(out.stats["nonfinite"]) == 4 and int(loss.nonfinite_total) == 4
    assert torch.equal(loss.log_u_img, before["log_u_img"]) and torch.equal(loss.log_u_txt, before["log_u_txt"])


# --- state round trip (checkpoint, resume) ------------------------------------------------------

@pytest.mark.parametrize("name", STATEFUL)
def test_state_round_trip_and_bit_identical_resume(ref, name):
    torch.manual_seed(0)
    a = build_loss(name, 10, **SMALL).double()
    steps = [(ref.unit(4, 6, seed=20 + k), torch.tensor([k, 3, 5 + k, 9])) for k in range(3)]
    for k, ((e, z), ids) in enumerate(steps[:2]):
        a.set_epoch(k, 3)
        a(e, z, ids).loss.backward()
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    torch.manual_seed(1)
    b = build_loss(name, 10, **SMALL).double()
    b.load_state_dict(torch.load(buf, weights_only=True))
    (e, z), ids = steps[2]
    outs = []
    for loss in (a, b):
        loss.set_epoch(2, 3)
        ei, zi = e.detach().clone().requires_grad_(), z.detach().clone().requires_grad_()
        out = loss(ei, zi, ids)
        outs.append((out.loss, *ref.grads(out.loss, ei, zi)))
    for x, y in zip(*outs):
        assert torch.equal(x, y)
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key]), key
    assert any(k.startswith("log_u_") for k in a.state_dict())


# --- schedules ----------------------------------------------------------------------------------

def test_gamma_schedule_values():
    values = [gamma_at(e, 0.2, "cosine", 18) for e in (0, 1, 9, 17, 18, 30)]
    assert values[0] == 1.0 and values[4] == values[5] == 0.2
    assert values[1:4] == pytest.approx([0.99392, 0.6, 0.20608], abs=1e-5)
    assert gamma_at(0, 0.8, "constant", 5) == 0.8 and gamma_at(0, 0.8, "constant", 5, one_at_epoch0=True) == 1.0
    assert gamma_at(3, 0.8, "constant", 5, one_at_epoch0=True) == 0.8
    with pytest.raises(ValueError):
        gamma_at(0, 0.8, "linear", 5)


def test_eta_schedule_values():
    assert eta_at(7, 30, 0.03, "const", 1e-4, 0.8) == 0.03
    cosine = [eta_at(e, 30, 0.03, "cosine", 1e-4, 0.8) for e in (0, 15, 29, 30)]
    assert cosine == pytest.approx([0.03, 0.021243, 0.0016649, 1e-4], rel=1e-4)
    assert eta_at(15, 30, 0.03, "cosine", 1e-4, 0.8, cosine_kind="half") == pytest.approx(0.01505)
    assert eta_at(0, 30, 0.03, "exp", 1e-4, 0.8) == pytest.approx(0.03)
    assert eta_at(0, 30, 0.03, "exp", 1e-4, 0.8, exp_parity=True) == pytest.approx(0.0299 / 0.8 + 1e-4)
    assert eta_at(3, 30, 0.03, "exp", 1e-4, 0.8) == pytest.approx(0.0299 * 0.8 ** 3 + 1e-4)
