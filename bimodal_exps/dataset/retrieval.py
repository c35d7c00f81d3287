"""COCO-style retrieval evaluation dataset: one entry per image with 1..N captions (clip_train/README.md)."""
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from dataset.annotations import read_json_array
from dataset.captions import pre_caption
from dataset.errors import DataError, missing_path_error
from dataset.images import load_rgb


def _resolve_image(image_root: str, image: str) -> str | None:
    """Join `image` to the root; fall back to its basename (Karpathy-style paths); None if absent."""
    for candidate in (os.path.join(image_root, image), os.path.join(image_root, os.path.basename(image))):
        if os.path.isfile(candidate):
            return candidate
    return None


class RetrievalDataset(Dataset):
    """Evaluation images with their captions flattened into `text`.

    `img2txt[i]` lists the caption indices of image i and `txt2img[j]` is the image of caption j.
    Items are `(image_tensor, image_index)`; captions are tokenised by the evaluation routine.
    Every entry must be usable (a missing image would silently change the metrics).
    """

    def __init__(self, ann_file: str | Path, image_root: str | Path,
                 transform: Callable | None = None, max_words: int = 30) -> None:
        self.image_root = str(image_root)
        if not os.path.isdir(self.image_root):
            raise missing_path_error("retrieval image folder", self.image_root)
        self.transform = transform
        self.image: list[str] = []
        self.text: list[str] = []
        self.img2txt: list[list[int]] = []
        self.txt2img: list[int] = []
        for index, entry in enumerate(read_json_array(ann_file)):
            where = f"{ann_file}: entry {index}"
            if not isinstance(entry, dict) or not isinstance(entry.get("image"), str):
                raise DataError(f"{where}: no 'image' path")
            captions = entry.get("caption")
            if isinstance(captions, str):
                captions = [captions]
            if not isinstance(captions, list) or not captions or not all(isinstance(c, str) for c in captions):
                raise DataError(f"{where}: 'caption' must be a string or a non-empty list of strings")
            path = _resolve_image(self.image_root, entry["image"])
            if path is None:
                raise DataError(f"{where}: image file missing: {os.path.join(self.image_root, entry['image'])}")
            self.image.append(path)
            self.img2txt.append(list(range(len(self.text), len(self.text) + len(captions))))
            self.txt2img.extend([len(self.image) - 1] * len(captions))
            self.text.extend(pre_caption(caption, max_words) for caption in captions)
        if not self.image:
            raise DataError(f"{ann_file}: no retrieval entries")

    def __len__(self) -> int:
        return len(self.image)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image = load_rgb(self.image[index])
        if self.transform is not None:
            image = self.transform(image)
        return image, index
