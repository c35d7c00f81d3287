"""clip.py trains one epoch of a GCL loss from img2dataset shards: demo builder shards plus a `::`-joined
shard holding a corrupt image, the state sized by scanning the keys, retrieval on the demo data."""
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import tarfile
from pathlib import Path

import torch

import clip
from dataset.demo.build import main as build_demo
from dataset.demo.shards import Img2DatasetWriter

TINY = ("--image_encoder test_vit --image_res 32 --text_encoder Transformer --text_width 64 --text_heads 2 "
        "--text_layers 2 --context_length 32 --embed_dim 32 --workers 0 --val_workers 0 --no-progress "
        "--zs_dataset none")
EXTRA_FIRST_ROW = 200   # the extra shard's keys start here, beyond the demo shards' keys
CRASH_CLIP = Path(__file__).resolve().parent / "crash_clip.py"  # clip.py with a CRASH=<place>:<n> SIGKILL


def keys_in(shard) -> set[int]:
    with tarfile.open(shard) as tar:
        return {int(name.split(".")[0]) for name in tar.getnames()}


def test_one_epoch_of_sogclr_from_shards(tmp_path, capsys):
    demo = tmp_path / "demo"
    assert build_demo(["--source", "shapes", "--out", str(demo), "--num_train", "60", "--num_val", "8",
                       "--num_zeroshot_per_class", "1", "--image_size", "32", "--format", "webdataset",
                       "--shard_size", "100"]) == 0
    printed = capsys.readouterr().out
    demo_pattern = re.search(r"--train-data '([^']+)'", printed).group(1)
    extra = tmp_path / "extra"
    with Img2DatasetWriter(extra, 1000, failure_rate=0.0) as writer:
        for _ in range(EXTRA_FIRST_ROW):
            writer.skip()
        corrupt_key = writer.add(b"\xff\xd8 truncated download", "a corrupt image")
        image = next(demo.glob("datasets/cc3m_subset_100k/*.jpg")).read_bytes()
        good_keys = [writer.add(image, f"extra picture {i}") for i in range(4)]
    out = tmp_path / "run"
    command = (f"--data_path {demo}/datasets --ann_path {demo}/clip_train --output_dir {out} "
               f"--dataset_type auto --train-data '{demo_pattern}::{extra}/00000.tar' --train-num-samples 64 "
               f"--ita_type sogclr --epochs 1 --batch_size_train 8 --warmup_epochs 0 --seed 3 {TINY}")
    assert clip.main(shlex.split(command)) == 0

    printed = capsys.readouterr().out
    assert "8 iterations/epoch" in printed                       # ⌈64 / 8⌉
    assert "skipped 1 corrupt or incomplete sample(s)" in printed
    record = json.loads((out / "log.txt").read_text().splitlines()[0])
    assert record["epoch"] == 0 and record["train_loss"] == record["train_loss"] and "val_r_mean" in record
    loss_state = torch.load(out / "checkpoint_1.pth", weights_only=True)["loss"]
    state_sizes = {value.shape[0] for value in loss_state.values() if value.dim() == 1}
    assert state_sizes == {good_keys[-1] + 1}                   # scanned: max key + 1 (the corrupt key is lower)
    # 64 readable samples, 8 batches of 8: every key was an id of the loss exactly once, nothing else was
    written = set(good_keys).union(*(keys_in(shard) for shard in demo.glob("datasets/cc3m_wds/*.tar")))
    visited = set(torch.isfinite(loss_state["log_u_img"]).nonzero().flatten().tolist())
    assert len(written) == 64 and visited == written and corrupt_key not in visited


def test_killed_mid_epoch_resumes_from_shards_to_the_same_weights(tmp_path, capsys):
    """8 steps per epoch, a checkpoint every 3 steps: killed after step 12 (epoch 1, 4 steps in), resumed,
    the run ends bit-identical to an uninterrupted one, with 2 persistent DataLoader workers (the batch order
    depends on the readers per rank, the augmentations on (seed, epoch, key) only)."""
    demo = tmp_path / "demo"
    assert build_demo(["--source", "shapes", "--out", str(demo), "--num_train", "64", "--num_val", "8",
                       "--num_zeroshot_per_class", "1", "--image_size", "32", "--format", "webdataset",
                       "--shard_size", "16"]) == 0
    pattern = re.search(r"--train-data '([^']+)'", capsys.readouterr().out).group(1)
    common = (f"--data_path {demo}/datasets --ann_path {demo}/clip_train --dataset_type webdataset "
              f"--train-data '{pattern}' --train-num-samples 64 --ita_type sogclr --epochs 2 --batch_size_train 8 "
              f"--lr_schedule step --warmup_steps 2 --save_every_steps 3 --keep_checkpoints 1 {TINY} --workers 2")
    assert clip.main(shlex.split(f"{common} --output_dir {tmp_path}/reference")) == 0
    killed = subprocess.run([sys.executable, str(CRASH_CLIP), *shlex.split(f"{common} --output_dir {tmp_path}/run")],
                            env={**os.environ, "CRASH": "step:12"}, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    last = torch.load(tmp_path / "run" / "checkpoint_last.pth", weights_only=True)
    assert (last["epoch"], last["mid_epoch"]["iteration"]) == (1, 4)
    assert clip.main(shlex.split(f"{common} --output_dir {tmp_path}/run --resume")) == 0
    assert "restarts from its first batch" not in capsys.readouterr().out
    a = torch.load(tmp_path / "reference" / "checkpoint_2.pth", weights_only=True)
    b = torch.load(tmp_path / "run" / "checkpoint_2.pth", weights_only=True)
    for part in ("model", "loss"):
        different = [key for key in a[part] if not torch.equal(a[part][key], b[part][key])]
        assert not different, f"{part}: {different[:5]}"
