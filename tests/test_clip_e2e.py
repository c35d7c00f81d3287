"""End-to-end runs of clip.py on the procedural `shapes` demo data with tiny towers."""
import json
import os
import shlex
import subprocess
import sys

import numpy as np
import pytest
import torch

import clip
from cifar_helpers import write_cifar_test
from cli.options import parse_args
from dataset.cifar import cifar_classnames
from dataset.transforms import build_zeroshot_transform
from dataset.zeroshot import load_zeroshot_benchmark, openai_templates
from engine.evaluation import evaluate_zeroshot
from models.config import ModelConfig
from models.factory import create_model, create_tokenizer

TINY = ("--image_encoder test_resnet --image_res 64 --text_encoder Transformer --text_width 64 --text_heads 2 "
        "--text_layers 2 --context_length 32 --embed_dim 32 --workers 0 --val_workers 0 --no-progress "
        "--batch_size_train 32 --lr 3e-4 --warmup_epochs 0 --temp 0.07")
CHANCE_R_MEAN = 5.5  # about (1+5+10)/3 % both ways for 100 images with 5 captions each
# Measured for one epoch with seeds 0, 1, 2, 42: val_r_mean 9.6-11.6 (chance 5.5), zero-shot top-5 17.4-23.6 %
# over 36 shape classes (chance 13.9 %). The margins below hold for all of them.
R_MEAN_MARGIN = 1.5


@pytest.fixture(scope="module")
def shapes(build_shapes):
    return build_shapes("shapes", 2048, 100, 4, 64)


def data_flags(root) -> str:
    return f"--data_path {root}/datasets --ann_path {root}/clip_train"


def run(command: str) -> int:
    return clip.main(shlex.split(command))


@pytest.fixture(scope="module")
def one_epoch(shapes, tmp_path_factory):
    out = tmp_path_factory.mktemp("run1")
    assert run(f"{data_flags(shapes)} --output_dir {out} --ita_type clip --epochs 1 {TINY}") == 0
    return out


def test_one_epoch_writes_outputs_and_learns_above_chance(shapes, one_epoch):
    for name in ("args.json", "log.txt", "checkpoint_1.pth", "checkpoint_last.pth", "coco_log.txt",
                 "zeroshot_imagenet_log.txt"):
        assert (one_epoch / name).is_file(), name
    records = [json.loads(line) for line in (one_epoch / "log.txt").read_text().splitlines()]
    assert len(records) == 1 and records[0]["epoch"] == 0
    assert records[0]["val_r_mean"] > CHANCE_R_MEAN * R_MEAN_MARGIN
    classes = len([d for d in (shapes / "datasets" / "imagenet" / "val").iterdir() if d.is_dir()])
    assert records[0]["zeroshot_top5"] > 100.0 * 5 / classes  # above chance with every measured seed
    assert records[0]["zeroshot_top1"] <= records[0]["zeroshot_top5"]
    checkpoint = torch.load(one_epoch / "checkpoint_1.pth", weights_only=True)
    assert checkpoint["epoch"] == 1 and checkpoint["args"]["ita_type"] == "clip"
    assert checkpoint["optimizer"]["state"][0]["step"] == 2048 // 32  # every pair seen once, in full batches


def test_evaluate_reproduces_the_training_metrics(shapes, one_epoch, tmp_path):
    assert run(f"{data_flags(shapes)} --output_dir {tmp_path} --ita_type clip {TINY} "
               f"--evaluate --checkpoint {one_epoch}/checkpoint_1.pth") == 0
    trained = json.loads((one_epoch / "log.txt").read_text().splitlines()[-1])
    evaluated = json.loads((tmp_path / "eval_results.json").read_text())["metrics"]
    for key, value in evaluated.items():
        expected = trained[key] if key.startswith("zeroshot") else trained[f"val_{key}"]
        assert value == pytest.approx(expected, abs=1e-6), key


def test_two_epochs_equal_one_epoch_then_resume(shapes, tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    common = f"{data_flags(shapes)} --ita_type sogclr --epochs 2 --train_frac 0.25 --zs_dataset none {TINY}"
    assert run(f"{common} --output_dir {straight}") == 0
    assert run(f"{common} --output_dir {resumed} --resume {straight}/checkpoint_1.pth") == 0
    a = torch.load(straight / "checkpoint_2.pth", weights_only=True)
    b = torch.load(resumed / "checkpoint_2.pth", weights_only=True)
    for part in ("model", "loss"):
        assert a[part].keys() == b[part].keys()
        for key in a[part]:
            assert torch.equal(a[part][key], b[part][key]), f"{part}.{key}"
    assert any(v.abs().sum() > 0 for k, v in a["loss"].items() if v.is_floating_point())  # state was used


def test_seed_000_command_runs_verbatim_with_tiny_tower_overrides(shapes, tmp_path):
    seed = ("--data_path ./datasets --ann_path ./clip_train --train_file cc3m_train_subset.json "
            "--train_image_root cc3m_subset_100k/ --output_dir ../output/ --init_model --use_amp "
            "--ita_type isogclr_new --tau_init 0.01 --sogclr_gamma 0.8 --rho_init 6.0 --eta_init 0.03 "
            "--sched cosine --no-distributed --epochs 30")
    overrides = f"{TINY} --image_pretrained false --epochs 1 --train_frac 0.25 --output_dir {tmp_path}/out"
    cwd = os.getcwd()
    os.chdir(shapes)
    try:
        assert run(f"{seed} {overrides}") == 0
        assert run(f"{seed} {overrides} --evaluate --checkpoint {tmp_path}/out/checkpoint_1.pth") == 0
    finally:
        os.chdir(cwd)
    args = json.loads((tmp_path / "out" / "args.json").read_text())
    assert args["rho_init"] == 6.0 and args["eta_init"] == 0.03 and args["ita_type"] == "isogclr_new"


def test_evaluate_on_cifar10_uses_its_test_split_names_and_prompts(shapes, one_epoch, tmp_path,
                                                                    trust_cifar_checksums):
    images = np.random.default_rng(0).integers(0, 256, size=(20, 32, 32, 3), dtype=np.uint8)
    labels = [i % 10 for i in range(20)]
    write_cifar_test(tmp_path / "cifar", "cifar10", images, labels, [str(i) for i in range(10)])
    assert run(f"{data_flags(shapes)} --output_dir {tmp_path}/out {TINY} --zs_dataset cifar10 "
               f"--zs_datafolder {tmp_path}/cifar --evaluate --checkpoint {one_epoch}/checkpoint_1.pth") == 0
    metrics = json.loads((tmp_path / "out" / "eval_results.json").read_text())["metrics"]
    assert json.loads((tmp_path / "out" / "zeroshot_cifar10_log.txt").read_text())["zeroshot_top1"] == \
        metrics["zeroshot_top1"]
    config = ModelConfig.from_args(parse_args(shlex.split(TINY))[0], pretrained=False)
    model = create_model(config)
    model.load_state_dict(torch.load(one_epoch / "checkpoint_1.pth", weights_only=True)["model"])
    benchmark = load_zeroshot_benchmark("cifar10", tmp_path / "cifar", build_zeroshot_transform(64))
    expected = evaluate_zeroshot(model, create_tokenizer(config), benchmark.dataset, cifar_classnames("cifar10"),
                                 openai_templates(), torch.device("cpu"), workers=0)
    assert metrics["zeroshot_top1"] == pytest.approx(expected["zeroshot_top1"], abs=1e-9)


def test_absent_zero_shot_data_is_skipped_with_a_note(shapes, one_epoch, tmp_path, capsys):
    assert run(f"{data_flags(shapes)} --output_dir {tmp_path} {TINY} --zs_dataset cifar100 "
               f"--evaluate --checkpoint {one_epoch}/checkpoint_1.pth") == 0
    note = next(line for line in capsys.readouterr().out.splitlines() if "skipping zero-shot evaluation" in line)
    assert note.startswith(f"--zs_dataset cifar100: {shapes}/datasets/cifar-100-python/test, ")
    metrics = json.loads((tmp_path / "eval_results.json").read_text())["metrics"]
    assert "zeroshot_top1" not in metrics and "txt_r1" in metrics


def test_compile_trains_the_same_weights_with_the_same_checkpoint_keys(shapes, tmp_path):
    common = f"{data_flags(shapes)} --ita_type sogclr --epochs 1 --train_frac 0.1 --zs_dataset none {TINY}"
    assert run(f"{common} --output_dir {tmp_path}/eager") == 0
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    assert run(f"{common} --output_dir {tmp_path}/compiled --compile aot_eager") == 0
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 2  # both towers went through dynamo
    eager = torch.load(tmp_path / "eager" / "checkpoint_1.pth", weights_only=True)
    compiled = torch.load(tmp_path / "compiled" / "checkpoint_1.pth", weights_only=True)
    for part in ("model", "loss"):
        assert compiled[part].keys() == eager[part].keys()
        for key, value in eager[part].items():
            assert torch.allclose(compiled[part][key].float(), value.float(), atol=1e-5), f"{part}.{key}"


def test_state_size_sizes_the_per_sample_state_and_must_cover_the_pair_ids(shapes, tmp_path, capsys):
    common = f"{data_flags(shapes)} --ita_type sogclr --epochs 1 --train_frac 0.1 --zs_dataset none {TINY}"
    assert run(f"{common} --output_dir {tmp_path}/big --state_size 5000") == 0
    state = torch.load(tmp_path / "big" / "checkpoint_1.pth", weights_only=True)["loss"]
    assert {value.shape[0] for value in state.values() if value.dim() == 1} == {5000}
    assert run(f"{common} --output_dir {tmp_path}/small --state_size 100") == 1
    assert "--data_size 100 is smaller than the 2048 pair ids" in capsys.readouterr().err


def test_unknown_compile_backend_is_a_usage_error(tmp_path, capsys):
    assert run(f"--output_dir {tmp_path} --compile no_such_backend") == 1
    assert "--compile no_such_backend: unknown torch.compile backend" in capsys.readouterr().err


def cli(args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, os.path.join(os.path.dirname(clip.__file__), "clip.py"),
                           *shlex.split(args)], capture_output=True, text=True, env={**os.environ, **(env or {})})


def test_missing_data_is_one_line_naming_the_path_and_the_builder(tmp_path):
    result = cli(f"--data_path {tmp_path}/nope --ann_path {tmp_path}/nope --output_dir {tmp_path}/o {TINY}")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert f"{tmp_path}/nope" in result.stderr and "build_demo_data.py" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_init_model_without_local_weights_says_where_it_looked(shapes, tmp_path):
    empty = tmp_path / "empty_cache"
    empty.mkdir()
    result = cli(f"{data_flags(shapes)} --output_dir {tmp_path}/o --image_encoder resnet18 --init_model "
                 f"--text_encoder Transformer --epochs 1 --workers 0",
                 env={"HF_HOME": str(empty), "HF_HUB_CACHE": str(empty), "HUGGINGFACE_HUB_CACHE": str(empty),
                      "TORCH_HOME": str(empty), "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "resnet18" in result.stderr and str(empty) in result.stderr


def test_unknown_ita_type_is_an_argparse_error_with_choices(tmp_path):
    result = cli("--ita_type new_isogclr")
    assert result.returncode == 2 and "sogclr_dro" in result.stderr and "Traceback" not in result.stderr
