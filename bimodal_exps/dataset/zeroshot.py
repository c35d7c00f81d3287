"""Zero-shot classification data: ImageNet-style class folders or the CIFAR test splits, with class names
and prompts.

`classnames.txt` (one name per line, sorted-folder order) and `templates.txt` (one `{}` prompt
per line) beside the class folders override open_clip's ImageNet lists (docs/design.md, README "Zero-shot sets").
CIFAR uses its own class names and the same 80 OpenAI prompts.
"""
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from torch.utils.data import Dataset
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import find_classes

from dataset.cifar import CIFAR_DATASETS, cifar_classnames, cifar_test_files, load_cifar_test
from dataset.errors import DataError, missing_path_error
from dataset.images import load_rgb

ZEROSHOT_DATASETS = ("imagenet", *CIFAR_DATASETS)

CLASSNAMES_FILE = "classnames.txt"
TEMPLATES_FILE = "templates.txt"
IMAGENET_NUM_CLASSES = 1000
LEGACY_POODLE_INDEX = 267


def _class_folders(root: str | Path) -> list[str]:
    if not os.path.isdir(root):
        raise missing_path_error("zero-shot folder", root)
    try:
        return find_classes(root)[0]
    except FileNotFoundError:
        raise DataError(f"{root}: no class folders (expected <root>/<class_dir>/<images>)") from None


def _read_lines(path: Path) -> list[str]:
    """Non-empty lines of a UTF-8 text file, surrounding whitespace removed."""
    with path.open(encoding="utf-8") as handle:
        return [line.strip() for line in handle if line.strip()]


class ZeroShotDataset(ImageFolder):
    """Class-folder images labelled by the index of their folder in sorted order; RGB-decoded."""

    def __init__(self, root: str | Path, transform: Callable | None = None) -> None:
        _class_folders(root)
        try:
            super().__init__(str(root), transform=transform, loader=load_rgb)
        except FileNotFoundError as err:
            raise DataError(f"{root}: {err}") from None


def imagenet_classnames(legacy: bool = False) -> list[str]:
    """open_clip's 1,000 ImageNet names; `legacy` restores the HybridSogCLR code's "Standard Poodale" (267)."""
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES  # lazy: open_clip imports slowly
    names = list(IMAGENET_CLASSNAMES)
    if legacy:
        names[LEGACY_POODLE_INDEX] = "Standard Poodale"
    return names


def load_zeroshot_classes(root: str | Path, legacy_classnames: bool = False) -> tuple[list[str], list[str]]:
    """Return (class names in sorted-folder order, prompt templates containing `{}`)."""
    root = Path(root)
    folders = _class_folders(root)
    names_path, templates_path = root / CLASSNAMES_FILE, root / TEMPLATES_FILE
    if names_path.is_file():
        classnames = _read_lines(names_path)
        if len(classnames) != len(folders):
            raise DataError(f"{names_path} has {len(classnames)} names but {root} has "
                            f"{len(folders)} class folders; give one name per folder, in sorted order")
    else:
        if len(folders) != IMAGENET_NUM_CLASSES:
            raise DataError(f"{root} has {len(folders)} class folders but no {CLASSNAMES_FILE}; "
                            f"the built-in ImageNet names need {IMAGENET_NUM_CLASSES} folders")
        classnames = imagenet_classnames(legacy_classnames)
    if templates_path.is_file():
        templates = _read_lines(templates_path)
        bad = [template for template in templates if "{}" not in template]
        if not templates or bad:
            raise DataError(f"{templates_path}: every line must be a prompt containing '{{}}'"
                            + (f", e.g. not {bad[0]!r}" if bad else " (file is empty)"))
    else:
        templates = openai_templates()
    return classnames, templates


def openai_templates() -> list[str]:
    """The 80 OpenAI ImageNet prompts as `{}` format strings (open_clip's list)."""
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES  # lazy: open_clip imports slowly
    return [template("{}") for template in OPENAI_IMAGENET_TEMPLATES]


@dataclass
class ZeroShotBenchmark:
    """Images labelled by class index, the class names in label order, and the prompt templates."""

    name: str
    dataset: Dataset
    classnames: list[str]
    templates: list[str]


def default_zeroshot_root(name: str, data_path: str) -> str:
    """`--zs_datafolder` default: the ImageNet val folder, or torchvision's CIFAR root (the data path)."""
    return os.path.join(data_path, "imagenet", "val") if name == "imagenet" else data_path


def missing_zeroshot_data(name: str, root: str | Path) -> str | None:
    """Why `name`'s data is absent under `root`, or None: absent data skips zero-shot evaluation (README)."""
    if name == "imagenet":
        return None if os.path.isdir(root) else f"zero-shot folder {root} not found"
    absent = [str(path) for path in cifar_test_files(name, root) if not path.is_file()]
    return f"--zs_dataset {name}: {', '.join(absent)} not found" if absent else None


def load_zeroshot_benchmark(name: str, root: str | Path, transform: Callable | None = None,
                            legacy_classnames: bool = False) -> ZeroShotBenchmark:
    """The zero-shot set `name` ("imagenet" class folders or "cifar10"/"cifar100" test split) under `root`."""
    if name == "imagenet":
        classnames, templates = load_zeroshot_classes(root, legacy_classnames)
        return ZeroShotBenchmark(name, ZeroShotDataset(root, transform), classnames, templates)
    if name not in CIFAR_DATASETS:
        raise DataError(f"--zs_dataset {name!r}: choose one of {', '.join(ZEROSHOT_DATASETS)}")
    dataset = load_cifar_test(name, root, transform)
    classnames = cifar_classnames(name)
    if len(dataset.classes) != len(classnames):
        raise DataError(f"--zs_dataset {name}: {root} has {len(dataset.classes)} classes, expected {len(classnames)}")
    return ZeroShotBenchmark(name, dataset, classnames, openai_templates())
