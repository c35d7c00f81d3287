"""Stateful distillation objectives through clip.py: --resume continues the loss state and prototypes exactly."""
import shlex

import pytest
import torch

import clip

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
