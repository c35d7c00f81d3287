"""Distillation objectives through clip.py: --resume continues the loss state and prototypes exactly; an unlocked
teacher of a uni-directional objective gets one warning line."""
import shlex

import pytest
import torch

import clip
from models.factory import create_model, tiny_model_config
from models.losses import build_loss

TINY = ("--image_encoder test_vit --image_res 32 --text_encoder Transformer --text_width 32 --text_heads 2 "
        "--text_layers 1 --context_length 24 --embed_dim 32 --workers 0 --val_workers 0 --no-progress "
        "--batch_size_train 16 --lr 3e-4 --warmup_epochs 0 --zs_dataset none --train_transform deterministic "
        "--memory_bank_size 40 --num_prototypes 40")


@pytest.fixture(scope="module")
def shapes(build_shapes):
    return build_shapes("shapes_small", 128, 20, 1, 32)


@pytest.mark.parametrize("ita_type", ["compress_2q", "dino"])
def test_resume_continues_the_objective_state_exactly(shapes, tmp_path, ita_type):
    common = f"--data_path {shapes}/datasets --ann_path {shapes}/clip_train --ita_type {ita_type} {TINY} --epochs 2"
    assert clip.main(shlex.split(f"{common} --output_dir {tmp_path}/straight")) == 0
    assert clip.main(shlex.split(f"{common} --output_dir {tmp_path}/resumed "
                                 f"--resume {tmp_path}/straight/checkpoint_1.pth")) == 0
    first = torch.load(tmp_path / "straight" / "checkpoint_1.pth", weights_only=True)["loss"]
    straight = torch.load(tmp_path / "straight" / "checkpoint_2.pth", weights_only=True)["loss"]
    resumed = torch.load(tmp_path / "resumed" / "checkpoint_2.pth", weights_only=True)["loss"]
    changed = [k for k, v in straight.items() if not torch.equal(first[k], v)]
    assert changed, "the second epoch moved the state"
    for key, value in straight.items():
        assert torch.equal(resumed[key], value), key


@pytest.mark.parametrize("ita_type, teacher, locks, warned", [
    ("seed", "text", {}, "--lock_text"),
    ("seed", "text", {"lock_text": True}, None),
    ("compress_1q", "text", {"lock_image": True}, "--lock_text"),
    ("dino", "image", {"lock_text": True}, "--lock_image"),
    ("protocpc", "image", {"lock_image": True}, None),
    ("compress_2q", "text", {}, None),
    ("simreg", "text", {}, None),
    ("clip", "text", {}, None),
])
def test_an_unlocked_teacher_of_a_uni_directional_objective_is_warned_about(ita_type, teacher, locks, warned):
    model = create_model(tiny_model_config(embed_dim=16, **locks))
    loss_fn = build_loss(ita_type, num_samples=8, embed_dim=16, memory_bank_size=16, num_prototypes=16,
                         teacher=teacher)  # clip ignores --teacher
    warning = clip.unlocked_teacher_warning(ita_type, loss_fn, model)
    if warned is None:
        assert warning is None
    else:
        assert warning.startswith("warning:") and warned in warning and "\n" not in warning


def test_clip_py_prints_the_unlocked_teacher_warning_once(shapes, tmp_path, capsys):
    common = f"--data_path {shapes}/datasets --ann_path {shapes}/clip_train {TINY} --epochs 1 --train_size 32"
    assert clip.main(shlex.split(f"{common} --ita_type seed --output_dir {tmp_path}/seed")) == 0
    assert capsys.readouterr().out.count("--lock_text") == 1
