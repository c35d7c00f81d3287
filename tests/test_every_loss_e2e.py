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
