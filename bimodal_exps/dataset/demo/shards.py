"""Writes image-caption pairs as img2dataset-style webdataset shards (README "Training from webdataset shards").

`<root>/00000.tar, 00001.tar, ...` (5-digit names), each holding `<key>.jpg`, `<key>.txt` and
`<key>.json` per sample, plus `<shard>_stats.json`. Rows of the (virtual) source URL list are cut into
shards of `shard_size` rows; the key of row r is shard·10^a + position (a = ⌈log10 shard_size⌉),
printed with a + 5 digits, exactly as img2dataset names them. Failed downloads leave their row's key
unused, so keys are sparse: `skip()` marks one row failed, and `failure_rate` fails rows at random
(seeded, so a build is a function of its settings).
"""
from __future__ import annotations

import io
import json
import math
import random
import tarfile
from pathlib import Path
from types import TracebackType
from typing import NamedTuple

SHARD_NAME_WIDTH = 5
FAILURE_RATE = 0.05
FAILURE_SEED = 0


class ShardSummary(NamedTuple):
    """What a writer produced: shard count, samples written, and the key bound (`--data_size`)."""

    shards: int
    samples: int
    data_size: int


def key_digits(shard_size: int) -> int:
    """a = ⌈log10(samples per shard)⌉, the digits of the position inside a shard (img2dataset)."""
    return math.ceil(math.log10(shard_size))


class Img2DatasetWriter:
    """Stream pairs into shards; use as a context manager (closing writes the last shard's stats)."""

    def __init__(self, root: Path, shard_size: int, failure_rate: float = FAILURE_RATE,
                 seed: int = FAILURE_SEED) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.shard_size = shard_size
        self.position_digits = key_digits(shard_size)
        self.failure_rate = failure_rate
        self._rng = random.Random(seed)
        self._row = 0
        self._shard = -1
        self._tar: tarfile.TarFile | None = None
        self._stats = {"count": 0, "successes": 0, "failed_to_download": 0}
        self.samples = 0

    def key(self, row: int) -> str:
        """The img2dataset key string of source row `row`."""
        shard, position = divmod(row, self.shard_size)
        return f"{shard * 10 ** self.position_digits + position:0{self.position_digits + SHARD_NAME_WIDTH}d}"

    def skip(self) -> None:
        """The next row failed to download: its key stays unused."""
        self._enter_row()
        self._stats["failed_to_download"] += 1
        self._row += 1

    def add(self, image: bytes, caption: str, size: tuple[int, int] | None = None, extension: str = "jpg") -> int:
        """Write one sample (image bytes as given, even corrupt ones) at the next row; return its integer key."""
        while self.failure_rate and self._rng.random() < self.failure_rate:
            self.skip()
        self._enter_row()
        key = self.key(self._row)
        width, height = size or (None, None)
        metadata = {"key": key, "caption": caption, "status": "success", "url": f"demo://{key}.{extension}",
                    "width": width, "height": height, "original_width": width, "original_height": height,
                    "error_message": None}
        self._add_member(f"{key}.{extension}", image)
        self._add_member(f"{key}.txt", caption.encode("utf-8"))
        self._add_member(f"{key}.json", json.dumps(metadata).encode("utf-8"))
        self._stats["successes"] += 1
        self._row += 1
        self.samples += 1
        return int(key)

    def close(self) -> ShardSummary:
        """Finish the open shard; the key bound is the last row's key + 1 (the metadata size)."""
        self._finish_shard()
        data_size = int(self.key(self._row - 1)) + 1 if self._row else 0
        return ShardSummary(shards=self._shard + 1, samples=self.samples, data_size=data_size)

    def __enter__(self) -> Img2DatasetWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    def _enter_row(self) -> None:
        """Open the shard that the current row belongs to (an all-failed shard is still written, empty)."""
        shard = self._row // self.shard_size
        while self._shard < shard:
            self._finish_shard()
            self._shard += 1
            self._tar = tarfile.open(self.root / f"{self._shard:0{SHARD_NAME_WIDTH}d}.tar", "w",
                                     format=tarfile.USTAR_FORMAT)
        self._stats["count"] += 1

    def _add_member(self, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = len(data), 0, 0o644
        self._tar.addfile(info, io.BytesIO(data))

    def _finish_shard(self) -> None:
        if self._tar is None:
            return
        self._tar.close()
        self._tar = None
        stats_path = self.root / f"{self._shard:0{SHARD_NAME_WIDTH}d}_stats.json"
        stats_path.write_text(json.dumps(self._stats) + "\n", encoding="utf-8")
        self._stats = {"count": 0, "successes": 0, "failed_to_download": 0}
