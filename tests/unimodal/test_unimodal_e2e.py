"""train.py and lincls.py end to end on tiny demo folders (test_resnet, 32 px, 36 images), plus resume."""
from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import torch

from unimodal_helpers import TINY_MODEL, load_script

train = load_script("train")
lincls = load_script("lincls")
build_demo_folders = load_script("build_demo_folders")

BATCH = ["--batch-size", "12"]  # 36 images: 3 iterations per epoch, every image visited


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> Path:
    """36 shapes classes × 1 image in train/ and val/."""
    out = tmp_path_factory.mktemp("unimodal_demo")
    assert build_demo_folders.main(["--source", "shapes", "--out", str(out), "--train-per-class", "1",
                                    "--val-per-class", "1", "--image-size", "32"]) == 0
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pretrain(folders: Path, out: Path, *extra: str) -> int:
    return train.main(["--data", str(folders), "--data_name", "folder", "--save_dir", str(out), *TINY_MODEL, *BATCH,
                       "--warmup-epochs", "1", *extra])


@pytest.fixture(scope="module")
def one_epoch(folders, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pretrain_dcl")
    assert pretrain(folders, out, "--epochs", "1", "--loss_type", "dcl", "--gamma", "0.9") == 0
    return out


def test_pretraining_writes_logs_and_checkpoints(one_epoch):
    assert {p.name for p in one_epoch.iterdir()} >= {"args.json", "log.txt", "checkpoint_0000.pth.tar",
                                                     "checkpoint_last.pth.tar"}
    records = [json.loads(line) for line in (one_epoch / "log.txt").read_text().splitlines()]
    assert len(records) == 1 and records[0]["epoch"] == 0 and records[0]["skipped_steps"] == 0.0
    ckpt = torch.load(one_epoch / "checkpoint_last.pth.tar", map_location="cpu", weights_only=True)
    assert ckpt["epoch"] == 1 and ckpt["step"] == 3 and ckpt["arch"] == "test_resnet"
    log_u = ckpt["loss"]["log_u"]
    assert log_u.shape == (36,) and torch.isfinite(log_u).all()  # every image visited once: state written
    prefixes = {key.split(".", 1)[0] for key in ckpt["model"]}
    assert prefixes == {"backbone", "projector"}


def test_simclr_pretraining_runs(folders, tmp_path):
    assert pretrain(folders, tmp_path, "--epochs", "1", "--loss_type", "simclr") == 0
    ckpt = torch.load(tmp_path / "checkpoint_last.pth.tar", map_location="cpu", weights_only=True)
    assert ckpt["loss"] == {} and ckpt["args"]["loss_type"] == "simclr"


@pytest.mark.parametrize("extra", [[], ["--cache-features"]], ids=["augmented", "cached"])
def test_linear_evaluation_writes_result(folders, one_epoch, tmp_path, extra):
    code = lincls.main(["--data", str(folders), "--data_name", "folder", "--image-size", "32", "--workers", "0",
                        "--pretrained", str(one_epoch / "checkpoint_0000.pth.tar"), "--epochs", "1",
                        "--batch-size", "12", "--save_dir", str(tmp_path), *extra])
    assert code == 0
    result = json.loads((tmp_path / "lincls_result.json").read_text())
    assert result["arch"] == "test_resnet" and result["num_classes"] == 36 and result["epochs"] == 1
    assert 0.0 <= result["top1"] <= result["top5"] <= 100.0
    assert len((tmp_path / "lincls_log.txt").read_text().splitlines()) == 1
    assert json.loads((tmp_path / "lincls_args.json").read_text())["pretrained"].endswith("checkpoint_0000.pth.tar")


def test_resume_restores_per_image_state(folders, one_epoch, tmp_path):
    """1 epoch + resume for a 2nd equals 2 epochs straight: the per-image state, weights and LARS come back."""
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert pretrain(folders, straight, "--epochs", "2", "--loss_type", "dcl", "--gamma", "0.9") == 0
    assert pretrain(folders, resumed, "--epochs", "2", "--loss_type", "dcl", "--gamma", "0.9",
                    "--resume", str(one_epoch / "checkpoint_last.pth.tar")) == 0
    a = torch.load(straight / "checkpoint_last.pth.tar", map_location="cpu", weights_only=True)
    b = torch.load(resumed / "checkpoint_last.pth.tar", map_location="cpu", weights_only=True)
    first = torch.load(one_epoch / "checkpoint_last.pth.tar", map_location="cpu", weights_only=True)
    assert not torch.equal(a["loss"]["log_u"], first["loss"]["log_u"])  # the 2nd epoch moved the state
    torch.testing.assert_close(b["loss"]["log_u"], a["loss"]["log_u"], rtol=1e-5, atol=1e-6)
    for key, value in a["model"].items():
        torch.testing.assert_close(b["model"][key], value, rtol=1e-5, atol=1e-6, msg=lambda m: f"{key}: {m}")
    assert b["epoch"] == 2 and len((resumed / "log.txt").read_text().splitlines()) == 1


def test_worker_count_does_not_change_the_weights(folders, one_epoch, tmp_path):
    """Each image's two views are seeded by (seed, epoch, index): 2 persistent workers train the workers-0 weights."""
    assert pretrain(folders, tmp_path, "--epochs", "1", "--loss_type", "dcl", "--gamma", "0.9", "--workers", "2") == 0
    a = torch.load(one_epoch / "checkpoint_last.pth.tar", map_location="cpu", weights_only=True)
    b = torch.load(tmp_path / "checkpoint_last.pth.tar", map_location="cpu", weights_only=True)
    for part in ("model", "loss"):
        different = [key for key in a[part] if not torch.equal(a[part][key], b[part][key])]
        assert not different, f"{part}: {different[:5]}"


def test_resume_refuses_a_state_of_another_dataset_size(folders, one_epoch, tmp_path, capsys):
    """The per-image state is keyed by dataset index: a checkpoint for 36 images cannot resume on 30."""
    classes = tmp_path / "classes.txt"
    classes.write_text("\n".join(sorted(p.name for p in (folders / "train").iterdir())[:30]) + "\n")
    code = pretrain(folders, tmp_path / "out", "--epochs", "2", "--class-list", str(classes),
                    "--resume", str(one_epoch / "checkpoint_last.pth.tar"))
    assert code == 1 and "loss state" in capsys.readouterr().err


def test_two_process_pretraining(folders, tmp_path):
    """--multiprocessing-distributed with 2 CPU processes (gloo, DDP over encoder + loss) completes."""
    code = pretrain(folders, tmp_path, "--epochs", "1", "--multiprocessing-distributed", "--nproc-per-node", "2",
                    "--dist-url", f"tcp://127.0.0.1:{free_port()}", "--device", "cpu")
    assert code == 0
    ckpt = torch.load(tmp_path / "checkpoint_last.pth.tar", map_location="cpu", weights_only=True)
    assert torch.isfinite(ckpt["loss"]["log_u"]).all()  # both ranks' images reached the replicated state


def test_linear_evaluation_of_a_random_backbone(folders, tmp_path, capsys):
    """`--pretrained random` probes a randomly initialised --arch (the accuracy floor); it needs --arch."""
    flags = ["--data", str(folders), "--data_name", "folder", "--image-size", "32", "--workers", "0",
             "--pretrained", "random", "--epochs", "1", "--batch-size", "12", "--save_dir", str(tmp_path),
             "--cache-features"]
    assert lincls.main(flags) == 1 and "--arch" in capsys.readouterr().err
    assert lincls.main([*flags, "--arch", "test_resnet"]) == 0
    result = json.loads((tmp_path / "lincls_result.json").read_text())
    assert result["pretrained"] == "random" and result["epoch"] == 0


def test_user_errors_end_with_status_one(folders, tmp_path, capsys):
    """One line on stderr, exit 1: in this process and in spawned processes (which end their peers)."""
    assert pretrain(tmp_path / "missing", tmp_path / "out", "--epochs", "1") == 1
    assert "not a folder" in capsys.readouterr().err
    code = pretrain(folders, tmp_path / "out2", "--epochs", "1", "--multiprocessing-distributed",
                    "--nproc-per-node", "2", "--dist-url", f"tcp://127.0.0.1:{free_port()}", "--device", "cpu",
                    "--batch-size", "13")
    assert code == 1 and not (tmp_path / "out2" / "checkpoint_last.pth.tar").exists()
