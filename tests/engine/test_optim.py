"""Learning-rate schedules and optimiser parameter groups."""
import math

import pytest
import torch

from engine.optim import IMAGE_SIDE, LRSchedule, Optimizers, TowerSchedule, create_optimizers
from models.losses import build_loss


def make_optimizer(lr=2e-4):
    return torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=lr)


def apply_at(optimizers, epoch, iteration=0):
    """Set every group's lr for step `iteration` of `epoch` with a 10-step-per-epoch schedule."""
    LRSchedule(optimizers, "step", "cosine", 10, 10, lr_min=0.0, warmup_lr=0.0).apply(epoch, iteration)


def test_legacy_schedule_matches_the_references_worked_example():
    """The references' worked example of the legacy schedule: E=30, W=5, L=2e-4, Lw=1e-5, Lmin=1e-6."""
    opt = make_optimizer()
    schedule = LRSchedule(Optimizers(opt), "legacy", "cosine", epochs=30, steps_per_epoch=1000, lr_min=1e-6,
                          warmup_lr=1e-5, warmup_epochs=5)
    seen = []
    for iteration in range(1000):
        schedule.apply(0, iteration)
        seen.append(opt.param_groups[0]["lr"])
    assert seen[0] == pytest.approx(1e-5) and seen[100] == pytest.approx(1e-5)  # iterations 0..100 at Lw
    for block, expected in enumerate([4.8e-5, 8.6e-5, 1.24e-4, 1.62e-4, 2e-4]):
        assert seen[101 + 100 * block] == pytest.approx(expected), block
    assert seen[999] == pytest.approx(2e-4)
    for epoch in (1, 15, 29):
        schedule.apply(epoch, 500)  # one value per epoch
        expected = 1e-6 + (2e-4 - 1e-6) * (1 + math.cos(math.pi * epoch / 30)) / 2
        assert opt.param_groups[0]["lr"] == pytest.approx(expected, rel=1e-9)
    assert opt.param_groups[0]["lr"] == pytest.approx(1.55e-6, rel=1e-2)


def test_legacy_warmup_is_cut_short_by_a_short_first_epoch():
    opt = make_optimizer()
    schedule = LRSchedule(Optimizers(opt), "legacy", "cosine", 3, steps_per_epoch=150, lr_min=0.0, warmup_lr=1e-5,
                          warmup_epochs=5)
    schedule.apply(0, 149)  # the last step of epoch 0 is still in the second warm-up block
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-5 + (2e-4 - 1e-5) / 5)
    schedule.apply(1, 0)  # jumps onto the cosine
    assert opt.param_groups[0]["lr"] == pytest.approx(2e-4 * (1 + math.cos(math.pi / 3)) / 2)


def test_step_schedule_warms_up_linearly_then_decays_per_iteration():
    opt = make_optimizer()
    schedule = LRSchedule(Optimizers(opt), "step", "cosine", epochs=2, steps_per_epoch=10, lr_min=0.0,
                          warmup_lr=0.0, warmup_steps=5)
    lrs = []
    for epoch in range(2):
        for iteration in range(10):
            schedule.apply(epoch, iteration)
            lrs.append(opt.param_groups[0]["lr"])
    assert lrs[:6] == pytest.approx([0.0, 4e-5, 8e-5, 1.2e-4, 1.6e-4, 2e-4])
    assert all(a > b for a, b in zip(lrs[5:], lrs[6:]))  # strictly decreasing after warm-up
    assert lrs[10] == pytest.approx(2e-4 * (1 + math.cos(math.pi * 5 / 15)) / 2)  # cosine over 15 steps


class _LossWithTemperature(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.log_scale = torch.nn.Parameter(torch.zeros(()))
        self.temp_gen = torch.nn.Linear(2, 2)

    def param_groups(self):
        return [{"params": [self.log_scale], "weight_decay": 0.0, "optimizer": "main"},
                {"params": list(self.temp_gen.parameters()), "weight_decay": 0.0, "optimizer": "own"}]

    def own_lr(self, base_lr, epoch):
        """A rule of this stub only: the engine must apply whatever rule the loss gives."""
        return base_lr / (epoch + 1)


def test_weight_decay_skips_biases_norms_and_loss_parameters():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4))
    loss = _LossWithTemperature()
    optimizers = create_optimizers(model, loss, "adamW", lr=1e-3, weight_decay=0.02, lr_temp_net=3e-5)
    decay_of = {id(p): g["weight_decay"] for g in optimizers.main.param_groups for p in g["params"]}
    assert decay_of[id(model[0].weight)] == 0.02
    assert decay_of[id(model[0].bias)] == 0.0 and decay_of[id(model[1].weight)] == 0.0
    assert decay_of[id(loss.log_scale)] == 0.0
    assert id(loss.temp_gen.weight) not in decay_of
    assert isinstance(optimizers.own, torch.optim.Adam)
    assert optimizers.own.param_groups[0]["lr"] == 3e-5
    apply_at(optimizers, 2, 4)
    assert optimizers.own.param_groups[0]["lr"] == pytest.approx(3e-5 / 3)


def test_tempnet_networks_lr_decays_by_0_9_per_epoch():
    """TempNet's own rule (TempNetLoss.own_lr, docs/losses.md §6) drives its Adam: --lr_temp_net × 0.9^epoch."""
    loss = build_loss("isogclr_tempnet", num_samples=8, embed_dim=4, tempnet_protos=2)
    optimizers = create_optimizers(torch.nn.Linear(3, 4), loss, "adamW", lr=1e-3, weight_decay=0.02, lr_temp_net=3e-5)
    networks = {id(p) for p in loss.parameters()}
    assert {id(p) for g in optimizers.own.param_groups for p in g["params"]} == networks
    for epoch, expected in enumerate([3e-5, 2.7e-5, 2.43e-5, 2.187e-5]):
        apply_at(optimizers, epoch)
        assert [g["lr"] for g in optimizers.own.param_groups] == pytest.approx([expected], rel=1e-12), epoch


def _fastclip(version: int, **hparams):
    return build_loss(f"fastclip_v{version}", num_samples=8, **hparams)


def test_fastclip_v0_tau_group_follows_the_main_schedule_at_lr_tau():
    model = torch.nn.Linear(3, 4)
    loss = _fastclip(0, lr_tau=5e-4)
    optimizers = create_optimizers(model, loss, "adamW", lr=1e-3, weight_decay=0.1)
    schedule = LRSchedule(optimizers, "step", "cosine", epochs=2, steps_per_epoch=10, lr_min=0.0,
                          warmup_lr=0.0, warmup_steps=4)
    tau_group = next(g for g in optimizers.main.param_groups if any(p is loss.logit_scale for p in g["params"]))
    model_group = next(g for g in optimizers.main.param_groups if any(p is model.weight for p in g["params"]))
    assert optimizers.own is None and tau_group["weight_decay"] == 0.0
    for step in range(1, 20):
        schedule.apply(*divmod(step, 10))
        assert tau_group["lr"] == pytest.approx(model_group["lr"] / 2), step  # same warm-up and cosine, half
    default = create_optimizers(model, _fastclip(0), "adamW", lr=1e-3, weight_decay=0.1)
    assert next(g for g in default.main.param_groups if g["params"][0].dim() == 0)["lr"] == 1e-3


def test_fastclip_v3_tau_has_its_own_adam_at_lr_tau_divided_by_3_below_the_threshold():
    model = torch.nn.Linear(3, 4)
    loss = _fastclip(3)
    optimizers = create_optimizers(model, loss, "adamW", lr=1e-3, weight_decay=0.1)
    assert all(loss.logit_scale is not p for g in optimizers.main.param_groups for p in g["params"])
    assert optimizers.own.param_groups[0]["params"] == [loss.logit_scale]
    apply_at(optimizers, 0)
    assert optimizers.own.param_groups[0]["lr"] == 2e-4  # τ = 0.07 > 0.03
    with torch.no_grad():
        loss.logit_scale.fill_(math.log(1 / 0.025))
    apply_at(optimizers, 0, 7)  # checked before every step, as the reference does
    assert optimizers.own.param_groups[0]["lr"] == pytest.approx(2e-4 / 3)
    assert create_optimizers(model, _fastclip(3, lr_tau=1e-4), "adamW", 1e-3, 0.1).own.param_groups[0]["lr"] == 1e-4


@pytest.mark.parametrize("mode, warmup", [("legacy", {"warmup_epochs": 2}), ("legacy", {"warmup_epochs": 0}),
                                          ("step", {"warmup_steps": 130})])
def test_a_resumed_run_gets_the_lr_of_an_uninterrupted_run(mode, warmup):
    """A fresh schedule (a resumed run) sets, from the position alone, the lr that the uninterrupted run,
    which applied every step before, has at that step."""
    steps, epochs = 250, 3
    replayed = make_optimizer()
    schedule = LRSchedule(Optimizers(replayed), mode, "cosine", epochs, steps, lr_min=1e-6, warmup_lr=1e-5, **warmup)
    expected = {}
    for epoch in range(epochs):
        for iteration in range(steps):
            schedule.apply(epoch, iteration)
            expected[epoch, iteration] = replayed.param_groups[0]["lr"]
    assert len(set(expected.values())) >= epochs  # the schedule moves
    for epoch, iteration in [(0, 0), (0, 1), (0, 100), (0, 101), (0, 201), (0, 249), (1, 0), (1, 7), (2, 249)]:
        fresh = make_optimizer()
        LRSchedule(Optimizers(fresh), mode, "cosine", epochs, steps, lr_min=1e-6, warmup_lr=1e-5,
                   **warmup).apply(epoch, iteration)
        assert fresh.param_groups[0]["lr"] == pytest.approx(expected[epoch, iteration], rel=1e-12), (epoch, iteration)


@pytest.mark.parametrize("version, scheduler, target, lr_at_epoch_3", [
    (0, "const", "own", 1e-4), (3, "cosine", "main", None), (3, "const", "own", 1e-4)])
def test_fastclip_lr_tau_scheduler_routes_theta(version, scheduler, target, lr_at_epoch_3):
    model = torch.nn.Linear(3, 4)
    loss = _fastclip(version, lr_tau=1e-4, lr_tau_scheduler=scheduler)
    with torch.no_grad():
        loss.logit_scale.fill_(math.log(1 / 0.02))  # below step_thresh's threshold: const must not divide
    optimizers = create_optimizers(model, loss, "adamW", lr=1e-3, weight_decay=0.1)
    in_main = any(p is loss.logit_scale for g in optimizers.main.param_groups for p in g["params"])
    assert in_main == (target == "main") and (optimizers.own is None) == (target == "main")
    if lr_at_epoch_3 is not None:
        apply_at(optimizers, 3)
        assert optimizers.own.param_groups[0]["lr"] == lr_at_epoch_3
    with pytest.raises(ValueError, match="lr_tau_scheduler"):
        _fastclip(version, lr_tau_scheduler="linear")


class _TwoTowers(torch.nn.Module):
    """A stand-in model: an image side (tower + head) and a text tower."""

    def __init__(self):
        super().__init__()
        self.visual_encoder, self.vision_proj = torch.nn.Linear(3, 4), torch.nn.Linear(4, 2)
        self.text_encoder = torch.nn.Linear(5, 2)

    def image_side_parameters(self):
        return [*self.visual_encoder.parameters(), *self.vision_proj.parameters()]


def _asymmetric(mode, lit_start_epoch, text_start=0, text_end=None, epochs=6, steps=10, lr_text=5e-4, **warmup):
    """(model, loss, optimizers, schedule) with the image side split off and tower windows from the flags."""
    model, loss = _TwoTowers(), _LossWithTemperature()
    optimizers = create_optimizers(model, loss, "adamW", lr=1e-3, weight_decay=0.1,
                                   image_side=model.image_side_parameters(), lr_text=lr_text)
    towers = TowerSchedule.from_flags(epochs, lit_start_epoch, text_start, text_end)
    schedule = LRSchedule(optimizers, mode, "cosine", epochs, steps, lr_min=1e-6, warmup_lr=1e-5, towers=towers,
                          **warmup)
    return model, loss, optimizers, schedule


def _lr_of(optimizers, param):
    return next(g["lr"] for g in optimizers.main.param_groups if any(p is param for p in g["params"]))


def _cosine(peak, floor, done, total):
    """Hand computation: the cosine value after `done` of `total` units, from `peak` down to `floor`."""
    return floor + (peak - floor) * (1 + math.cos(math.pi * done / total)) / 2


def test_image_side_groups_are_tagged_and_the_rest_starts_at_lr_text():
    model, loss, optimizers, _ = _asymmetric("legacy", 4)
    image = {id(p) for g in optimizers.main.param_groups if g.get(IMAGE_SIDE) for p in g["params"]}
    assert image == {id(p) for p in model.image_side_parameters()}
    decay_of = {id(p): g["weight_decay"] for g in optimizers.main.param_groups for p in g["params"]}
    assert decay_of[id(model.visual_encoder.weight)] == 0.1 and decay_of[id(model.vision_proj.bias)] == 0.0
    initial = {id(p): g["initial_lr"] for g in optimizers.main.param_groups for p in g["params"]}
    assert initial[id(model.vision_proj.weight)] == 1e-3
    assert initial[id(model.text_encoder.weight)] == 5e-4 and initial[id(loss.log_scale)] == 5e-4


def test_legacy_asymmetric_schedule_per_epoch_matches_a_hand_computation():
    """6 epochs, --lit_start_epoch 4, text window [1, 5): the image side's cosine spans 3 epochs and is 0 from
    epoch 3; the text side warms up in epoch 1, runs a 4-epoch cosine and is 0 in epochs 0 and 5."""
    model, loss, optimizers, schedule = _asymmetric("legacy", 4, text_start=1, text_end=5, warmup_epochs=2)
    image, text = model.visual_encoder.weight, model.text_encoder.bias
    expected_image = {1: _cosine(1e-3, 1e-6, 1, 3), 2: _cosine(1e-3, 1e-6, 2, 3), 3: 0.0, 4: 0.0, 5: 0.0}
    expected_text = {0: 0.0, 2: _cosine(5e-4, 1e-6, 1, 4), 3: _cosine(5e-4, 1e-6, 2, 4),
                     4: _cosine(5e-4, 1e-6, 3, 4), 5: 0.0}
    for epoch in range(6):
        schedule.apply(epoch, 150)
        if epoch in expected_image:
            assert _lr_of(optimizers, image) == pytest.approx(expected_image[epoch], rel=1e-12, abs=0), epoch
        if epoch in expected_text:
            assert _lr_of(optimizers, text) == pytest.approx(expected_text[epoch], rel=1e-12, abs=0), epoch
        assert _lr_of(optimizers, loss.log_scale) == _lr_of(optimizers, text)  # loss parameters follow the text
    schedule.apply(0, 150)  # epoch 0: the image side's second warm-up block, the text side still off
    assert _lr_of(optimizers, image) == pytest.approx(1e-5 + (1e-3 - 1e-5) / 2)
    schedule.apply(1, 150)  # epoch 1: the text side's own warm-up, block by block
    assert _lr_of(optimizers, text) == pytest.approx(1e-5 + (5e-4 - 1e-5) / 2)
    schedule.apply(1, 0)
    assert _lr_of(optimizers, text) == pytest.approx(1e-5)


def test_step_asymmetric_schedule_per_step_matches_a_hand_computation():
    """Per-step mode, 10 steps/epoch, 4 epochs, --lit_start_epoch 3, text window [1, 4), 5 warm-up steps."""
    model, _, optimizers, schedule = _asymmetric("step", 3, text_start=1, epochs=4, warmup_steps=5)
    image, text = model.vision_proj.weight, model.text_encoder.weight
    for epoch in range(4):
        for iteration in range(10):
            schedule.apply(epoch, iteration)
            step = epoch * 10 + iteration
            if step < 5:
                want_image = 1e-5 + (1e-3 - 1e-5) * step / 5
            else:
                want_image = _cosine(1e-3, 1e-6, step - 5, 15) if step < 20 else 0.0
            text_step = step - 10
            if text_step < 0:
                want_text = 0.0
            elif text_step < 5:
                want_text = 1e-5 + (5e-4 - 1e-5) * text_step / 5
            else:
                want_text = _cosine(5e-4, 1e-6, text_step - 5, 25)
            assert _lr_of(optimizers, image) == pytest.approx(want_image, rel=1e-12, abs=0), step
            assert _lr_of(optimizers, text) == pytest.approx(want_text, rel=1e-12, abs=0), step


def test_lit_start_epoch_1_keeps_the_image_side_at_0_throughout():
    model, _, optimizers, schedule = _asymmetric("legacy", 1, epochs=2)
    for epoch, iteration in [(0, 0), (0, 1), (0, 300), (1, 5)]:
        schedule.apply(epoch, iteration)
        assert _lr_of(optimizers, model.visual_encoder.weight) == 0.0
        assert _lr_of(optimizers, model.text_encoder.weight) > 0.0


def test_without_lit_the_text_side_follows_the_plain_schedule_at_its_own_peak():
    """Default windows (--lr_text alone): both sides run the one-schedule curve, the text side scaled to lr_text."""
    model, _, optimizers, schedule = _asymmetric("legacy", 0, warmup_epochs=3)
    plain = make_optimizer(1e-3)
    reference = LRSchedule(Optimizers(plain), "legacy", "cosine", 6, 10, lr_min=1e-6, warmup_lr=1e-5, warmup_epochs=3)
    for epoch in range(6):
        schedule.apply(epoch, 5)
        reference.apply(epoch, 5)
        assert _lr_of(optimizers, model.visual_encoder.weight) == pytest.approx(plain.param_groups[0]["lr"], rel=1e-12)
    assert _lr_of(optimizers, model.text_encoder.weight) == pytest.approx(_cosine(5e-4, 1e-6, 5, 6), rel=1e-12)


@pytest.mark.parametrize("mode, warmup", [("legacy", {"warmup_epochs": 2}), ("step", {"warmup_steps": 13})])
def test_a_resumed_asymmetric_run_gets_the_lrs_of_an_uninterrupted_run(mode, warmup):
    """A fresh schedule over an optimiser whose state was loaded (new group dicts) sets, from the position alone,
    every group's lr of the uninterrupted run."""
    _, _, replayed, schedule = _asymmetric(mode, 3, text_start=1, epochs=5, **warmup)
    expected = {}
    for epoch in range(5):
        for iteration in range(10):
            schedule.apply(epoch, iteration)
            expected[epoch, iteration] = [g["lr"] for g in replayed.main.param_groups]
    saved = replayed.main.state_dict()
    for epoch, iteration in [(0, 3), (1, 0), (1, 7), (2, 9), (3, 0), (4, 5)]:
        _, _, fresh, resumed = _asymmetric(mode, 3, text_start=1, epochs=5, **warmup)
        fresh.main.load_state_dict(saved)
        resumed.apply(epoch, iteration)
        assert [g["lr"] for g in fresh.main.param_groups] == pytest.approx(expected[epoch, iteration], rel=1e-12), \
            (epoch, iteration)
