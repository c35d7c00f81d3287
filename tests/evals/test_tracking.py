"""--report_to tensorboard and wandb: the event file's and the offline W&B run's scalars equal log.txt's; bad or
missing backends are one-line errors."""
import importlib.util
import json
import shlex
import subprocess
import sys
from pathlib import Path

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


def wandb_records(run_dir: Path) -> list[dict]:
    """The records of an offline W&B run, read back by wandb's own reader (`wandb leet inspect --json`)."""
    done = subprocess.run([sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(run_dir)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]


def test_wandb_offline_run_equals_log_txt(build_shapes, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    (tmp_path / "wandb_home").mkdir()
    home = str(tmp_path / "wandb_home")  # W&B's service logs, settings and cache stay in the test's folder
    for name, value in {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_DIR": home, "WANDB_CONFIG_DIR": home,
                        "WANDB_CACHE_DIR": home}.items():
        monkeypatch.setenv(name, value)
    root = build_shapes("shapes_tracking", 128, 20, 2, 32)
    out = tmp_path / "run"
    assert clip.main(shlex.split(f"--data_path {root}/datasets --ann_path {root}/clip_train --output_dir {out} "
                                 f"{TINY} --epochs 2 --eval_freq 1 --log_every 4 --report_to wandb")) == 0
    log = [json.loads(line) for line in (out / "log.txt").read_text().splitlines()]
    [run_dir] = (out / "wandb").glob("offline-run-*")
    records = wandb_records(run_dir)
    [run] = [r["run"] for r in records if r["type"] == "run"]
    assert run["display_name"] == "run" and run["config"]["update"]["epochs"] == 2
    history = [r["history"]["item"] for r in records if r["type"] == "history"]
    train = [item for item in history if "train/step" in item]
    assert [item["train/step"] for item in train] == [4, 8]
    assert [item["train/loss"] for item in train] == [r["train_loss"] for r in log]
    evals = [item for item in history if "eval/step" in item]
    assert [item["eval/step"] for item in evals] == [1, 2]
    for key in ("val_r_mean", "val_txt_r1", "zeroshot_top1"):
        assert [item[f"eval/{key}"] for item in evals] == [r[key] for r in log]
    # each family is plotted against its own step, not W&B's interleaved call counter
    axes = {r["metric"]["glob_name"]: r["metric"]["step_metric"] for r in records
            if r["type"] == "metric" and r["metric"].get("glob_name")}
    assert axes == {"train/*": "train/step", "eval/*": "eval/step"}
    assert [r["exit"]["exit_code"] for r in records if r["type"] == "exit"] == [0]


def test_a_missing_tracker_package_is_a_one_line_error(monkeypatch, capsys):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *rest: None if name == "wandb" else real_find_spec(name, *rest))
    with pytest.raises(SystemExit) as stop:
        clip.main(shlex.split("--report_to tensorboard,wandb"))
    err = capsys.readouterr().err
    [line] = [line for line in err.splitlines() if "error" in line]
    assert stop.value.code == 2 and "Traceback" not in err
    assert "--report_to" in line and "wandb: the wandb package is not installed (pip install wandb)" in line
