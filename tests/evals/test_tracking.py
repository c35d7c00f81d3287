"""--report_to tensorboard: the event file's scalars equal log.txt's; bad backends are one-line errors."""
import json
import shlex

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import clip
from engine.tracking import parse_report_to

TINY = ("--image_encoder test_resnet --image_res 32 --text_encoder Transformer --text_width 32 --text_heads 2 "
        "--text_layers 1 --context_length 32 --embed_dim 16 --workers 0 --val_workers 0 --no-progress "
        "--batch_size_train 32 --warmup_epochs 0 --batch_size_test 64 --train_transform deterministic")


def test_tensorboard_scalars_equal_log_txt(build_shapes, tmp_path):
    root = build_shapes("shapes_tracking", 128, 20, 2, 32)
    out = tmp_path / "run"
    # 4 steps per epoch, logged every 4 steps: each train scalar averages exactly the epoch that log.txt averages
    assert clip.main(shlex.split(f"--data_path {root}/datasets --ann_path {root}/clip_train --output_dir {out} "
                                 f"{TINY} --epochs 2 --eval_freq 1 --log_every 4 --report_to tensorboard")) == 0
    records = [json.loads(line) for line in (out / "log.txt").read_text().splitlines()]
    events = EventAccumulator(str(out / "tensorboard")).Reload()
    tags = events.Tags()
    assert "args" in tags["tensors"] or "args/text_summary" in tags["tensors"]
    loss = events.Scalars("train/loss")
    assert [e.step for e in loss] == [4, 8]
    assert [e.value for e in loss] == pytest.approx([r["train_loss"] for r in records], rel=1e-6)
    for key in ("val_r_mean", "zeroshot_top1"):
        values = events.Scalars(f"eval/{key}")
        assert [e.step for e in values] == [1, 2]
        assert [e.value for e in values] == pytest.approx([r[key] for r in records], rel=1e-6)


def test_report_to_names_are_checked():
    assert parse_report_to("tensorboard,tensorboard") == ("tensorboard",)
    with pytest.raises(ValueError, match="unknown backend 'mlflow'"):
        parse_report_to("mlflow")
