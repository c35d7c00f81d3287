"""The small parts of unimodal_exps: flags, process layout, learning rates, LARS groups, class folders, demo data."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from unimodal.data import open_split, read_class_list
from dataset.demo.folders import DemoSettings, build
from dataset.errors import DataError
from unimodal.launch import plan_launch, workers_per_process
from unimodal.model import ContrastiveEncoder, backbone_state
from unimodal.optim import create_lars
from unimodal.options import UsageError, parse_lincls_args, parse_train_args
from unimodal.schedule import scaled_lr, warmup_cosine

SEED_COMMAND = ("--lr=.075 --epochs=800 --batch-size=256 --learning-rate-scaling=sqrt --loss_type dcl --gamma 0.9 "
                "--multiprocessing-distributed --world-size 1 --rank 0 --workers 32 --crop-min=.08 --wd=1e-6 "
                "--dist-url tcp://localhost:10001 --data_name imagenet1000 --data /d/imagenet1000/ "
                "--save_dir /d/saved_models/ --print-freq 1000").split()


def test_seed_command_parses_with_both_spellings():
    args = parse_train_args(SEED_COMMAND)
    assert (args.lr, args.epochs, args.batch_size, args.gamma, args.crop_min, args.weight_decay) == \
        (0.075, 800, 256, 0.9, 0.08, 1e-6)
    assert args.multiprocessing_distributed and args.dist_url == "tcp://localhost:10001" and args.t == 0.1
    underscored = parse_train_args(["--data", "d", "--crop_min", "0.2", "--batch_size", "64", "--print_freq", "5",
                                    "--learning_rate_scaling", "linear", "--weight-decay", "0"])
    assert (underscored.crop_min, underscored.batch_size, underscored.print_freq, underscored.learning_rate_scaling,
            underscored.weight_decay) == (0.2, 64, 5, "linear", 0.0)


def test_lincls_defaults_follow_the_seed():
    args = parse_lincls_args(["--data", "d", "--pretrained", "c.pth.tar"])
    assert (args.epochs, args.batch_size, args.lr, args.momentum, args.weight_decay) == (90, 1024, 0.1, 0.9, 0.0)


def test_imagenet100_without_a_class_list_is_a_usage_error():
    with pytest.raises(UsageError, match="class-list"):
        parse_train_args(["--data", "d", "--data_name", "imagenet100"])


@pytest.mark.parametrize("argv, message", [
    (["--gamma", "0"], "--gamma: must be in (0, 1] (got 0.0)"),
    (["--gamma", "1.5"], "--gamma: must be in (0, 1] (got 1.5)"),
    (["--batch-size", "0"], "--batch-size/--batch_size: must be >= 1 (got 0)"),
    (["--crop-min", "0"], "--crop-min/--crop_min: must be in (0, 1] (got 0.0)"),
])
def test_out_of_range_train_flags_are_one_line_argparse_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        parse_train_args(["--data", "d", *argv])
    assert info.value.code == 2 and message in capsys.readouterr().err


def test_launch_layout():
    spawn = plan_launch(parse_train_args(["--data", "d", "--multiprocessing-distributed", "--nproc-per-node", "4",
                                          "--world-size", "2", "--rank", "1", "--workers", "10"]), environ={})
    assert (spawn.world_size, spawn.spawn, spawn.procs_per_node, spawn.rank_of(0), spawn.rank_of(3)) == (8, 4, 4, 4, 7)
    assert workers_per_process(parse_train_args(["--data", "d", "--workers", "10"]), spawn) == 3
    single = plan_launch(parse_train_args(["--data", "d"]), environ={})
    assert (single.world_size, single.spawn) == (1, 0)
    torchrun = plan_launch(parse_train_args(["--data", "d", "--multiprocessing-distributed", "--nproc-per-node", "4"]),
                           environ={"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"})
    assert (torchrun.world_size, torchrun.spawn, torchrun.init_method, torchrun.procs_per_node) == (2, 0, "env://", 2)
    with pytest.raises(UsageError, match="--rank"):
        plan_launch(parse_train_args(["--data", "d", "--world-size", "2", "--rank", "2"]), environ={})


def test_learning_rates():
    assert scaled_lr(0.075, 256, "sqrt") == pytest.approx(1.2)
    assert scaled_lr(0.3, 512, "linear") == pytest.approx(0.6)
    assert warmup_cosine(1.0, 0.0, 10, 100) == 0.0
    assert warmup_cosine(1.0, 5.0, 10, 100) == pytest.approx(0.5)
    assert warmup_cosine(1.0, 10.0, 10, 100) == pytest.approx(1.0)
    assert warmup_cosine(1.0, 55.0, 10, 100) == pytest.approx(0.5)
    assert warmup_cosine(1.0, 100.0, 10, 100) == pytest.approx(0.0, abs=1e-12)


def test_lars_decays_and_adapts_only_weight_matrices():
    encoder = ContrastiveEncoder("test_resnet", dim=8, mlp_dim=16)
    opt = create_lars(encoder, lr=1.0, weight_decay=1e-6)
    decayed, plain = opt.param_groups
    assert decayed["weight_decay"] == 1e-6 and decayed["always_adapt"] and all(p.ndim > 1 for p in decayed["params"])
    assert plain["weight_decay"] == 0.0 and not plain["always_adapt"] and all(p.ndim <= 1 for p in plain["params"])
    assert len(decayed["params"]) + len(plain["params"]) == len(list(encoder.parameters()))
    # the trust ratio makes the update of a weight ≈ lr·0.001·‖w‖ whatever the gradient scale
    w = encoder.projector[0].weight
    before = w.detach().clone()
    (1e3 * encoder(torch.randn(4, 3, 32, 32)).sum()).backward()
    opt.step()
    assert (w.detach() - before).norm() / before.norm() == pytest.approx(1e-3, rel=0.05)


def test_backbone_state_strips_the_prefix():
    encoder = ContrastiveEncoder("test_resnet", dim=8, mlp_dim=16)
    state = backbone_state(encoder.state_dict())
    assert state.keys() == encoder.backbone.state_dict().keys()


def _folders(root: Path, classes: list[str], per_class: int = 2) -> None:
    for split in ("train", "val"):
        for name in classes:
            (root / split / name).mkdir(parents=True)
            for i in range(per_class):
                Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(root / split / name / f"{i}.png")


def test_class_list_restricts_and_orders_classes(tmp_path):
    _folders(tmp_path, ["n03", "n01", "n02", "n04"])
    listing = tmp_path / "imagenet100.txt"
    listing.write_text("# ImageNet-100 subset\nn04/n04_1.JPEG\nn02\n\nn04/n04_2.JPEG\n")
    assert read_class_list(listing) == ["n04", "n02"]
    data = open_split(tmp_path, "train", transform=None, class_list=str(listing))
    assert data.classes == ["n02", "n04"] and len(data) == 4
    image, label, index = data[3]
    assert (label, index) == (1, 3) and isinstance(image, Image.Image)
    assert len(open_split(tmp_path, "val", transform=None)) == 8
    listing.write_text("n09\n")
    with pytest.raises(UsageError, match="n09"):
        open_split(tmp_path, "train", transform=None, class_list=str(listing))
    with pytest.raises(UsageError, match="not a folder"):
        open_split(tmp_path / "missing", "train", transform=None)


def test_demo_folders_are_deterministic_and_not_clobbering(tmp_path):
    settings = DemoSettings("shapes", 3, 1, 1, 16)
    counts, skipped = build(tmp_path / "a", settings)
    assert counts == {"train": 36, "val": 36} and not skipped
    assert build(tmp_path / "a", settings)[1]  # identical settings: skipped
    build(tmp_path / "b", settings)
    for split in ("train", "val"):
        files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a" / split).rglob("*.png"))
        assert files == sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b" / split).rglob("*.png"))
        assert all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files)
    train_img = Image.open(next((tmp_path / "a" / "train").rglob("*.png")))
    assert train_img.size == (16, 16) and train_img.mode == "RGB"
    (tmp_path / "c" / "train").mkdir(parents=True)
    with pytest.raises(DataError, match="not written by this builder"):
        build(tmp_path / "c", settings)
