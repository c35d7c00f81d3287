"""CIFAR-10/100 test splits for zero-shot classification, read offline by torchvision (README "Zero-shot sets").

torchvision's integrity check wants every train and test batch with the published MD5s; zero-shot reads
only the test batch and the meta file, so only those two are checked (MD5s included). Nothing is ever
downloaded.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from torchvision.datasets import CIFAR10, CIFAR100
from torchvision.datasets import cifar as torchvision_cifar

from dataset.errors import DataError

CLASSNAMES_PATH = Path(__file__).with_name("cifar_classnames.json")


class _TestSplitOnly:
    """Mixin: require the test batch with its published MD5 but not the train batches, which are not read
    (torchvision checks the meta file's MD5 itself when it loads it)."""

    def _check_integrity(self) -> bool:
        folder = Path(self.root) / self.base_folder
        return all(torchvision_cifar.check_integrity(str(folder / name), md5) for name, md5 in self.test_list)


class _Cifar10Test(_TestSplitOnly, CIFAR10):
    pass


class _Cifar100Test(_TestSplitOnly, CIFAR100):
    pass


CIFAR_DATASETS: dict[str, type] = {"cifar10": _Cifar10Test, "cifar100": _Cifar100Test}


def cifar_test_files(name: str, root: str | Path) -> list[Path]:
    """The files `load_cifar_test(name, root)` reads: the test batch and the meta file."""
    dataset_class = CIFAR_DATASETS[name]
    folder = Path(root) / dataset_class.base_folder
    return [folder / file for file, _ in dataset_class.test_list] + [folder / dataset_class.meta["filename"]]


def load_cifar_test(name: str, root: str | Path, transform: Callable | None = None):
    """The CIFAR test split under torchvision's download root `root`; items are (image, label)."""
    try:
        return CIFAR_DATASETS[name](str(root), train=False, transform=transform, download=False)
    except RuntimeError as error:  # torchvision: "Dataset not found or corrupted"
        raise DataError(f"--zs_dataset {name}: cannot read {', '.join(map(str, cifar_test_files(name, root)))} "
                        f"({error})") from None
    except (OSError, ValueError, KeyError) as error:
        raise DataError(f"--zs_dataset {name}: {root}: unreadable CIFAR batch ({type(error).__name__}: {error})") \
            from None


def cifar_classnames(name: str) -> list[str]:
    """Class names in label order, worded as in the references' prompts (e.g. "aquarium fish")."""
    with CLASSNAMES_PATH.open(encoding="utf-8") as handle:
        return list(json.load(handle)[name])
