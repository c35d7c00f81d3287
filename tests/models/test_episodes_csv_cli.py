"""Episodic sampling, CSV/TSV training files, and the composition flags (ITRA spellings, contradictions)."""
import shlex

import numpy as np
import pytest
from PIL import Image

from cli.options import UsageError, parse_args
from dataset.csv_pairs import CSVReader
from dataset.episodes import EpisodicSampler, episode_ids
from dataset.errors import DataError
from dataset.image_text import ImageTextDataset
from models.config import ModelConfig


def _epoch(sampler, epoch, start=0):
    sampler.set_epoch(epoch)
    sampler.start_at_batch(start)
    return [key.index for key in sampler]


def test_episode_is_seeded_by_seed_and_epoch_with_replacement():
    a, b = episode_ids(3, 1, 50, 200), episode_ids(3, 1, 50, 200)
    assert np.array_equal(a, b) and len(a) == 200 and a.min() >= 0 and a.max() < 50
    assert len(np.unique(a)) < len(a)  # with replacement: 200 draws from 50 ids repeat
    assert not np.array_equal(a, episode_ids(3, 2, 50, 200)) and not np.array_equal(a, episode_ids(4, 1, 50, 200))


def test_ranks_share_one_episode_and_a_resume_continues_it(capsys):
    ranks = [EpisodicSampler(40, 32, batch_size=4, num_replicas=2, rank=r, shuffle=True, seed=7, drop_last=True)
             for r in range(2)]
    epochs = [_epoch(sampler, 5) for sampler in ranks]
    assert all(len(ids) == 16 for ids in epochs) and len(ranks[0]) == 16
    assert sorted(epochs[0] + epochs[1]) == sorted(episode_ids(7, 5, 40, 32).tolist())
    resumed = EpisodicSampler(40, 32, batch_size=4, num_replicas=2, rank=1, shuffle=True, seed=7, drop_last=True)
    assert _epoch(resumed, 5, start=2) == epochs[1][8:]
    assert _epoch(ranks[0], 6) != epochs[0]
    distinct = len(set(episode_ids(7, 6, 40, 32).tolist()))
    assert capsys.readouterr().out.splitlines()[-1] == f"epoch 6: episode of 32 draws, {distinct} distinct of 40 pairs"
    assert np.array_equal(ranks[0].episode(5), episode_ids(7, 5, 40, 32))  # any epoch's, asked by number


def test_csv_rows_are_pairs_and_missing_columns_name_the_flags(tmp_path):
    for index in range(3):
        Image.new("RGB", (8, 8), (index * 60, 0, 0)).save(tmp_path / f"{index}.png")
    (tmp_path / "pairs.csv").write_text("title,filepath\na red,0.png\n\"a, comma\",missing.png\nlast,2.png\n")
    dataset = ImageTextDataset([tmp_path / "pairs.csv"], tmp_path, reader=CSVReader(separator=","))
    assert len(dataset) == 2 and dataset.num_skipped == 1 and dataset.num_samples == 3
    assert dataset[0][1:] == ("a red", 0, 0) and dataset[1][3] == 2  # pair id = row; skipped rows keep theirs
    with pytest.raises(DataError, match="no column 'image'.*--csv_img_key"):
        CSVReader(img_key="image", separator=",")(tmp_path / "pairs.csv")


def _args(command: str):
    return parse_args(shlex.split(command))


def test_itra_spellings_map_to_our_flags():
    args, notes = _args("--image-model-builder OpenCLIP --image-model RN50 --image-head-n-layers 0 "
                        "--text-model-builder huggingface --text-model m --text-pooler cls_before_pooler "
                        "--text-head-n-layers 2 --lock-text-model --unlock-image-model --pretrained-image-model "
                        "--image-resolution 96 --max-seq-length 20 --joint-projection-dim 64 --batch-size 8 --wd 0.5 "
                        "--max-grad-norm 5 --warmup 2000 --distiller InfoNCE --dataset-size 100 --episode-size 50 "
                        "--train-data x.tsv --report-to tensorboard --zs_dataset none")
    cfg = ModelConfig.from_args(args)
    assert (cfg.image_builder, cfg.image_encoder, cfg.image_head_layers) == ("openclip", "RN50", 0)
    assert (cfg.text_builder, cfg.text_encoder, cfg.text_pooler, cfg.text_head_layers) == ("hf", "m", "cls", 2)
    assert cfg.lock_text and not cfg.lock_image and cfg.image_pretrained is True and cfg.text_pretrained is False
    assert (cfg.image_res, cfg.text_max_len, cfg.embed_dim) == (96, 20, 64)
    assert (args.batch_size_train, args.weight_decay, args.grad_clip) == (8, 0.5, 5.0)
    assert (args.warmup_steps, args.lr_schedule, args.ita_type) == (2000, "step", "clip")
    assert (args.train_size, args.episode_size, args.dataset_type, args.teacher) == (100, 50, "csv", "text")
    assert args.report_to == ("tensorboard",) and not any("--report-to" in note for note in notes)
    assert not any("--warmup" in note and "no effect" in note for note in notes)


@pytest.mark.parametrize("command, message", [
    ("--lock-text-model --unlock-text-model", "--lock_text and --unlock-text-model contradict"),
    ("--distiller SwAV", "--loss SwAV: unknown loss"),
    ("--distiller InfoNCE --ita_type sogclr", "--ita_type sogclr was given"),
    ("--episode_size 8 --dataset_type webdataset --train-data a.tar --train-num-samples 8", "indexable"),
])
def test_contradictions_are_one_line_usage_errors(command, message):
    with pytest.raises(UsageError, match=message):
        _args(command)
