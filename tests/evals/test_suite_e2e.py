"""clip.py with the evaluation suite on the tiny `shapes` demo: scheduling, outputs, skipped and absent data."""
import json
import shlex

import pytest

import clip

TINY = ("--image_encoder test_resnet --image_res 32 --text_encoder Transformer --text_width 32 --text_heads 2 "
        "--text_layers 1 --context_length 32 --embed_dim 16 --workers 0 --val_workers 0 --no-progress "
        "--batch_size_train 32 --warmup_epochs 0 --batch_size_test 64")
IMAGE_KEYS = ("linear_zeroshot_top1", "linear_zeroshot_best_top1", "knn_zeroshot_top1", "cluster_zeroshot_ami",
              "cluster_zeroshot_nmi", "cluster_zeroshot_ari")


@pytest.fixture(scope="module")
def shapes(build_shapes):
    return build_shapes("shapes_suite", 128, 20, 4, 32)


def run(root, out, extra: str) -> int:
    return clip.main(shlex.split(f"--data_path {root}/datasets --ann_path {root}/clip_train --output_dir {out} "
                                 f"{TINY} {extra}"))


def records(out) -> list[dict]:
    return [json.loads(line) for line in (out / "log.txt").read_text().splitlines()]


@pytest.fixture(scope="module")
def trained(shapes, tmp_path_factory):
    out = tmp_path_factory.mktemp("trained")
    assert run(shapes, out, "--epochs 2 --eval_suite retrieval,linear --eval_first --linear_freq 2 "
                            "--retrieval_freq 1 --linear_prob_mode sklearn") == 0
    return out


def test_training_schedule_eval_first_and_per_family_frequency(trained):
    before, first, last = records(trained)
    assert before["epoch"] == -1 and first["epoch"] == 0 and last["epoch"] == 1
    assert "val_r_mean" in before and "linear_zeroshot_top1" in before  # --eval_first runs every family
    assert "val_r_mean" in first and "linear_zeroshot_top1" not in first  # linear every 2 epochs
    assert all(key in last for key in ("val_r_mean", "linear_zeroshot_top1", "knn_zeroshot_top1"))
    assert "linear_zeroshot_best_top1" not in last  # sklearn mode has no per-epoch best
    saved = json.loads((trained / "eval_results.json").read_text())
    assert saved["epoch"] == 2 and saved["metrics"]["knn_zeroshot_top1"] == last["knn_zeroshot_top1"]


def test_evaluate_full_suite_writes_every_family_everywhere(shapes, trained, tmp_path, capsys):
    linear = tmp_path / "probe"
    linear.mkdir()
    for split in ("train", "val"):  # the unimodal demo folders' layout (train/ + val/)
        (linear / split).symlink_to(shapes / "datasets" / "imagenet" / "val")
    assert run(shapes, tmp_path / "eval", f"--evaluate --checkpoint {trained}/checkpoint_2.pth --eval_suite full "
                                          f"--word_sim_templates none --knn_k 1 --linear_datasets "
                                          f"folders:{linear},demo:{shapes}/datasets/demo_linear") == 0
    console = capsys.readouterr().out
    assert "--elevater_root (not given) not found: skipping ELEVATER" in console
    metrics = json.loads((tmp_path / "eval" / "eval_results.json").read_text())["metrics"]
    expected = ("r_mean", "zeroshot_top1", *IMAGE_KEYS, "knn_folders_top1", "linear_folders_top1", "knn_demo_top1",
                "cluster_demo_ami",
                "wordsim_ws353", "wordsim_simlex999", "lee_pearson", "lee_spearman", "caption_ir_mrr10",
                "caption_ir_ndcg10", "caption_triplet_acc")
    assert all(key in metrics for key in expected), sorted(metrics)
    assert metrics["knn_folders_top1"] == 100.0  # train = test, k = 1: each image is its own neighbour
    assert all(-100.0 <= metrics[key] <= 100.0 for key in expected)
    assert records(tmp_path / "eval")[-1]["lee_pearson"] == metrics["lee_pearson"]
    assert all(f"| {key} " in console for key in ("knn_folders_top1", "wordsim_ws353", "cluster_zeroshot_nmi"))


def test_absent_data_is_skipped_with_one_line_and_no_data_at_all_is_an_error(shapes, trained, tmp_path, capsys):
    checkpoint = f"--evaluate --checkpoint {trained}/checkpoint_2.pth"
    assert run(shapes, tmp_path / "a", f"{checkpoint} --coco_image_root {tmp_path}/none") == 0
    out = capsys.readouterr().out
    assert f"{tmp_path}/none not found: skipping retrieval evaluation" in out
    assert "zeroshot_top1" in json.loads((tmp_path / "a" / "eval_results.json").read_text())["metrics"]
    assert run(shapes, tmp_path / "b", f"{checkpoint} --eval_suite retrieval --coco_image_root {tmp_path}/none") == 1
    error = capsys.readouterr().err.strip().splitlines()
    assert error == ["error: --evaluate: no evaluation data found for --eval_suite retrieval (see the lines above)"]


def test_elevater_runner_scores_each_dataset_with_its_metric(shapes, trained, tmp_path):
    root = tmp_path / "elevater"
    for name in ("cifar-10", "oxford-iiit-pets"):
        (root / name).mkdir(parents=True)
        (root / name / "test").symlink_to(shapes / "datasets" / "imagenet" / "val")  # class folders + names/templates
    assert run(shapes, tmp_path / "eval", f"--evaluate --checkpoint {trained}/checkpoint_2.pth --eval_suite elevater "
                                          f"--elevater_root {root}") == 0
    metrics = json.loads((tmp_path / "eval" / "eval_results.json").read_text())["metrics"]
    assert sorted(metrics) == ["elevater_cifar-10_accuracy", "elevater_oxford-iiit-pets_mean_per_class",
                               "elevater_zeroshot_mean"]
    # balanced classes: mean-per-class accuracy equals accuracy on the same images
    assert metrics["elevater_cifar-10_accuracy"] == pytest.approx(metrics["elevater_oxford-iiit-pets_mean_per_class"])
