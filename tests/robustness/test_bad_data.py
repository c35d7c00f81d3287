"""Pathological training data ends clip.py with one line naming the file (or the flag that emptied the data), or
is skipped and counted; a run resumed over bad data keeps its checkpoint."""
import json
import shutil

from models.config import tiny_model_config
from models.tokenizer import MAX_CHARS_PER_TOKEN, cap_chars, create_tokenizer
from robustness_helpers import TINY, exit_status, fingerprint, load, the_error

ANNOTATIONS = "clip_train/cc3m_train_subset.json"
IMAGES = "datasets/cc3m_subset_100k"


def copy_of(shapes, tmp_path):
    """A writable copy of the tiny shapes data (its annotation file and training images)."""
    root = tmp_path / "data"
    shutil.copytree(shapes, root)
    return root


def flags_for(root) -> str:
    return f"--data_path {root}/datasets --ann_path {root}/clip_train {TINY}"


def test_deeply_nested_annotation_json_names_the_file(shapes, tmp_path, capsys):
    root = copy_of(shapes, tmp_path)
    (root / ANNOTATIONS).write_text("[" * 100_000 + "]" * 100_000)
    code = exit_status(f"{flags_for(root)} --epochs 1 --output_dir {tmp_path}/out")
    line = the_error(capsys.readouterr().err)
    assert code == 1 and f"{root / ANNOTATIONS}: JSON nested too deeply" in line


def test_an_undecodable_image_stops_a_resumed_run_naming_it_and_keeps_the_checkpoint(shapes, previous_run, tmp_path,
                                                                                   capsys):
    root = copy_of(shapes, tmp_path)
    first = json.loads((root / ANNOTATIONS).read_text())[0]["image"]
    (root / IMAGES / first).write_bytes(b"not an image at all")
    before = fingerprint(previous_run)
    code = exit_status(f"{flags_for(root)} --epochs 3 --output_dir {previous_run} --resume")
    line = the_error(capsys.readouterr().err)
    assert code == 1 and f"cannot load image {root / IMAGES / first}" in line
    assert fingerprint(previous_run) == before and load(previous_run / "checkpoint_last.pth")["epoch"] == 2


def test_missing_and_empty_images_are_skipped_and_counted(shapes, tmp_path, capsys):
    root = copy_of(shapes, tmp_path)
    entries = json.loads((root / ANNOTATIONS).read_text())
    (root / IMAGES / entries[0]["image"]).unlink()
    (root / IMAGES / entries[1]["image"]).write_bytes(b"")
    del entries[2]["caption"]
    (root / ANNOTATIONS).write_text(json.dumps(entries))
    assert exit_status(f"{flags_for(root)} --epochs 1 --output_dir {tmp_path}/out") == 0
    assert f"{len(entries) - 3} pairs (3 skipped)" in capsys.readouterr().out
    assert load(tmp_path / "out" / "checkpoint_last.pth")["epoch"] == 1


def test_a_giant_caption_word_is_cut_by_characters_before_bpe():
    """A 200,000-character word would take the BPE tokenizer seconds to minutes; the cap keeps 32 characters per
    context token, and captions shorter than the cap tokenise unchanged."""
    config = tiny_model_config()
    tokenizer = create_tokenizer(config)
    word = "".join(chr(ord("a") + (i * 7919) % 26) for i in range(200_000))
    limit = MAX_CHARS_PER_TOKEN * config.max_text_tokens
    assert [len(text) for text in cap_chars([word, "a dog"], config.max_text_tokens)] == [limit, 5]
    giant = tokenizer([word, "a red circle"])["input_ids"]
    assert giant.shape == (2, config.max_text_tokens)
    assert giant[0].count_nonzero() == config.max_text_tokens                 # the context is full, EOT last
    assert giant[0, -1] == tokenizer.tokenizer.eot_token_id
    assert giant[1].tolist() == tokenizer.tokenizer(["a red circle"], context_length=config.max_text_tokens)[0].tolist()
