"""Shard lists and sample ids of img2dataset webdataset shards (README "Training from webdataset shards").

The id of a sample is the integer value of its img2dataset key (`000420031` -> 420031), never a slice
of the key string. Ids index the per-sample loss state, whose size is `--data_size` (the source
metadata size, which bounds the keys) or, without it, max key + 1 found by `scan_state_size`.
"""
from __future__ import annotations

import logging
import os
import tarfile

import webdataset as wds
from webdataset.tariterators import base_plus_ext

from dataset.errors import DataError

logger = logging.getLogger(__name__)

REMOTE_PREFIXES = ("pipe:", "http://", "https://", "s3://", "gs://")


def expand_shards(pattern: str) -> list[str]:
    """Brace-expand `pattern` (`::` separates several patterns); local shards must exist."""
    urls = wds.shardlists.expand_urls(pattern)
    if not urls:
        raise DataError(f"--train-data {pattern!r} names no shards")
    missing = [url for url in urls if not url.startswith(REMOTE_PREFIXES) and not os.path.isfile(url)]
    if missing:
        raise DataError(f"{len(missing)} of {len(urls)} shard(s) of --train-data not found, e.g. {missing[0]}")
    return urls


def sample_id(key: str, shard: str, data_size: int) -> int:
    """The integer value of an img2dataset key, checked against the state size."""
    try:
        value = int(key)
    except ValueError:
        raise DataError(f"{shard}: sample key {key!r} is not an integer (expected img2dataset keys)") from None
    if not 0 <= value < data_size:
        raise DataError(f"{shard}: sample key {key} = {value} is outside [0, --data_size {data_size}); "
                        "pass the source metadata size as --data_size")
    return value


def scan_state_size(urls: list[str]) -> int:
    """Max key + 1 over every member of every shard (used when --data_size is not given).

    Cost: one pass over the tar headers of all shards (a 512-byte header read and a seek per member,
    about three members per sample; no image data is read). Seconds for a few hundred local shards,
    minutes for CC12M-sized sets on network storage: pass --data_size there. Every rank scans.
    Keys are split from member names as webdataset groups them. A shard unreadable from some point on
    is scanned up to there: the training pipeline cannot read past that point either.
    """
    largest = -1
    for url in urls:
        if url.startswith(REMOTE_PREFIXES):
            raise DataError(f"cannot scan remote shard {url} for its keys; pass --data_size")
        try:
            with tarfile.open(url, "r:*") as tar:
                for member in tar:
                    key, _ = base_plus_ext(member.name)
                    if member.isfile() and key is not None:
                        largest = max(largest, sample_id(key, url, data_size=2**63 - 1))
        except (tarfile.TarError, OSError) as error:
            logger.warning("%s: unreadable from some point on (%s); keys after it are not counted", url, error)
    if largest < 0:
        raise DataError(f"no samples in the {len(urls)} shard(s) of --train-data")
    return largest + 1
