"""Distillation objectives through clip.py: --resume continues the loss state and prototypes exactly;
ProtoCLIP's clustering step, external teacher and input checks; an unlocked teacher of a uni-directional objective
gets one warning line."""
import json
import shlex

import numpy as np
import pytest
import torch

import clip
from cli.options import UsageError, parse_args
from models.factory import create_model, tiny_model_config
from models.losses import build_loss

TINY = ("--image_encoder test_vit --image_res 32 --text_encoder Transformer --text_width 32 --text_heads 2 "
        "--text_layers 1 --context_length 24 --embed_dim 32 --workers 0 --val_workers 0 --no-progress "
        "--batch_size_train 16 --lr 3e-4 --warmup_epochs 0 --zs_dataset none --train_transform deterministic "
        "--memory_bank_size 40 --num_prototypes 40")


@pytest.fixture(scope="module")
def shapes(build_shapes):
    return build_shapes("shapes_small", 128, 20, 1, 32)


@pytest.mark.parametrize("ita_type", ["compress_2q", "dino", "protoclip --proto_k 6 --pbt --proto_target_temp 0.1"])
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


def test_protoclip_clusters_every_pair_with_an_external_teacher_from_cache_teacher(shapes, tmp_path):
    """--cache_teacher writes the text embeddings; a protoclip run clusters them and labels every pair."""
    common = f"--data_path {shapes}/datasets --ann_path {shapes}/clip_train {TINY}"
    teacher = tmp_path / "teacher.npy"
    assert clip.main(shlex.split(f"{common} --output_dir {tmp_path}/cache --cache_teacher {teacher}")) == 0
    assert clip.main(shlex.split(f"{common} --output_dir {tmp_path}/run --epochs 1 --ita_type protoclip --k 6 --PBT "
                                 f"--external-teacher {teacher} --clustering-frequency 1")) == 0
    state = torch.load(tmp_path / "run" / "checkpoint_1.pth", weights_only=True)["loss"]
    for name in ("labels_img", "labels_txt", "labels_ext"):
        assert state[name].shape == (128,) and state[name].min() >= 0 and len(state[name].unique()) == 6, name
    for name in ("pbt_img", "pbt_txt", "ext_img", "ext_txt"):
        assert state[name].abs().sum() > 0, name
    record = json.loads((tmp_path / "run" / "log.txt").read_text().splitlines()[-1])
    assert record["train_proto"] > 0 and record["train_proto_external"] > 0 and 0 < record["train_tau_proto"] < 1


def test_protoclip_external_teacher_of_the_wrong_shape_is_one_line_naming_the_file(shapes, tmp_path, capsys):
    teacher = tmp_path / "teacher.npy"
    np.save(teacher, np.zeros((5, 4), dtype=np.float32))
    command = (f"--data_path {shapes}/datasets --ann_path {shapes}/clip_train {TINY} --output_dir {tmp_path}/run "
               f"--ita_type protoclip --pbt --external_teacher {teacher}")
    assert clip.main(shlex.split(command)) == 1
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and f"--external_teacher {teacher}" in error and "[128, d]" in error


def test_protoclip_flag_checks():
    with pytest.raises(UsageError, match="protoclip needs an indexable training set"):
        parse_args(shlex.split("--ita_type protoclip --dataset_type webdataset --train-data s/{0..1}.tar "
                               "--train-num-samples 10"))
    args, notes = parse_args(shlex.split("--ita_type protoclip --external_teacher t.npy"))
    assert args.external_teacher is None and any("--external_teacher needs --pbt" in n for n in notes)


def test_protoclip_lit_phase_freezes_the_image_side_and_resumes_exactly(shapes, tmp_path):
    """3 epochs with --lit-start-epoch 3: the image tower and its head train in epochs 0 and 1 and not in epoch 2
    (lr 0, so AdamW's decay lr·wd·w is 0 too) while the text side keeps training; a run resumed after epoch 0
    gets the same lrs from the position alone and ends with the same weights."""
    common = (f"--data_path {shapes}/datasets --ann_path {shapes}/clip_train {TINY} --epochs 3 --ita_type protoclip "
              f"--proto_k 6 --pbt --lit-start-epoch 3 --lr-text 5e-4 --weight_decay 0.1")
    assert clip.main(shlex.split(f"{common} --output_dir {tmp_path}/straight")) == 0
    assert clip.main(shlex.split(f"{common} --output_dir {tmp_path}/resumed "
                                 f"--resume {tmp_path}/straight/checkpoint_1.pth")) == 0
    after = {n: torch.load(tmp_path / "straight" / f"checkpoint_{n}.pth", weights_only=True)["model"] for n in (1, 2, 3)}
    image = [k for k in after[1] if k.startswith(("visual_encoder.", "vision_proj."))]
    text = [k for k in after[1] if k.startswith(("text_encoder.", "text_proj."))]
    assert image and text

    def moved(keys, before, later):
        return any(not torch.equal(after[before][k], after[later][k]) for k in keys)

    assert moved(image, 1, 2) and moved(text, 1, 2)
    assert not moved(image, 2, 3) and moved(text, 2, 3)
    resumed = torch.load(tmp_path / "resumed" / "checkpoint_3.pth", weights_only=True)["model"]
    for key, value in after[3].items():
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
