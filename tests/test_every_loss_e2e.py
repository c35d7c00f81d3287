"""Every --ita_type trains for one epoch through clip.py and logs its loss statistics."""
import json
import math
import shlex

import pytest
import torch

import clip
from models.losses import DISTILL_TYPES, ITA_TYPES

TRAIN_PAIRS, BATCH = 130, 16  # not a multiple of the batch: the last partial batch (2 pairs) must be dropped
STEPS = TRAIN_PAIRS // BATCH
TINY = ("--image_encoder test_vit --image_res 32 --text_encoder Transformer --text_width 32 --text_heads 2 "
        "--text_layers 1 --context_length 24 --embed_dim 32 --workers 0 --val_workers 0 --no-progress "
        f"--batch_size_train {BATCH} --lr 3e-4 --warmup_epochs 0 --zs_dataset none --epochs 1")


CONSTANT_TAU = {"clip": 0.01, "sogclr": 0.01, "sogclr_mine": 0.01, "infosogclr": 0.01, "sogclr_v2_mine": 0.01,
                "fastclip_v1": 0.07}


@pytest.fixture(scope="module")
def shapes(build_shapes):
    return build_shapes("shapes_small", TRAIN_PAIRS, 20, 1, 32)


@pytest.mark.parametrize("ita_type", ITA_TYPES)
def test_one_epoch_per_ita_type(shapes, tmp_path, ita_type):
    """One epoch takes floor(130 / 16) = 8 optimiser steps and visits 128 distinct pairs once each; the logged
    τ and γ are the loss's defaults (γ = 1 in FastCLIP's epoch 0, docs/losses.md §2)."""
    command = (f"--data_path {shapes}/datasets --ann_path {shapes}/clip_train --output_dir {tmp_path} "
               f"--ita_type {ita_type} {TINY}")
    assert clip.main(shlex.split(command)) == 0
    record = json.loads((tmp_path / "log.txt").read_text().splitlines()[-1])
    assert record["train_skipped_steps"] == 0.0
    for key in ("train_loss", "train_objective", "val_r_mean"):
        assert math.isfinite(record[key]), key
    checkpoint = torch.load(tmp_path / "checkpoint_1.pth", weights_only=True)
    assert checkpoint["step"] == STEPS
    assert {float(state["step"]) for state in checkpoint["optimizer"]["state"].values()} == {float(STEPS)}
    if ita_type in DISTILL_TYPES:
        return
    if ita_type == "siglip":  # learnable t, no per-sample state
        assert record["train_tau_img"] == pytest.approx(0.1, rel=0.05)
        return
    if ita_type in CONSTANT_TAU:
        assert record["train_tau_img"] == record["train_tau_txt"] == pytest.approx(CONSTANT_TAU[ita_type], rel=1e-6)
    else:
        assert record["train_tau_img"] != pytest.approx(0.0) and math.isfinite(record["train_tau_txt"])
    if ita_type != "clip":
        assert record["train_gamma"] == pytest.approx(1.0 if ita_type.startswith("fastclip") else 0.8)
        visited = torch.isfinite(checkpoint["loss"]["log_u_img"])
        assert visited.shape == (TRAIN_PAIRS,) and int(visited.sum()) == STEPS * BATCH
    if ita_type in ("isogclr", "isogclr_new", "sogclr_dro"):
        assert record["train_eta"] == pytest.approx(0.03)


@pytest.mark.parametrize("ita_type", ["siglip", "isogclr"])
def test_tiled_loss_trains_like_the_untiled_one(shapes, tmp_path, ita_type):
    """`--loss_tile 5` (ragged against the batch of 16) logs the untiled run's loss and objective (fp32; the
    weights are not compared: Adam turns the rounding noise of zero gradients, e.g. attention key biases, into
    lr-sized steps)."""
    common = f"--data_path {shapes}/datasets --ann_path {shapes}/clip_train --ita_type {ita_type} {TINY}"
    records = []
    for run, extra in (("whole", ""), ("tiled", "--loss_tile 5")):
        assert clip.main(shlex.split(f"{common} --output_dir {tmp_path}/{run} {extra}")) == 0
        records.append(json.loads((tmp_path / run / "log.txt").read_text().splitlines()[-1]))
    for key in ("train_loss", "train_objective", "train_tau_img"):
        assert records[1][key] == pytest.approx(records[0][key], rel=1e-4), key


@pytest.mark.parametrize("ita_type", ["clip --learnable_temp", "sogclr", "isogclr", "isogclr_tempnet --tempnet_dropout 0",
                                      "fastclip_v3", "dino --num_prototypes 16"])
def test_accum_freq_micro_batches_equal_one_batch(shapes, tmp_path, ita_type):
    """`--accum_freq 2` of 8 == one batch of 16 after 2 epochs: weights at 1e-6, loss state and parameters at 1e-4.

    SGD, as Adam turns the rounding noise of zero gradients (attention key biases) into lr-sized steps. The
    state ℓ = log mean exp(h/τ) turns the fp32 rounding of features encoded 8 rather than 16 at a time (1e-7)
    into 1e-5 at τ = 0.01; state updates per micro-batch would differ by O(1). dino's teacher tower gets no
    gradient, so SGD's weight decay must skip it in both runs.
    """
    common = (f"--data_path {shapes}/datasets --ann_path {shapes}/clip_train --ita_type {ita_type} {TINY} "
              f"--opt sgd --momentum 0.9 --lr 3e-3 --epochs 2")
    runs = {}
    for run, extra in (("one", "--batch_size_train 16"), ("accum", "--batch_size_train 8 --accum_freq 2")):
        assert clip.main(shlex.split(f"{common} --output_dir {tmp_path}/{run} {extra}")) == 0
        runs[run] = torch.load(tmp_path / run / "checkpoint_2.pth", weights_only=True)
    for part, tol in (("model", 1e-6), ("loss", 1e-4)):
        for key, value in runs["one"][part].items():
            if value.is_floating_point():
                torch.testing.assert_close(runs["accum"][part][key], value, rtol=tol, atol=tol,
                                           msg=lambda m: f"{part}.{key}: {m}")


@pytest.mark.parametrize("ita_type, flags, own_lr", [
    ("isogclr_tempnet", "--lr_temp_net 1e-3", [1e-3, 1e-3 * 0.9]),   # TempNet: × 0.9 per epoch
    ("fastclip_v3", "--temp 0.02", [2e-4 / 3, 2e-4 / 3]),            # step_thresh: lr_tau / 3 while τ ≤ 0.03
    ("fastclip_v3", "--lr_tau_scheduler const", [2e-4, 2e-4])])
def test_losses_with_their_own_optimiser_follow_their_schedule_and_resume_exactly(shapes, tmp_path, ita_type,
                                                                                   flags, own_lr):
    """The loss's separate Adam (TempNet networks, FastCLIP v3's τ) runs at the lr its rule gives each epoch, and
    is checkpointed and restored."""
    common = (f"--data_path {shapes}/datasets --ann_path {shapes}/clip_train --ita_type {ita_type} "
              f"{TINY} {flags} --epochs 2")
    assert clip.main(shlex.split(f"{common} --output_dir {tmp_path}/straight")) == 0
    assert clip.main(shlex.split(f"{common} --output_dir {tmp_path}/resumed "
                                 f"--resume {tmp_path}/straight/checkpoint_1.pth")) == 0
    for epoch, lr in enumerate(own_lr):
        own = torch.load(tmp_path / "straight" / f"checkpoint_{epoch + 1}.pth", weights_only=True)
        assert own["optimizers_extra"]["own"]["param_groups"][0]["lr"] == pytest.approx(lr, rel=1e-9), epoch
    straight = torch.load(tmp_path / "straight" / "checkpoint_2.pth", weights_only=True)
    resumed = torch.load(tmp_path / "resumed" / "checkpoint_2.pth", weights_only=True)
    assert straight["optimizers_extra"]["own"]["state"], "the own optimiser took steps"
    for part in ("model", "loss"):
        for key, value in straight[part].items():
            assert torch.equal(resumed[part][key], value), f"{part}.{key}"


def test_infosogclr_individual_tau_trains_and_checkpoints_per_sample_temperatures(shapes, tmp_path):
    command = (f"--data_path {shapes}/datasets --ann_path {shapes}/clip_train --output_dir {tmp_path} "
               f"--ita_type infosogclr --individual_tau --tau_init 0.02 {TINY}")
    assert clip.main(shlex.split(command)) == 0
    state = torch.load(tmp_path / "checkpoint_1.pth", weights_only=True)["loss"]
    assert state["tau_img"].shape == state["tau_txt"].shape == (TRAIN_PAIRS,)
    assert not torch.all(state["tau_img"] == 0.02) and torch.all((state["tau_img"] >= 0.005) & (state["tau_img"] <= 0.05))
