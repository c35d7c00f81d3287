"""CLIP_benchmark on a trained demo checkpoint, exported with export.py, reading the demo's sets in its webdataset
layout (clip_benchmark_data.py): its retrieval R@1/R@5 (through its CLI) and zero-shot top-1 (through its wds reader
and classifier functions) equal ours on the same preprocessed images."""
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch

import clip
from clip_benchmark_data import main as write_wds
from dataset.retrieval import RetrievalDataset
from dataset.transforms import build_zeroshot_transform
from engine.evaluation import evaluate_retrieval
from export import load_model, main as export
from models.factory import create_tokenizer

RES = 32
TINY = (f"--image_encoder test_resnet --image_res {RES} --text_encoder Transformer --text_width 32 --text_heads 2 "
        "--text_layers 1 --context_length 32 --embed_dim 16 --workers 0 --val_workers 0 --no-progress "
        "--batch_size_train 32 --warmup_epochs 0 --batch_size_test 64 --train_transform deterministic")


@pytest.fixture(scope="module")
def exported(build_shapes, tmp_path_factory):
    """(demo root, training output, exported model folder, wds root) for a 2-epoch demo run; images are 48 px
    and the model reads 32 px, so every set is resized on the way in."""
    root = build_shapes("shapes_clip_benchmark", 128, 24, 2, 48)
    tmp = tmp_path_factory.mktemp("clip_benchmark")
    data = f"--data_path {root}/datasets --ann_path {root}/clip_train"
    assert clip.main(shlex.split(f"{data} --output_dir {tmp}/run {TINY} --epochs 2")) == 0
    assert export(["--checkpoint", str(tmp / "run" / "checkpoint_last.pth"), "--out", str(tmp / "model")]) == 0
    assert write_wds(["--out", str(tmp / "wds"), "--coco_file", f"{root}/clip_train/coco_val.json",
                      "--coco_image_root", f"{root}/datasets/mscoco_val/mscoco_val2014_subset_5k",
                      "--zeroshot_folder", f"{root}/datasets/imagenet/val"]) == 0
    return root, tmp / "run", tmp / "model", tmp / "wds"


def clip_benchmark_cli(*args: str) -> dict:
    """`clip_benchmark eval ...` in a fresh process (offline, fp32 on CPU); its metrics."""
    output = Path(args[args.index("--output") + 1])
    command = [str(Path(sys.executable).parent / "clip_benchmark"), "eval", *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""})
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(output.read_text())["metrics"]


def test_wds_layout_is_what_clip_benchmark_reads(exported):
    from clip_benchmark.datasets.builder import build_dataset

    root, _, _, wds = exported
    retrieval = list(build_dataset("wds/retrieval", root=str(wds / "retrieval"), transform=None,
                                   task="zeroshot_retrieval"))
    ours = RetrievalDataset(f"{root}/clip_train/coco_val.json", f"{root}/datasets/mscoco_val/mscoco_val2014_subset_5k")
    assert [captions for _, captions in retrieval] == [[ours.text[j] for j in row] for row in ours.img2txt]
    assert np.array_equal(np.asarray(retrieval[0][0]), np.asarray(ours[0][0]))  # lossless: the pixels clip.py decodes
    zeroshot = build_dataset("wds/zeroshot", root=str(wds / "zeroshot"), transform=None,
                             task="zeroshot_classification")
    names = (Path(root) / "datasets/imagenet/val/classnames.txt").read_text().split("\n")
    assert zeroshot.classes == [name for name in names if name.strip()]
    assert all("{c}" in template for template in zeroshot.templates)
    assert sorted({label for _, label in zeroshot}) == list(range(len(zeroshot.classes)))


def test_clip_benchmark_cli_retrieval_equals_ours(exported, tmp_path):
    root, _, model_dir, wds = exported
    metrics = clip_benchmark_cli("--model", f"local-dir:{model_dir}", "--dataset", "wds/retrieval",
                                 "--dataset_root", f"{wds}/{{dataset}}", "--task", "zeroshot_retrieval",
                                 "--recall_k", "1", "5", "--batch_size", "16", "--num_workers", "0", "--no_amp",
                                 "--output", str(tmp_path / "retrieval.json"))
    # CLIP_benchmark preprocesses with the exported preprocess_cfg (= our zero-shot transform); clip.py's
    # retrieval evaluation resizes to a square instead, so ours is evaluated here with that same transform.
    cfg, model = load_model(str(model_dir.parent / "run" / "checkpoint_last.pth"))
    dataset = RetrievalDataset(f"{root}/clip_train/coco_val.json",
                               f"{root}/datasets/mscoco_val/mscoco_val2014_subset_5k", build_zeroshot_transform(RES))
    ours = evaluate_retrieval(model, create_tokenizer(cfg), dataset, torch.device("cpu"), batch_size=16, workers=0)
    for k in (1, 5):  # CLIP_benchmark averages in float32: rel 1e-6 is far below one hit (1/24 or 1/120)
        assert 100 * metrics[f"text_retrieval_recall@{k}"] == pytest.approx(ours[f"txt_r{k}"], rel=1e-6)
        assert 100 * metrics[f"image_retrieval_recall@{k}"] == pytest.approx(ours[f"img_r{k}"], rel=1e-6)
    assert 0 < ours["txt_r5"] < 100  # a trained model that neither fails nor saturates: equality means something


def test_clip_benchmark_zeroshot_equals_clip_py(exported):
    """clip-benchmark 1.6.2's `zeroshot_classification` CLI task (and its `evaluate`) fail under numpy >= 2.4 in its
    own `accuracy()`; the model-facing parts it runs before that are used here: its wds reader, its DataLoader
    set-up, `zero_shot_classifier` and `run_classification`."""
    from clip_benchmark.datasets.builder import build_dataset
    from clip_benchmark.metrics import zeroshot_classification

    _, run, model_dir, wds = exported
    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{model_dir}")
    tokenizer = open_clip.get_tokenizer(f"local-dir:{model_dir}")
    dataset = build_dataset("wds/zeroshot", root=str(wds / "zeroshot"), transform=preprocess,
                            task="zeroshot_classification")
    loader = torch.utils.data.DataLoader(dataset.batched(16), batch_size=None, shuffle=False, num_workers=0)
    classifier = zeroshot_classification.zero_shot_classifier(model.eval(), tokenizer, dataset.classes,
                                                              dataset.templates, "cpu", amp=False)
    logits, target = zeroshot_classification.run_classification(model, classifier, loader, "cpu", amp=False)
    top1 = 100 * (logits.argmax(dim=1) == target).double().mean().item()
    # clip.py's own zero-shot evaluation (log.txt, last epoch) uses the transform the export writes as preprocess_cfg
    logged = json.loads((run / "log.txt").read_text().splitlines()[-1])
    assert top1 == pytest.approx(logged["zeroshot_top1"], abs=1e-9)
