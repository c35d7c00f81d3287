"""State of the distillation objectives (queues, pointer, centre, prior): 3 steps against a hand simulation,
skipped (non-finite) steps, checkpoint round trip, and the teacher side's gradient (docs/losses.md §15)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from models.losses import build_loss

B, D = 8, 16
IDS = torch.arange(B)
UNI = ("compress_1q", "seed", "dino", "protocpc")
BI = ("simreg", "simreg_l1", "simreg_smoothl1", "vicreg", "barlowtwins", "rkd", "compress_2q")


def step_rows(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(50 + step)
    s = F.normalize(torch.randn(B, D, generator=g, dtype=torch.float64), dim=1)
    t = F.normalize(torch.randn(B, D, generator=g, dtype=torch.float64), dim=1)
    return s, t


def make(name: str, size: int = 12, **kw):
    return build_loss(name, B, embed_dim=D, memory_bank_size=size, num_prototypes=size, **kw).double()


@pytest.mark.parametrize("size", [12, 32, 5])  # wraps mid-batch; K/B steps fill it exactly; K < B
def test_queues_are_fifo_over_global_batches(size):
    fn = make("compress_2q", size)
    teacher, student = fn.queue_teacher.clone(), fn.queue_student.clone()
    ptr = 0
    for step in range(3):
        s, t = step_rows(step)
        fn(s, t, IDS)
        for i in range(B):  # hand simulation: one row at a time
            teacher[(ptr + i) % size], student[(ptr + i) % size] = t[i], s[i]
        ptr = (ptr + B) % size
        assert torch.equal(fn.queue_teacher, teacher) and torch.equal(fn.queue_student, student)
        assert int(fn.queue_ptr) == ptr


def test_seed_and_compress_1q_enqueue_only_the_teacher():
    for name, buffer in (("seed", "queue"), ("compress_1q", "queue_teacher")):
        fn = make(name, 16)
        first = getattr(fn, buffer).clone()
        s, t = step_rows(0)
        fn(s, t, IDS)
        assert torch.equal(getattr(fn, buffer)[:B], t) and torch.equal(getattr(fn, buffer)[B:], first[B:])


def test_dino_centre_and_protocpc_prior_follow_their_moving_averages():
    dino, cpc = make("dino", 12), make("protocpc", 12)
    center, prior = torch.zeros(12, dtype=torch.float64), torch.ones(12, dtype=torch.float64)
    for step in range(3):
        s, t = step_rows(step)
        dino_unit = F.normalize(dino.prototypes.detach(), dim=1)
        dino(s, t, IDS)
        center = 0.9 * center + 0.1 * (t @ dino_unit.T).mean(0)
        assert torch.allclose(dino.center, center, atol=1e-12)
        if step == 0:
            assert torch.allclose(dino.center, 0.1 * (t @ dino_unit.T).mean(0), atol=1e-12)
        unit = F.normalize(cpc.prototypes.detach(), dim=1)
        cpc(s, t, IDS)
        mass = torch.softmax(t @ unit.T / 0.04, 1).sum(0)
        prior = 0.9 * prior + 0.1 * 12 * mass / mass.sum()
        assert torch.allclose(cpc.prior, prior, atol=1e-12)
        assert cpc.prior.sum().item() == pytest.approx(12.0)


@pytest.mark.parametrize("name", ["compress_2q", "seed", "dino", "protocpc"])
def test_non_finite_step_leaves_the_state_unchanged(name):
    fn = make(name)
    s, t = step_rows(0)
    fn(s, t, IDS)
    before = {k: v.clone() for k, v in fn.state_dict().items()}
    s, t = step_rows(1)
    s[0, 0] = float("nan")
    assert not torch.isfinite(fn(s, t, IDS).loss)
    for key, value in fn.state_dict().items():
        assert torch.equal(value, before[key]), key


@pytest.mark.parametrize("name", ["compress_1q", "compress_2q", "seed", "dino", "protocpc"])
def test_checkpoint_round_trip_continues_identically(name):
    fn = make(name)
    for step in range(2):
        fn(*step_rows(step), IDS)
    restored = make(name)
    restored.load_state_dict(fn.state_dict())
    s, t = step_rows(2)
    assert torch.equal(fn(s, t, IDS).loss, restored(s, t, IDS).loss)
    for key, value in fn.state_dict().items():
        assert torch.equal(restored.state_dict()[key], value), key


def _grads(name: str, teacher: str) -> tuple[torch.Tensor, torch.Tensor]:
    s, t = step_rows(3)
    img, txt = (s, t) if teacher == "text" else (t, s)
    img, txt = img.clone().requires_grad_(), txt.clone().requires_grad_()
    fn = make(name, teacher=teacher)
    fn(img, txt, IDS)  # fill the queues with something other than their initial values
    fn(img, txt, IDS).loss.backward()
    zero = torch.zeros(B, D, dtype=torch.float64)
    return (img.grad if img.grad is not None else zero), (txt.grad if txt.grad is not None else zero)


@pytest.mark.parametrize("teacher", ["text", "image"])
@pytest.mark.parametrize("name", UNI)
def test_uni_directional_objectives_send_no_gradient_to_the_teacher(name, teacher):
    g_img, g_txt = _grads(name, teacher)
    g_teacher, g_student = (g_txt, g_img) if teacher == "text" else (g_img, g_txt)
    assert torch.count_nonzero(g_teacher) == 0
    assert g_student.abs().max() > 1e-6


@pytest.mark.parametrize("name", BI)
def test_bi_directional_objectives_train_both_towers(name):
    g_img, g_txt = _grads(name, "text")
    assert g_img.abs().max() > 1e-6 and g_txt.abs().max() > 1e-6


def test_teacher_flag_swaps_the_sides():
    s, t = step_rows(4)
    torch.manual_seed(1)
    text_teacher = make("compress_1q")(s, t, IDS).loss
    torch.manual_seed(1)
    image_teacher = make("compress_1q", teacher="image")(t, s, IDS).loss
    assert torch.equal(text_teacher, image_teacher)
    with pytest.raises(ValueError, match="--teacher"):
        make("dino", teacher="audio")


def test_state_width_mismatch_names_the_flag():
    fn = build_loss("seed", B, embed_dim=D + 1, memory_bank_size=12)
    with pytest.raises(ValueError, match="--embed_dim"):
        fn(*(x.float() for x in step_rows(0)), IDS)
