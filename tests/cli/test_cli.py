"""The flag contract: the reference commands parse verbatim, flags mean what they say, both spellings, configs, clear errors."""
import re
import shlex

import pytest

from cli.options import UsageError, parse_args

SEED_000_TRAIN = """--data_path ./datasets --ann_path ./clip_train --train_file cc3m_train_subset.json
--train_image_root cc3m_subset_100k/ --output_dir ../output/ --init_model --use_amp --ita_type isogclr_new
--tau_init 0.01 --sogclr_gamma 0.8 --rho_init 6.0 --eta_init 0.03 --sched cosine --no-distributed --epochs 30"""

SEED_002_TRAIN = """--train-data '/data/cc12m/{00000..01242}.tar' --train-num-samples 9184307 --data_size 12423374
--dataset_type webdataset --data_path /data/cc12m --data cc12m --train_file cc12m.json --train_image_root cc12m
--val_coco_file /data/coco_val.json --output_dir output/x --use_amp --init_model --image_encoder ViT
--text_encoder Transformer --epochs 33 --lr 0.0008 --lr_temp_net 3e-5 --rho 9.5 --train_frac 1.0
--zs_dataset imagenet --zs_datafolder /data/imagenet/val --ita_type isogclr_tempnet --batch_size_train 512
--world_size 8 --distributed True --warmup_epochs 20 --workers 2 --seed 2024 --image_res 224
--sogclr_gamma 0.8 --embed_dim 512"""


def parse(command: str):
    return parse_args(shlex.split(command))


def test_seed_000_train_and_eval_commands_parse_with_their_meaning():
    args, notes = parse(SEED_000_TRAIN)
    assert args.ita_type == "isogclr_new" and args.rho_init == 6.0 and args.eta_init == 0.03
    assert args.distributed is False and args.epochs == 30 and args.use_amp and args.init_model
    assert args.train_files == ["./clip_train/cc3m_train_subset.json"]
    assert args.train_image_dir == "./datasets/cc3m_subset_100k/"
    assert args.val_coco_file == "./clip_train/coco_val.json"
    assert args.zs_datafolder == "./datasets/imagenet/val"
    assert not any("rho_init" in note or "eta_init" in note for note in notes)
    evaluate, _ = parse(SEED_000_TRAIN + " --evaluate --checkpoint ../checkpoint_30.pth")
    assert evaluate.evaluate and evaluate.checkpoint == "../checkpoint_30.pth"


def test_spec_spellings_of_the_retrieval_file_and_the_state_size():
    args, _ = parse("--coco_file /x/coco_test.json --state_size 12")
    assert args.val_coco_file == "/x/coco_test.json" and args.data_size == 12


def test_cifar_zero_shot_defaults_to_torchvision_root_under_data_path():
    args, _ = parse("--data_path /data --zs_dataset cifar100 --zs_norm legacy")
    assert args.zs_dataset == "cifar100" and args.zs_datafolder == "/data" and args.zs_norm == "legacy"
    assert parse("--data_path /data --zs_dataset cifar10 --zs_datafolder /c")[0].zs_datafolder == "/c"


def test_seed_002_command_parses_with_its_webdataset_flags():
    args, notes = parse(SEED_002_TRAIN)
    assert args.dataset_type == "webdataset" and args.train_data == "/data/cc12m/{00000..01242}.tar"
    assert args.train_num_samples == 9184307 and args.data_size == 12423374 and not args.dataset_resampled
    assert args.distributed is True and args.world_size == 8 and args.workers == 2 and args.seed == 2024
    assert args.batch_size_train == 512 and args.ita_type == "isogclr_tempnet" and args.data == "cc12m"
    assert args.val_coco_file == "/data/coco_val.json" and args.image_res == 224 and args.embed_dim == 512
    assert not any("train_frac" in note for note in notes)


@pytest.mark.parametrize("flags, message", [
    ("--dataset_type webdataset --train-num-samples 10", "needs --train-data"),
    ("--dataset_type webdataset --train-data 'a/{0..3}.tar'", "needs --train-num-samples"),
    ("--ita_type simreg --loss_tile 8", "--loss_tile is not supported by --ita_type simreg"),
])
def test_webdataset_and_scale_flags_are_validated(flags, message):
    with pytest.raises(UsageError, match=message):
        parse(flags)


@pytest.mark.parametrize("flags, message", [
    ("--dataset_type webdataset --train-data a.tar --train-num-samples 0", "--train-num-samples.*must be >= 1"),
    ("--dataset_type webdataset --train-data a.tar --train-num-samples 5 --data_size -1", "--data_size.*must be >= 1"),
])
def test_webdataset_sizes_are_range_checked_by_argparse(flags, message, capsys):
    with pytest.raises(SystemExit) as info:
        parse(flags)
    assert info.value.code == 2 and re.search(message, capsys.readouterr().err)


@pytest.mark.parametrize("flags, message", [
    ("--epochs 4 --lit_start_epoch 5", "^--lit_start_epoch 5 is after the last epoch"),
    ("--epochs 4 --text-end-epoch 5", "^--text_end_epoch 5 is after the end of training"),
    ("--epochs 4 --text_start_epoch 4", "^--text_start_epoch 4 must be before --text_end_epoch 4"),
    ("--epochs 6 --text-start-epoch 3 --text_end_epoch 3", "^--text_start_epoch 3 must be before"),
])
def test_the_asymmetric_schedule_epochs_are_validated(flags, message):
    with pytest.raises(UsageError, match=message):
        parse(flags)


def test_the_asymmetric_schedule_takes_both_spellings():
    args = parse("--epochs 6 --lit-start-epoch 4 --lr-text 1e-4 --text-start-epoch 1 --text-end-epoch 5")[0]
    assert (args.lit_start_epoch, args.lr_text, args.text_start_epoch, args.text_end_epoch) == (4, 1e-4, 1, 5)
    assert parse("--epochs 6 --lit_start_epoch 6 --text_end_epoch 6")[0].lit_start_epoch == 6


def test_auto_dataset_type_follows_the_shard_extension():
    assert parse("--dataset_type auto --train-data 's/{00..09}.tar' --train-num-samples 9")[0].dataset_type == \
        "webdataset"
    assert parse("--dataset_type auto")[0].dataset_type == "json"
    assert parse("--dataset-resampled --dataset_type auto --train-data x.tar --train_num_samples 1")[0].dataset_resampled


@pytest.mark.parametrize("flag, expected", [
    ("", None), ("--distributed", True), ("--distributed True", True), ("--distributed False", False),
    ("--distributed 1", True), ("--distributed 0", False), ("--distributed yes", True), ("--distributed no", False),
    ("--no-distributed", False), ("--no_distributed", False)])
def test_distributed_flag_forms(flag, expected):
    args, _ = parse(f"--ita_type clip {flag}")
    assert args.distributed is expected


def test_distributed_rejects_a_non_boolean_word(capsys):
    with pytest.raises(SystemExit):
        parse("--distributed maybe")
    assert "expected a boolean" in capsys.readouterr().err


def test_both_spellings_of_multi_word_flags():
    a, _ = parse("--batch_size_train 7 --train_num_samples 5 --image-res 96")
    b, _ = parse("--batch-size-train 7 --train-num-samples 5 --image_res 96")
    assert (a.batch_size_train, a.train_num_samples, a.image_res) == (b.batch_size_train, b.train_num_samples,
                                                                      b.image_res) == (7, 5, 96)


def test_unknown_ita_type_lists_the_choices(capsys):
    with pytest.raises(SystemExit) as info:
        parse("--ita_type new_isogclr")
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'new_isogclr'" in err and "sogclr_dro" in err and "isogclr_tempnet" in err


def test_a_flag_the_loss_does_not_use_is_named_in_a_warning():
    _, notes = parse("--ita_type clip --rho_init 6.0")
    assert any("--rho_init" in note and "clip" in note for note in notes)


def test_compatibility_flags_parse_and_are_reported():
    _, notes = parse("--k_test 128 --vision_width 512")
    assert any("--k_test" in note and "--vision_width" in note for note in notes)


def test_unsupported_flag_is_a_usage_error():
    with pytest.raises(UsageError, match="personalized_tau"):
        parse("--personalized_tau")


def test_yaml_config_sets_defaults_and_flags_override(tmp_path):
    config = tmp_path / "demo.yaml"
    config.write_text("epochs: 3\nbatch-size-train: 16\nimage_encoder: test_vit\n")
    args, _ = parse(f"--config {config} --epochs 5")
    assert (args.epochs, args.batch_size_train, args.image_encoder) == (5, 16, "test_vit")
    config.write_text("epochz: 3\n")
    with pytest.raises(UsageError, match="unknown keys epochz"):
        parse(f"--config {config}")


def test_yaml_config_inherits_its_base_and_overrides_it(tmp_path):
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "root.yaml").write_text("epochs: 3\nlr: 0.5\nweight_decay: 0.2\n")
    (tmp_path / "mid.yaml").write_text("base: shared/root.yaml\nlr: 0.25\n")
    (tmp_path / "leaf.yaml").write_text("base: mid.yaml\nepochs: 4\n")
    args, _ = parse(f"--config {tmp_path / 'leaf.yaml'} --weight_decay 0.1")
    assert (args.epochs, args.lr, args.weight_decay) == (4, 0.25, 0.1)
    (tmp_path / "shared" / "root.yaml").write_text("base: ../leaf.yaml\n")
    with pytest.raises(UsageError, match="base ../leaf.yaml includes itself"):
        parse(f"--config {tmp_path / 'leaf.yaml'}")
    (tmp_path / "mid.yaml").write_text("base: [a.yaml]\n")
    with pytest.raises(UsageError, match="base must name one YAML file"):
        parse(f"--config {tmp_path / 'leaf.yaml'}")
    (tmp_path / "mid.yaml").write_text("base: missing.yaml\n")
    with pytest.raises(UsageError, match=r"mid.yaml: base missing.yaml not found \(looked for .*missing.yaml\)$"):
        parse(f"--config {tmp_path / 'leaf.yaml'}")
    (tmp_path / "mid.yaml").write_text("base: shared/root.yaml\n")
    (tmp_path / "shared" / "root.yaml").write_text("epochs: 3\nno_such_flag: 1\n")
    with pytest.raises(UsageError, match=r"root.yaml: unknown keys no_such_flag$"):
        parse(f"--config {tmp_path / 'leaf.yaml'}")


def test_resume_without_a_path_means_the_last_checkpoint_of_the_output_dir():
    args, _ = parse("--output_dir out/run --resume")
    assert args.resume == "out/run/checkpoint_last.pth"


def test_evaluate_without_checkpoint_is_a_usage_error():
    with pytest.raises(UsageError, match="--checkpoint"):
        parse("--evaluate")
