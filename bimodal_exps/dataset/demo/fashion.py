"""Fashion-MNIST demo source (Debian package `dataset-fashion-mnist`), real 28x28 product images.

Training pairs are 2x2 mosaics of 1-3 training-split items captioned by position with class
synonyms, plus ~20% single full-frame items. Retrieval images (same distribution, 5 captions
each) and the 10-way zero-shot images (single items) come from disjoint parts of the test split.
"""
import gzip
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from dataset.demo.grammar import join_phrases, pick
from dataset.errors import DataError

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
DEBIAN_PACKAGE = "dataset-fashion-mnist"
SPLIT_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
               "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}
# Class names in label order (zero-shot) and the noun phrases captions use for them.
CLASSNAMES = ("t-shirt", "pair of trousers", "pullover", "dress", "coat",
              "sandal", "shirt", "sneaker", "bag", "ankle boot")
SYNONYMS = (
    ("a t-shirt", "a tee", "a top"),
    ("a pair of trousers", "a pair of pants", "some trousers"),
    ("a pullover", "a sweater", "a jumper"),
    ("a dress", "a frock", "a gown"),
    ("a coat", "a jacket", "an overcoat"),
    ("a sandal", "a summer sandal", "an open shoe"),
    ("a shirt", "a button-up shirt", "a blouse"),
    ("a sneaker", "a trainer", "a running shoe"),
    ("a bag", "a handbag", "a purse"),
    ("an ankle boot", "a boot", "a short boot"),
)
QUADRANT_PHRASES = {
    (0, 0): ("in the top left", "at the top left", "in the upper left corner"),
    (0, 1): ("in the top right", "at the top right", "in the upper right corner"),
    (1, 0): ("in the bottom left", "at the bottom left", "in the lower left corner"),
    (1, 1): ("in the bottom right", "at the bottom right", "in the lower right corner"),
}
MOSAIC_PREFIXES = ("", "", "a grid with ", "a collage of ", "a mosaic of ")
SINGLE_PREFIXES = ("", "a photo of ", "a picture of ", "a close up of ")
TEMPLATES = ("a photo of the {}.", "a picture of the {}.", "a close up of the {}.",
             "the {} on a dark background.", "a low resolution photo of the {}.")
SINGLE_FRACTION = 0.2


def available(directory: Path = FASHION_DIR) -> bool:
    """Whether all four Fashion-MNIST files are present."""
    return all((directory / name).is_file() for files in SPLIT_FILES.values() for name in files)


def read_idx(path: Path) -> np.ndarray:
    """Read a gzipped IDX file of unsigned bytes (the MNIST format) into an array."""
    with gzip.open(path, "rb") as handle:
        data = handle.read()
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] != 0x08:
        raise DataError(f"{path}: not an IDX file of unsigned bytes")
    ndim = data[3]
    shape = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load_split(split: str, directory: Path = FASHION_DIR) -> tuple[np.ndarray, np.ndarray]:
    """(images [N, 28, 28] uint8, labels [N] uint8) of the `train` or `test` split."""
    images_file, labels_file = SPLIT_FILES[split]
    if not available(directory):
        raise DataError(f"Fashion-MNIST files not found in {directory}; install them with "
                        f"`apt-get install {DEBIAN_PACKAGE}` or use --source shapes")
    images, labels = read_idx(directory / images_file), read_idx(directory / labels_file)
    if images.ndim != 3 or labels.shape != images.shape[:1]:
        raise DataError(f"{directory}: {split} images {images.shape} and labels {labels.shape} disagree")
    return images, labels


class FashionSource:
    """Demo source built from Fashion-MNIST; every split has its own seeded random stream."""

    name = "fashion"
    templates = TEMPLATES
    classnames = CLASSNAMES

    def __init__(self, seed: int, image_size: int, directory: Path = FASHION_DIR) -> None:
        self.seed = seed
        self.image_size = image_size
        self.train_images, self.train_labels = load_split("train", directory)
        self.test_images, self.test_labels = load_split("test", directory)

    def _rng(self, split: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, split])

    def _test_partition(self) -> tuple[list[np.ndarray], np.ndarray]:
        """Split the test items, per class, into zero-shot candidates (first half of a seeded
        permutation) and the retrieval pool (the rest), independently of the requested sizes."""
        rng = self._rng(3)
        candidates, pool = [], []
        for label in range(len(CLASSNAMES)):
            members = rng.permutation(np.flatnonzero(self.test_labels == label))
            half = len(members) // 2
            candidates.append(members[:half])
            pool.append(members[half:])
        return candidates, np.sort(np.concatenate(pool))

    def _tile(self, item: np.ndarray, size: int) -> Image.Image:
        return Image.fromarray(item).resize((size, size), Image.Resampling.BILINEAR)

    def _scene(self, rng: np.random.Generator, pool: Iterator[int], images: np.ndarray,
               labels: np.ndarray, num_captions: int) -> tuple[Image.Image, list[str]]:
        """One single full-frame item or a 2x2 mosaic of 1-3 items, with `num_captions` captions."""
        if rng.random() < SINGLE_FRACTION:
            index = next(pool)
            captions = [pick(rng, SINGLE_PREFIXES) + pick(rng, SYNONYMS[int(labels[index])])
                        for _ in range(num_captions)]
            return self._tile(images[index], self.image_size), captions
        cell = self.image_size // 2
        canvas = Image.new("L", (self.image_size, self.image_size), 0)
        placed = []
        for quadrant in rng.choice(4, size=int(rng.integers(1, 4)), replace=False):
            index = next(pool)
            row, col = divmod(int(quadrant), 2)
            canvas.paste(self._tile(images[index], cell), (col * cell, row * cell))
            placed.append((int(labels[index]), (row, col)))
        captions = []
        for _ in range(num_captions):
            order = rng.permutation(len(placed))
            parts = [f"{pick(rng, SYNONYMS[placed[i][0]])} {pick(rng, QUADRANT_PHRASES[placed[i][1]])}" for i in order]
            captions.append(pick(rng, MOSAIC_PREFIXES) + join_phrases(parts))
        return canvas, captions

    def train_pairs(self, count: int) -> Iterator[tuple[Image.Image, str]]:
        rng = self._rng(0)
        pool = _cycle(rng.permutation(len(self.train_labels)))
        for _ in range(count):
            image, captions = self._scene(rng, pool, self.train_images, self.train_labels, 1)
            yield image, captions[0]

    def retrieval_items(self, count: int, captions_per_image: int) -> Iterator[tuple[Image.Image, list[str]]]:
        rng = self._rng(1)
        pool = _cycle(rng.permutation(self._test_partition()[1]))
        for _ in range(count):
            yield self._scene(rng, pool, self.test_images, self.test_labels, captions_per_image)

    def zeroshot_items(self, per_class: int) -> Iterator[tuple[int, Image.Image]]:
        for label, candidates in enumerate(self._test_partition()[0]):
            if per_class > len(candidates):
                raise DataError(f"--num_zeroshot_per_class {per_class} exceeds the {len(candidates)} "
                                f"Fashion-MNIST test items kept for zero-shot per class")
            for index in candidates[:per_class]:
                yield label, self._tile(self.test_images[index], self.image_size)


def _cycle(order: np.ndarray) -> Iterator[int]:
    """Endless iteration over `order` (item reuse only when a split runs out)."""
    while True:
        yield from (int(i) for i in order)
