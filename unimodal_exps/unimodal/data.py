"""ImageNet-style class folders (`<data>/<split>/<class>/<image>`), optionally restricted to a class list.

Items are `(image, label, index)`: the dataset index keys SogCLR's per-image state, so it must be stable
for a given folder and class list (torchvision's sorted folder scan guarantees that). Fetched with a
`SampleKey` (the training sampler's), an image's augmentation draws are seeded by (seed, epoch, index).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from torchvision.datasets import ImageFolder

from dataset.sample_rng import SampleKey, sample_seed, seeded_draws
from unimodal.options import UsageError


def read_class_list(path: str | Path) -> list[str]:
    """Class folder names from a file, one per line; blank lines and `#` comments are skipped.

    A line `wnid/file.JPEG` (SogCLR's ImageNet-100 train.txt lists images) counts as its folder `wnid`.
    """
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise UsageError(f"--class-list {path}: cannot read ({error.strerror})") from None
    names = [line.split("#", 1)[0].strip().split("/", 1)[0] for line in lines]
    classes = list(dict.fromkeys(name for name in names if name))
    if not classes:
        raise UsageError(f"--class-list {path} names no class")
    return classes


class IndexedImageFolder(ImageFolder):
    """ImageFolder whose items carry their index, restricted to `classes` when given (labels in sorted order)."""

    def __init__(self, root: str | Path, transform: Callable | None = None, classes: list[str] | None = None) -> None:
        self.wanted = sorted(classes) if classes is not None else None
        super().__init__(str(root), transform=transform)

    def find_classes(self, directory: str) -> tuple[list[str], dict[str, int]]:
        """The wanted classes (all folders without a class list); missing wanted folders are an error."""
        found, _ = super().find_classes(directory)
        if self.wanted is None:
            names = found
        else:
            missing = sorted(set(self.wanted) - set(found))
            if missing:
                raise UsageError(f"{directory}: class folder(s) of the class list missing: {', '.join(missing[:5])}"
                                 f"{' …' if len(missing) > 5 else ''}")
            names = self.wanted
        return names, {name: i for i, name in enumerate(names)}

    def __getitem__(self, key: SampleKey | int) -> tuple[Any, int, int]:
        """(image, label, dataset index); a `SampleKey` seeds the transform's draws, a plain index does not."""
        if not isinstance(key, SampleKey):
            return (*super().__getitem__(key), key)
        with seeded_draws(sample_seed(key.seed, key.epoch, key.index)):
            image, label = super().__getitem__(key.index)
        return image, label, key.index


def open_split(data: str | Path, split: str, transform: Callable, class_list: str | None = None) -> IndexedImageFolder:
    """`<data>/<split>` as an IndexedImageFolder; a clear UsageError when it is missing or empty."""
    root = Path(data) / split
    if not root.is_dir():
        raise UsageError(f"{root} is not a folder: --data must hold {split}/<class>/<images> (ImageNet layout)")
    classes = read_class_list(class_list) if class_list else None
    try:
        return IndexedImageFolder(root, transform=transform, classes=classes)
    except FileNotFoundError as error:
        raise UsageError(f"{root}: {error}") from None
