"""End-to-end `clip.py` runs of composed models on the shapes demo: each image builder, LiT, CSV + episodes,
--cache_teacher, and ITRA's three sample commands (paths replaced; tiny OpenCLIP config instead of RN50)."""
import csv
import json
import shlex

import numpy as np
import open_clip
import pytest
import torch

import clip
from cli.options import parse_args
from models.config import ModelConfig

TINY_TEXT = ("--text_encoder Transformer --text_width 32 --text_heads 2 --text_layers 1 --context_length 32 "
             "--embed_dim 16")
RUN = "--image_res 32 --workers 0 --val_workers 0 --no-progress --zs_dataset none --epochs 1 --batch_size_train 16"
TINY_OPENCLIP = "tiny-RN-test"  # a ModifiedResNet + text transformer small enough for CPU tests


@pytest.fixture(scope="module")
def demo(build_shapes, tmp_path_factory):
    """32 shapes pairs (JSON layout and the same pairs as an OpenCLIP-style TSV) and 20 retrieval images."""
    root = build_shapes("compose", 32, 20, 1, 32)
    entries = json.loads((root / "clip_train" / "cc3m_train_subset.json").read_text())
    tsv = root / "pairs.tsv"
    with tsv.open("w", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t")
        writer.writerow(["filepath", "title"])
        for entry in entries:
            writer.writerow([root / "datasets" / "cc3m_subset_100k" / entry["image"], entry["caption"]])
    config = tmp_path_factory.mktemp("openclip") / f"{TINY_OPENCLIP}.json"
    config.write_text(json.dumps({"embed_dim": 32, "vision_cfg": {"image_size": 32, "layers": [1, 1, 1, 1],
                                                                  "width": 8, "head_width": 16},
                                  "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2,
                                               "layers": 1}}))
    open_clip.add_model_config(config)
    return root


def data(root) -> str:
    return f"--data_path {root}/datasets --ann_path {root}/clip_train"


def run(command: str) -> int:
    return clip.main(shlex.split(command))


@pytest.mark.parametrize("model", [
    f"--image_encoder test_vit --image_head_layers 0 {TINY_TEXT}",  # embed_dim = the ViT's width
    f"--image_builder torchvision --image_encoder mobilenet_v2 --image_head_layers 2 --head_hidden_dim 32 --lock_image "
    f"{TINY_TEXT}",
    f"--image-model-builder OpenCLIP --image_encoder {TINY_OPENCLIP} --text_builder openclip "
    f"--text_encoder {TINY_OPENCLIP} --image_head_layers 0 --text_head_layers 0 --prompt --n-prompt 2",
], ids=["timm", "torchvision-lit", "openclip"])
def test_one_epoch_per_image_builder(demo, tmp_path, model):
    assert run(f"{data(demo)} {RUN} {model} --output_dir {tmp_path}") == 0
    record = json.loads((tmp_path / "log.txt").read_text().splitlines()[0])
    assert np.isfinite(record["train_loss"]) and 0 <= record["val_r_mean"] <= 100
    args = torch.load(tmp_path / "checkpoint_1.pth", weights_only=True)["args"]
    model_config = ModelConfig.from_args(parse_args(shlex.split(f"{data(demo)} {RUN} {model}"))[0], pretrained=False)
    assert run(f"{data(demo)} {RUN} {model} --evaluate --checkpoint {tmp_path}/checkpoint_1.pth "
               f"--output_dir {tmp_path}/eval") == 0  # the composed model is rebuilt from flags and loads strictly
    assert args["image_head_layers"] == model_config.image_head_layers


def test_csv_with_episodes_and_cache_teacher(demo, tmp_path):
    csv_flags = f"--train-data {demo}/pairs.tsv --episode-size 48 --dataset-size 30 --image_encoder test_vit {TINY_TEXT}"
    assert run(f"{data(demo)} {RUN} {csv_flags} --output_dir {tmp_path}/train") == 0
    assert json.loads((tmp_path / "train" / "args.json").read_text())["dataset_type"] == "csv"
    checkpoint = torch.load(tmp_path / "train" / "checkpoint_1.pth", weights_only=True)
    assert checkpoint["step"] == 48 // 16  # steps per epoch follow from the episode size
    cache = tmp_path / "teacher.npy"
    assert run(f"{data(demo)} {RUN} {csv_flags} --cache_teacher {cache} --output_dir {tmp_path}/cache") == 0
    table = np.load(cache)
    assert table.shape == (32, 16) and table.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(table[:30], axis=1), 1.0, rtol=1e-5)  # --train_size 30: rows 30, 31
    assert not table[30:].any() and not (tmp_path / "cache" / "checkpoint_1.pth").exists()


# ITRA's README sample commands, `torchrun ... -m training.main` replaced by clip.py and the S3 paths by the demo.
SEED_COMMANDS = [
    "--dataset-size 2500000 --episode-size 2500000 --train-data {tsv} --epochs 32 --save-frequency 32 "
    "--batch-size 64 --workers 8 --linear-frequency 1 --zeroshot-frequency 1 --retrieval-frequency 1 "
    "--nlp-eval-frequency 1 --eval-data-dir '/data/Datasets' --lr 5e-4 --warmup 2000 --wd 0.5 --max-grad-norm 5 "
    "--image-model 'RN50' --image-model-tag 'openai' --image-model-builder 'OpenCLIP' --image-head-n-layers 0 "
    "--text-model 'RN50' --text-model-tag 'openai' --text-model-builder 'OpenCLIP' --unlock-text-model "
    "--text-head-n-layers 0 --unlock-image-model --unlock-text-model --cache-dir 'cache/weights' "
    "--distiller 'InfoNCE' --report-to tensorboard --logs 'logs/codebase_test' --copy-codebase "
    "--name 'CLIP-from-scratch-bs512-CC2.5M-32ep'",
    "--dataset-size 2500000 --episode-size 0 --train-data {tsv} --epochs 28 --save-frequency 28 --batch-size 100 "
    "--workers 8 --linear-frequency 1 --zeroshot-frequency 1 --retrieval-frequency 1 --nlp-eval-frequency 1 "
    "--eval-data-dir '/data/Datasets' --lr 1e-4 --warmup 2000 --wd 0.5 --max-grad-norm 5 --image-model 'RN50' "
    "--image-model-tag 'openai' --image-model-builder 'OpenCLIP' --image-head-n-layers 0 --text-model 'RN50' "
    "--text-model-tag 'openai' --text-model-builder 'OpenCLIP' --unlock-text-model --text-head-n-layers 0 "
    "--unlock-image-model --pretrained-image-model --unlock-text-model --pretrained-text-model "
    "--cache-dir 'cache/weights' --distiller 'InfoNCE' --report-to tensorboard --logs 'logs/codebase_test' "
    "--copy-codebase --name 'U[RN50-h0]-U[CLIP-from-RN50]-bs800-8ep'",
    "--dataset-size 14000000 --episode-size 2000000 --train-data {tsv} --epochs 56 --save-frequency 56 "
    "--batch-size 128 --workers 8 --linear-frequency 1 --zeroshot-frequency 1 --retrieval-frequency 1 "
    "--nlp-eval-frequency 1 --eval-data-dir '/data/Datasets' --lr 1e-5 --warmup 2000 --wd 0.5 --max-grad-norm 5 "
    "--image-model 'mobilenet_v3_large' --image-model-builder 'torchvision' --image-head-n-layers 2 "
    "--text-model 'RN50' --text-model-tag 'openai' --text-model-builder 'openclip' --text-head-n-layers 0 "
    "--pretrained-image-model --lock-text-model --pretrained-text-model --cache-dir 'cache/weights' "
    "--distiller 'InfoNCE' --report-to tensorboard --logs 'logs/codebase_test' "
    "--name 'L[mobilenet_v3_large-h2]-L[CLIP-from-RN50]-bs1024-YFCC-8ep-lr1e-5'",
]


def test_seed_commands_resolve_as_itra_meant(demo):
    configs = [ModelConfig.from_args(parse_args(shlex.split(c.format(tsv=demo / "pairs.tsv")))[0])
               for c in SEED_COMMANDS]
    scratch, pretrained, lit = configs
    assert (scratch.image_builder, scratch.text_builder, scratch.image_head_layers, scratch.text_head_layers) == \
        ("openclip", "openclip", 0, 0)
    assert not (scratch.image_pretrained or scratch.text_pretrained or scratch.lock_image or scratch.lock_text)
    assert pretrained.image_pretrained is True and pretrained.text_pretrained is True
    assert (lit.image_builder, lit.image_encoder, lit.image_head_layers, lit.lock_text, lit.lock_image) == \
        ("torchvision", "mobilenet_v3_large", 2, True, False)
    args = parse_args(shlex.split(SEED_COMMANDS[2].format(tsv=demo / "pairs.tsv")))[0]
    assert (args.train_size, args.episode_size, args.lr, args.ita_type) == (14_000_000, 2_000_000, 1e-5, "clip")


TINY_RUN = ("--epochs 1 --batch-size 16 --workers 0 --dataset-size 32 --zs_dataset none --val_workers 0 "
            "--no-progress --image_res 32")


@pytest.mark.parametrize("index", [0, 1, 2])
def test_seed_commands_run_a_tiny_epoch_or_fail_cleanly(demo, tmp_path, index, capsys):
    command = SEED_COMMANDS[index].format(tsv=demo / "pairs.tsv")
    tail = f"{data(demo)} {TINY_RUN} --output_dir {tmp_path}" + (" --episode-size 32" if index != 1 else "")
    if index > 0:  # pretrained weights demanded (OpenAI's RN50, torchvision's MobileNetV3) are not on this machine
        assert run(f"{command} {tail}") == 1
        error = capsys.readouterr().err
        assert error.startswith("error: no local pretrained weights") and error.count("\n") == 1
        tail += " --image_pretrained false --text_pretrained false"
    assert run(f"{command.replace('RN50', TINY_OPENCLIP)} {tail}") == 0
