"""Write CIFAR test splits in torchvision's on-disk format (pickled batches) for offline tests."""
import pickle
from pathlib import Path

import numpy as np

LAYOUT = {  # name: (folder, test batch, meta file, label key, class-name key)
    "cifar10": ("cifar-10-batches-py", "test_batch", "batches.meta", "labels", "label_names"),
    "cifar100": ("cifar-100-python", "test", "meta", "fine_labels", "fine_label_names"),
}


def write_cifar_test(root: Path, name: str, images: np.ndarray, labels: list[int], classes: list[str]) -> Path:
    """`images` is N x 32 x 32 x 3 uint8 (HWC); stored as the N x 3072 channel-major rows of the real files."""
    folder, batch, meta, label_key, names_key = LAYOUT[name]
    directory = Path(root) / folder
    directory.mkdir(parents=True, exist_ok=True)
    rows = images.transpose(0, 3, 1, 2).reshape(len(images), 3 * 32 * 32)
    with open(directory / batch, "wb") as handle:
        pickle.dump({"data": rows, label_key: list(labels)}, handle)
    with open(directory / meta, "wb") as handle:
        pickle.dump({names_key: list(classes)}, handle)
    return directory
