"""Training dataset of (image, caption) pairs read from ALBEF-style JSON arrays (clip_train/README.md)."""
import logging
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from torch.utils.data import Dataset

from dataset.annotations import read_json_array
from dataset.captions import pre_caption
from dataset.errors import DataError, missing_path_error
from dataset.images import load_rgb
from dataset.sample_rng import SampleKey, transform_sample

logger = logging.getLogger(__name__)

MAX_REPORTED = 5


class _Pair(NamedTuple):
    image_path: str
    caption: str
    image_index: int
    pair_index: int


def _problem(entry: Any, image_root: str) -> tuple[str | None, str]:
    """Return (reason, image path) for an unusable entry, (None, image path) for a good one."""
    if not isinstance(entry, dict):
        return f"entry is a {type(entry).__name__}, not an object", ""
    image, caption = entry.get("image"), entry.get("caption")
    if not isinstance(image, str) or not image:
        return "no 'image' path", ""
    path = os.path.join(image_root, image)
    if not isinstance(caption, str):
        return "no 'caption' string", path
    try:
        size = os.path.getsize(path)
    except OSError:
        return "image file missing", path
    if size == 0:
        return "image file empty", path
    return None, path


def _image_key(entry: Any) -> str | int | None:
    """The identity of an entry's image: `image_id` when usable, else the `image` path."""
    if not isinstance(entry, dict):
        return None
    key = entry.get("image_id")
    if isinstance(key, (str, int)) and not isinstance(key, bool):
        return key
    image = entry.get("image")
    return image if isinstance(image, str) else None


class ImageTextDataset(Dataset):
    """Image-caption pairs whose items are `(image_tensor, caption, image_index, pair_index)`.

    Fetched with a `SampleKey` (the training sampler's), the transform draws from RNGs seeded by the key's
    (seed, epoch) and the `pair_index`, so the augmentation does not depend on the worker that computes it;
    fetched with a plain index, it draws from the process's global RNGs.

    `pair_index` is the entry's position in the concatenation of `ann_files` and `image_index`
    the dense index of its `image_id` by first appearance; both count every entry, skipped ones
    included, so the ids keying per-sample loss state do not move when a file goes missing.
    Entries without `image`/`caption` or whose image file is missing or empty are skipped and
    counted (`strict=True` raises instead). `train_frac` keeps a prefix of the entries.
    """

    def __init__(self, ann_files: Sequence[str | Path] | str | Path, image_root: str | Path,
                 transform: Callable | None = None, max_words: int = 30, strict: bool = False,
                 train_frac: float = 1.0) -> None:
        if isinstance(ann_files, (str, Path)):
            ann_files = [ann_files]
        if not 0.0 < train_frac <= 1.0:
            raise ValueError(f"train_frac must be in (0, 1], got {train_frac}")
        self.image_root = str(image_root)
        if not os.path.isdir(self.image_root):
            raise missing_path_error("training image folder", self.image_root)
        self.transform = transform
        self.max_words = max_words

        sources = [(Path(path), read_json_array(path)) for path in ann_files]
        total = sum(len(entries) for _, entries in sources)
        self.num_samples = total
        kept = math.floor(train_frac * total)

        image_indices: dict[str | int, int] = {}
        self.pairs: list[_Pair] = []
        problems: list[str] = []
        pair_index = 0
        for ann_file, entries in sources:
            for position, entry in enumerate(entries):
                key = _image_key(entry)
                if key is not None:
                    image_indices.setdefault(key, len(image_indices))
                if pair_index < kept:
                    reason, path = _problem(entry, self.image_root)
                    if reason is None:
                        self.pairs.append(_Pair(path, entry["caption"], image_indices[key], pair_index))
                    else:
                        where = f"{ann_file}: entry {position}: {reason}" + (f" ({path})" if path else "")
                        if strict:
                            raise DataError(where)
                        problems.append(where)
                pair_index += 1
        self.num_images = len(image_indices)
        self.num_skipped = len(problems)
        if not self.pairs:
            names = ", ".join(str(path) for path, _ in sources)
            raise DataError(f"no usable training entries in {names} (images under {self.image_root})"
                            + (f"; first problem: {problems[0]}" if problems else ""))
        if problems:
            logger.warning("skipped %d unusable training entries, e.g. %s", len(problems),
                           "; ".join(problems[:MAX_REPORTED]))

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, key: SampleKey | int) -> tuple[Any, str, int, int]:
        pair = self.pairs[key.index if isinstance(key, SampleKey) else key]
        image = load_rgb(pair.image_path)
        if isinstance(key, SampleKey) and self.transform is not None:
            image = transform_sample(self.transform, image, key.seed, key.epoch, pair.pair_index)
        elif self.transform is not None:
            image = self.transform(image)
        return image, pre_caption(pair.caption, self.max_words), pair.image_index, pair.pair_index
