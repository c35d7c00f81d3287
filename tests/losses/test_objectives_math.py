"""Each distillation objective (docs/losses.md §15) against an independent float64 formula (B = 8, d = 16, K = 32),
plus its sanity property."""
from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from models.losses import build_loss

B, D, K = 8, 16, 32
IDS = torch.arange(B)
SMALL = {"embed_dim": D, "memory_bank_size": K, "num_prototypes": K}


def rows(seed: int, n: int = B, d: int = D) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=1)


def loss_of(name: str, s: torch.Tensor, t: torch.Tensor, **kw) -> torch.Tensor:
    """The loss with teacher = text: image features are the student s, text features the teacher t."""
    fn = build_loss(name, B, **{**SMALL, **kw}).double()
    return fn(s, t, IDS).loss


def psi(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x.abs() < 1, 0.5 * x * x, x.abs() - 0.5)


# ---- SimReg family -------------------------------------------------------------------------------------------

def test_simreg_family_matches_formulas():
    s, t = rows(1), rows(2)
    u = t - s
    assert torch.allclose(loss_of("simreg", s, t), (2 - 2 * (t * s).sum(1)).sum() / (B * D), atol=1e-12)
    assert torch.allclose(loss_of("simreg_l1", s, t), u.abs().sum() / (B * D), atol=1e-12)
    assert torch.allclose(loss_of("simreg_smoothl1", s, t), psi(u).sum() / (B * D), atol=1e-12)


def test_simreg_sanity():
    t = rows(3)
    assert loss_of("simreg", t, t).item() == 0.0
    eye = torch.eye(D, dtype=torch.float64)
    assert loss_of("simreg", eye[:B], eye[B:2 * B]).item() == pytest.approx(2 / D)
    s, t = rows(4), rows(5)  # unit vectors in 16-d: every |u_ij| < 1 here
    assert (t - s).abs().max() < 1
    assert loss_of("simreg_smoothl1", s, t).item() == pytest.approx(loss_of("simreg", s, t).item() / 2)


# ---- VICReg -------------------------------------------------------------------------------------------------

def vicreg_reference(x: torch.Tensor, y: torch.Tensor, sim=25.0, std=25.0, cov=1.0) -> torch.Tensor:
    inv = sum(((x[i] - y[i]) ** 2).sum() for i in range(B)) / (B * D)
    std_term, cov_term = 0.0, 0.0
    for z in (x, y):
        sigma = torch.sqrt(z.var(dim=0, unbiased=True) + 1e-4)
        std_term += 0.5 * torch.clamp(1 - sigma, min=0).mean()
        c = torch.cov(z.T)  # unbiased
        cov_term += sum(c[j, k] ** 2 for j in range(D) for k in range(D) if j != k) / D
    return sim * inv + std * std_term + cov * cov_term


def test_vicreg_matches_formula_and_coefficients():
    s, t = rows(6), rows(7)
    assert torch.allclose(loss_of("vicreg", s, t), vicreg_reference(t, s), atol=1e-10)
    got = loss_of("vicreg", s, t, vicreg_sim_coeff=2.0, vicreg_std_coeff=3.0, vicreg_cov_coeff=0.5)
    assert torch.allclose(got, vicreg_reference(t, s, 2.0, 3.0, 0.5), atol=1e-10)


def test_vicreg_sanity_symmetric_and_identical_views():
    s, t = rows(8), rows(9)
    assert torch.allclose(loss_of("vicreg", s, t), loss_of("vicreg", t, s), atol=1e-12)
    sigma = torch.sqrt(t.var(dim=0) + 1e-4)
    c = torch.cov(t.T)
    off = c.pow(2).sum() - c.diagonal().pow(2).sum()
    want = 25 * torch.clamp(1 - sigma, min=0).mean() + 2 / D * off
    assert torch.allclose(loss_of("vicreg", t, t), want, atol=1e-12)


# ---- Barlow Twins -------------------------------------------------------------------------------------------

def barlow_reference(x: torch.Tensor, y: torch.Tensor, lam: float = 0.0051, norm: str = "standard") -> torch.Tensor:
    if norm == "standard":
        xs = (x - x.mean(0)) / x.std(0, unbiased=False)
        ys = (y - y.mean(0)) / y.std(0, unbiased=False)
    else:
        xs, ys = x / x.norm(dim=0), y / y.norm(dim=0)
    c = torch.einsum("bi,bj->ij", xs, ys) / B
    on = sum((1 - c[j, j]) ** 2 for j in range(D))
    off = sum(c[j, k] ** 2 for j in range(D) for k in range(D) if j != k)
    return on + lam * off


@pytest.mark.parametrize("norm", ["standard", "itra"])
def test_barlowtwins_matches_formula(norm):
    s, t = rows(10), rows(11)
    got = loss_of("barlowtwins", s, t, bt_norm=norm, bt_lambda=0.01)
    assert torch.allclose(got, barlow_reference(t, s, 0.01, norm), atol=1e-10)


def test_barlowtwins_sanity():
    s, t = rows(12), rows(13)
    assert torch.allclose(loss_of("barlowtwins", s, t), loss_of("barlowtwins", t, s), atol=1e-12)
    scale = torch.rand(D, dtype=torch.float64) + 0.5
    shift = torch.randn(D, dtype=torch.float64)
    assert torch.allclose(loss_of("barlowtwins", s * scale + shift, t), loss_of("barlowtwins", s, t), atol=1e-10)
    fn = build_loss("barlowtwins", B).double()
    assert fn(t, t, IDS).stats["bt_on_diag"].item() == pytest.approx(0.0, abs=1e-12)
    itra = build_loss("barlowtwins", B, bt_norm="itra").double()
    assert itra(t, t, IDS).stats["bt_on_diag"].item() > D * (1 - 1 / B) ** 2 - 1e-9  # the source's quirk: ≈ d


# ---- RKD ----------------------------------------------------------------------------------------------------

def rkd_reference(x: torch.Tensor, y: torch.Tensor, w_d: float, w_a: float) -> torch.Tensor:
    def dist(z):
        d = torch.cdist(z, z)
        return d / d[~torch.eye(B, dtype=torch.bool)].mean()

    l_d = psi(dist(y) - dist(x)).sum() / B ** 2

    def angle(z, a, b, c):
        if a == b or a == c:
            return torch.zeros((), dtype=z.dtype)
        e1, e2 = z[b] - z[a], z[c] - z[a]
        return (e1 / e1.norm()) @ (e2 / e2.norm())

    l_a = sum(psi(angle(y, a, b, c) - angle(x, a, b, c)) for a, b, c in itertools.product(range(B), repeat=3))
    return w_d * l_d + w_a * l_a / B ** 3


def test_rkd_matches_formula():
    s, t = rows(14), rows(15)
    assert torch.allclose(loss_of("rkd", s, t), rkd_reference(t, s, 0.5, 1.0), atol=1e-10)
    assert torch.allclose(loss_of("rkd", s, t, w_rkd_a=0.0), rkd_reference(t, s, 0.5, 0.0), atol=1e-10)
    fn = build_loss("rkd", B, w_rkd_d=0.0).double()
    assert set(fn(s, t, IDS).stats) == {"objective", "rkd_angle"}  # a zero-weight term is not computed


def test_rkd_chunked_angle_equals_one_chunk(monkeypatch):
    from models.objectives import rkd
    s, t = rows(16), rows(17)
    whole = loss_of("rkd", s, t)
    monkeypatch.setattr(rkd, "ANGLE_CHUNK_ELEMENTS", 3 * B * D)  # chunks of 3 anchors (last one 2)
    assert torch.allclose(loss_of("rkd", s, t), whole, atol=1e-12)


def test_rkd_sanity_rotation_and_symmetry():
    t = rows(18)
    q, _ = torch.linalg.qr(torch.randn(D, D, dtype=torch.float64, generator=torch.Generator().manual_seed(0)))
    assert loss_of("rkd", t @ q.T, t).item() == pytest.approx(0.0, abs=1e-10)
    s = rows(19)
    assert torch.allclose(loss_of("rkd", s, t), loss_of("rkd", t, s), atol=1e-12)


# ---- CompRess -----------------------------------------------------------------------------------------------

def kl_rows(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    return (p * (p.log() - q.log())).sum(1).mean()


def test_compress_matches_formula():
    s, t = rows(20), rows(21)
    for name in ("compress_1q", "compress_2q"):
        fn = build_loss(name, B, **SMALL).double()
        m_t = fn.queue_teacher.clone()
        m_s = fn.queue_student.clone() if name == "compress_2q" else m_t
        p_t = torch.softmax(t @ m_t.T / 0.04, dim=1)
        p_s = torch.softmax(s @ m_s.T / 0.04, dim=1)
        assert torch.allclose(fn(s, t, IDS).loss, kl_rows(p_t, p_s), atol=1e-9), name
        bound = math.sqrt(3 / D)
        assert m_t.abs().max() <= bound and m_t.abs().max() > 0.5 * bound  # U(−√(3/d), √(3/d))


def test_compress_sanity():
    t = rows(22)
    assert loss_of("compress_1q", t, t).item() == pytest.approx(0.0, abs=1e-12)
    fn = build_loss("compress_2q", B, **SMALL).double()
    fn.queue_student = fn.queue_teacher.clone()
    assert fn(t, t, IDS).loss.item() == pytest.approx(0.0, abs=1e-12)


# ---- SEED ---------------------------------------------------------------------------------------------------

def test_seed_matches_formula():
    s, t = rows(23), rows(24)
    fn = build_loss("seed", B, **SMALL, distill_teacher_temp=0.05).double()
    q = fn.queue.clone()
    assert torch.allclose(q.norm(dim=1), torch.ones(K, dtype=torch.float64))
    z_s = torch.cat([(s * t).sum(1, keepdim=True), s @ q.T], 1) / 0.07
    z_t = torch.cat([torch.ones(B, 1, dtype=torch.float64), t @ q.T], 1) / 0.05
    want = -(torch.softmax(z_t, 1) * torch.log_softmax(z_s, 1)).sum(1).mean()
    assert torch.allclose(fn(s, t, IDS).loss, want, atol=1e-10)


def test_seed_sanity_one_hot_target():
    t = rows(25)
    fn = build_loss("seed", B, **SMALL).double()
    sims = t @ fn.queue.T
    assert sims.max() <= 0.99
    want = torch.log1p(torch.exp((sims - 1) / 0.07).sum(1)).mean()
    assert torch.allclose(fn(t, t, IDS).loss, want, atol=1e-10)


# ---- DINO and ProtoCPC --------------------------------------------------------------------------------------

def test_dino_matches_formula_and_entropy_bound():
    s, t = rows(26), rows(27)
    fn = build_loss("dino", B, **SMALL).double()
    fn.center = torch.randn(K, dtype=torch.float64) * 0.1
    p_hat = fn.prototypes.detach() / fn.prototypes.detach().norm(dim=1, keepdim=True)
    a_t, a_s = t @ p_hat.T, s @ p_hat.T
    q = torch.softmax((a_t - fn.center) / 0.04, 1)
    want = -(q * torch.log_softmax(a_s / 0.1, 1)).sum(1).mean()
    out = fn(s, t, IDS)
    assert torch.allclose(out.loss, want, atol=1e-10)
    entropy = -(q * q.log()).sum(1).mean()
    assert torch.allclose(out.stats["teacher_entropy"], entropy, atol=1e-10)
    assert out.loss >= entropy  # CE ≥ H(q), equality iff the student's softmax equals q


def test_protocpc_matches_formula_and_equals_dino_with_flat_prior():
    s, t = rows(28), rows(29)
    fn = build_loss("protocpc", B, **SMALL).double()
    prior = torch.rand(K, dtype=torch.float64) + 0.5
    fn.prior = prior.clone()
    p_hat = fn.prototypes.detach() / fn.prototypes.detach().norm(dim=1, keepdim=True)
    a_t, a_s = t @ p_hat.T, s @ p_hat.T
    q = torch.softmax(a_t / 0.04, 1)
    want = (-(q * a_s / 0.1).sum(1) + torch.log((prior * torch.exp(a_s / 0.1)).sum(1))).mean()
    assert torch.allclose(fn(s, t, IDS).loss, want, atol=1e-10)
    torch.manual_seed(5)
    flat = build_loss("protocpc", B, **SMALL).double()
    torch.manual_seed(5)
    dino = build_loss("dino", B, **SMALL).double()
    assert torch.allclose(flat(s, t, IDS).loss, dino(s, t, IDS).loss, atol=1e-12)


def test_temperatures_follow_the_flags():
    s, t = rows(30), rows(31)
    torch.manual_seed(0)
    a = build_loss("dino", B, **SMALL, distill_student_temp=0.2, distill_teacher_temp=0.07).double()(s, t, IDS)
    torch.manual_seed(0)
    b = build_loss("dino", B, **SMALL).double()(s, t, IDS)
    assert not torch.allclose(a.loss, b.loss)
