"""CIFAR-10/100 zero-shot sets: torchvision's on-disk format read offline, class names, absent/corrupt data."""
import numpy as np
import pytest

from cifar_helpers import write_cifar_test
from dataset.cifar import cifar_classnames
from dataset.errors import DataError
from dataset.transforms import build_zeroshot_transform
from dataset.zeroshot import load_zeroshot_benchmark, missing_zeroshot_data, openai_templates


def _images(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(count, 32, 32, 3), dtype=np.uint8)


@pytest.mark.parametrize("name, num_classes", [("cifar10", 10), ("cifar100", 100)])
def test_reads_the_test_split_pixels_labels_and_prompts(tmp_path, trust_cifar_checksums, name, num_classes):
    images, labels = _images(5), [3, 0, num_classes - 1, 7, 1]
    write_cifar_test(tmp_path, name, images, labels, [f"c{i}" for i in range(num_classes)])
    assert missing_zeroshot_data(name, tmp_path) is None
    benchmark = load_zeroshot_benchmark(name, tmp_path)
    assert benchmark.name == name and len(benchmark.dataset) == 5
    for index in range(5):
        image, label = benchmark.dataset[index]
        assert label == labels[index] and np.array_equal(np.asarray(image), images[index])
    assert benchmark.classnames == cifar_classnames(name) and len(benchmark.classnames) == num_classes
    assert benchmark.templates == openai_templates() and len(benchmark.templates) == 80


def test_transform_applies_to_cifar_images(tmp_path, trust_cifar_checksums):
    write_cifar_test(tmp_path, "cifar10", _images(2), [0, 1], [str(i) for i in range(10)])
    benchmark = load_zeroshot_benchmark("cifar10", tmp_path, build_zeroshot_transform(48, "legacy", "cifar10"))
    image, _ = benchmark.dataset[0]
    assert image.shape == (3, 48, 48)


def test_class_names_follow_the_label_order_with_the_references_wording():
    assert cifar_classnames("cifar10") == ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                                           "ship", "truck"]
    names = cifar_classnames("cifar100")
    assert len(names) == len(set(names)) == 100
    assert [names[i] for i in (0, 1, 39, 41, 47, 58, 83, 99)] == [
        "apples", "aquarium fish", "computer keyboard", "lawn-mower", "maple", "pickup truck", "sweet peppers",
        "worm"]


def test_missing_test_batch_is_named_so_zero_shot_is_skipped(tmp_path):
    reason = missing_zeroshot_data("cifar100", tmp_path)
    assert reason is not None and str(tmp_path / "cifar-100-python" / "test") in reason
    assert missing_zeroshot_data("imagenet", tmp_path / "nowhere") == f"zero-shot folder {tmp_path / 'nowhere'} not found"


def test_files_without_the_published_checksum_are_a_data_error(tmp_path):
    write_cifar_test(tmp_path, "cifar10", _images(2), [0, 1], [str(i) for i in range(10)])
    with pytest.raises(DataError, match="cifar-10-batches-py/test_batch"):
        load_zeroshot_benchmark("cifar10", tmp_path)


def test_wrong_number_of_classes_is_a_data_error(tmp_path, trust_cifar_checksums):
    write_cifar_test(tmp_path, "cifar10", _images(2), [0, 1], ["a", "b"])
    with pytest.raises(DataError, match="has 2 classes, expected 10"):
        load_zeroshot_benchmark("cifar10", tmp_path)
