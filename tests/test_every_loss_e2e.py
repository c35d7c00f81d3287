"""Every --ita_type trains for one epoch through clip.py and logs its loss statistics."""
import json
import shlex

import pytest
import torch

import clip
from models.losses import DISTILL_TYPES, ITA_TYPES

TINY = ("--image_encoder test_vit --image_res 32 --text_encoder Transformer --text_width 32 --text_heads 2 "
        "--text_layers 1 --context_length 24 --embed_dim 32 --workers 0 --val_workers 0 --no-progress "
        "--batch_size_train 16 --lr 3e-4 --warmup_epochs 0 --zs_dataset none --epochs 1")


@pytest.fixture(scope="module")
def shapes(build_shapes):
    return build_shapes("shapes_small", 128, 20, 1, 32)


@pytest.mark.parametrize("ita_type", ITA_TYPES)
def test_one_epoch_per_ita_type(shapes, tmp_path, ita_type):
    command = (f"--data_path {shapes}/datasets --ann_path {shapes}/clip_train --output_dir {tmp_path} "
               f"--ita_type {ita_type} {TINY}")
    assert clip.main(shlex.split(command)) == 0
    record = json.loads((tmp_path / "log.txt").read_text().splitlines()[-1])
    assert record["train_skipped_steps"] == 0.0
    temperatures = () if ita_type in DISTILL_TYPES else ("train_tau_img", "train_tau_txt")
    for key in ("train_loss", *temperatures, "train_objective", "val_r_mean"):
        assert key in record and record[key] == record[key], key  # present and not NaN
    if ita_type not in ("clip", "siglip", *DISTILL_TYPES):
        assert "train_gamma" in record
    if ita_type in ("isogclr", "isogclr_new", "sogclr_dro"):
        assert "train_eta" in record


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


@pytest.mark.parametrize("ita_type", ["isogclr_tempnet", "fastclip_v3"])
def test_losses_with_their_own_optimiser_resume_exactly(shapes, tmp_path, ita_type):
    """The loss's separate Adam (TempNet networks, FastCLIP v3's τ) is checkpointed and restored."""
    common = (f"--data_path {shapes}/datasets --ann_path {shapes}/clip_train --ita_type {ita_type} "
              f"{TINY} --epochs 2")
    assert clip.main(shlex.split(f"{common} --output_dir {tmp_path}/straight")) == 0
    assert clip.main(shlex.split(f"{common} --output_dir {tmp_path}/resumed "
                                 f"--resume {tmp_path}/straight/checkpoint_1.pth")) == 0
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
    assert state["tau_img"].shape == state["tau_txt"].shape == (128,)
    assert not torch.all(state["tau_img"] == 0.02) and torch.all((state["tau_img"] >= 0.005) & (state["tau_img"] <= 0.05))
