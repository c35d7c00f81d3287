"""Shard lists, key parsing and state sizing, and the demo builder's img2dataset shards."""
import json
import re
import tarfile

import pytest

from data_helpers import demo_settings
from dataset.demo.build import build, main
from dataset.demo.shards import Img2DatasetWriter, key_digits
from dataset.demo.writer import Layout
from dataset.errors import DataError
from dataset.webdataset_shards import expand_shards, sample_id, scan_state_size
from wds_helpers import jpeg, write_shards


def test_keys_follow_img2dataset_naming(tmp_path):
    assert key_digits(10_000) == 4 and key_digits(1000) == 3 and key_digits(10) == 1
    writer = Img2DatasetWriter(tmp_path, 10_000, failure_rate=0.0)
    assert writer.key(42 * 10_000 + 31) == "000420031"   # img2dataset keys: sample 31 of shard 42
    writer.close()


def test_brace_and_double_colon_lists_expand(tmp_path):
    for name in ("00000.tar", "00001.tar", "00002.tar"):
        (tmp_path / name).touch()
    urls = expand_shards(f"{tmp_path}/{{00000..00001}}.tar::{tmp_path}/00002.tar")
    assert [u.rsplit("/", 1)[1] for u in urls] == ["00000.tar", "00001.tar", "00002.tar"]
    with pytest.raises(DataError, match=r"1 of 4 shard\(s\) .* not found, e\.g\. .*00003\.tar"):
        expand_shards(f"{tmp_path}/{{00000..00003}}.tar")


def test_sample_ids_are_integer_keys_checked_against_the_state_size():
    assert sample_id("000420031", "s/00042.tar", 10**6) == 420031
    with pytest.raises(DataError, match=r"s/00042\.tar: sample key 000420031 .*--data_size 1000"):
        sample_id("000420031", "s/00042.tar", 1000)
    with pytest.raises(DataError, match="not an integer"):
        sample_id("img_7", "s/00000.tar", 1000)


def test_state_size_scan_finds_max_key_plus_one(tmp_path):
    shards = write_shards(tmp_path, num_shards=3)
    assert scan_state_size(expand_shards(shards.pattern)) == shards.data_size == max(shards.keys) + 1


def test_state_size_scan_stops_at_a_truncated_shard(tmp_path):
    with Img2DatasetWriter(tmp_path, 10, failure_rate=0.0) as writer:
        keys = [writer.add(jpeg(row), f"row {row}") for row in range(10)]
    data = (tmp_path / "00000.tar").read_bytes()
    (tmp_path / "00000.tar").write_bytes(data[: len(data) // 2])
    assert 0 < scan_state_size([str(tmp_path / "00000.tar")]) <= max(keys) + 1


def test_demo_builder_writes_img2dataset_shards_with_the_json_pairs(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["--source", "shapes", "--out", str(out), "--num_train", "60", "--num_val", "4",
                 "--num_zeroshot_per_class", "1", "--image_size", "32", "--format", "webdataset",
                 "--shard_size", "20"]) == 0
    printed = capsys.readouterr().out
    layout = Layout(out, webdataset=True)
    tars = sorted(p.name for p in layout.train_shards.glob("*.tar"))
    assert tars[0] == "00000.tar" and all(re.fullmatch(r"\d{5}\.tar", name) for name in tars)
    assert (layout.train_shards / "00000_stats.json").is_file()
    members, metadata = [], {}
    for name in tars:
        with tarfile.open(layout.train_shards / name) as tar:
            for member in tar:
                members.append(member.name)
                if member.name.endswith(".json"):
                    metadata[member.name[:-5]] = json.loads(tar.extractfile(member).read())
    keys = sorted(metadata)
    assert all(len(key) == 2 + 5 for key in keys)               # a = ⌈log10 20⌉ = 2 digits + 5 shard digits
    assert all({f"{k}.jpg", f"{k}.txt"} <= set(members) for k in keys)
    assert all(m["key"] == k and m["status"] == "success" and m["caption"] for k, m in metadata.items())
    ints = [int(k) for k in keys]
    assert len(ints) == 60 and ints != list(range(ints[0], ints[0] + 60))   # failed downloads leave gaps
    json_captions = [entry["caption"] for entry in json.loads(layout.train_json.read_text())]
    assert [metadata[k]["caption"] for k in keys] == json_captions
    pattern = re.search(r"--train-data '([^']+)'", printed).group(1)
    data_size = int(re.search(r"--data_size (\d+)", printed).group(1))
    assert len(expand_shards(pattern)) == len(tars) and data_size == scan_state_size(expand_shards(pattern))
    assert "--train-num-samples 60" in printed


def test_shards_are_part_of_the_build_only_when_asked(tmp_path):
    build(Layout(tmp_path), demo_settings(num_train=5))
    assert not Layout(tmp_path).train_shards.exists()
    counts, skipped = build(Layout(tmp_path, webdataset=True), demo_settings(num_train=5, shard_size=3))
    assert not skipped and counts["train_shard_samples"] == 5 and Layout(tmp_path).train_shards.is_dir()
