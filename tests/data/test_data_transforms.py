"""Transforms: output shape/dtype/range; RandomAugment semantics and edge images."""
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from dataset.randaugment import OP_NAMES, RandomAugment
from dataset.transforms import (CLIP_MEAN, CLIP_STD, IMAGENET_MEAN, IMAGENET_STD, build_retrieval_transform,
                                build_train_transform, build_zeroshot_transform)


def _bounds(mean, std):
    mean, std = torch.tensor(mean).view(3, 1, 1), torch.tensor(std).view(3, 1, 1)
    return (0 - mean) / std - 1e-5, (1 - mean) / std + 1e-5


def _random_image(height=40, width=56, mode="RGB"):
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).convert(mode)


def test_constants_match_open_clip():
    from open_clip import constants
    assert CLIP_MEAN == constants.OPENAI_DATASET_MEAN and CLIP_STD == constants.OPENAI_DATASET_STD
    assert IMAGENET_MEAN == constants.IMAGENET_MEAN and IMAGENET_STD == constants.IMAGENET_STD


@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_train_transform_shape_dtype_range(mode):
    torch.manual_seed(0)
    transform = build_train_transform(24)
    low, high = _bounds(CLIP_MEAN, CLIP_STD)
    for _ in range(20):
        out = transform(_random_image(mode=mode))
        assert out.shape == (3, 24, 24) and out.dtype == torch.float32
        assert bool((out >= low).all() and (out <= high).all())


def test_retrieval_transform_resizes_exactly():
    out = build_retrieval_transform(20)(_random_image(40, 56))
    assert out.shape == (3, 20, 20) and out.dtype == torch.float32


@pytest.mark.parametrize("norm, mean, std", [("clip", CLIP_MEAN, CLIP_STD), ("legacy", IMAGENET_MEAN, IMAGENET_STD)])
def test_zeroshot_transform_crop_and_normalisation(norm, mean, std):
    grey = Image.new("RGB", (50, 30), (128, 128, 128))
    out = build_zeroshot_transform(16, norm=norm)(grey)
    assert out.shape == (3, 16, 16)
    expected = (128 / 255 - torch.tensor(mean)) / torch.tensor(std)
    assert torch.allclose(out[:, 8, 8], expected, atol=1e-5)


@pytest.mark.parametrize("dataset, mean, std", [("cifar10", (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
                                                 ("cifar100", (0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761))])
def test_legacy_zeroshot_normalisation_follows_the_dataset(dataset, mean, std):
    grey = Image.new("RGB", (32, 32), (128, 128, 128))
    expected = (128 / 255 - torch.tensor(mean)) / torch.tensor(std)
    assert torch.allclose(build_zeroshot_transform(16, "legacy", dataset)(grey)[:, 8, 8], expected, atol=1e-5)
    clip = build_zeroshot_transform(16, "clip", dataset)(grey)[:, 8, 8]
    assert torch.allclose(clip, (128 / 255 - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD), atol=1e-5)


def test_zeroshot_transform_rejects_unknown_norm():
    with pytest.raises(ValueError, match="legacy"):
        build_zeroshot_transform(16, norm="cifar")


@pytest.mark.parametrize("op", OP_NAMES)
@pytest.mark.parametrize("image", [
    Image.new("RGB", (20, 20), (0, 0, 0)),
    Image.new("RGB", (20, 20), (255, 255, 255)),
    Image.new("RGB", (20, 20), (90, 90, 90)),
    Image.new("L", (20, 20), 200),
    _random_image(17, 23, "L"),
    Image.new("RGB", (1, 1), (10, 200, 30)),
], ids=["black", "white", "grey", "grey-L", "random-L", "1px"])
def test_each_op_on_edge_images(op, image):
    torch.manual_seed(0)
    out = RandomAugment(num_ops=1, prob=1.0, op_names=[op])(image)
    assert out.mode == "RGB" and out.size == image.size
    pixels = np.asarray(out)
    assert pixels.dtype == np.uint8 and pixels.shape == (image.size[1], image.size[0], 3)


def test_autocontrast_stretches_each_channel_without_wrapping():
    pixels = np.zeros((8, 8, 3), np.uint8)
    pixels[..., 0] = np.linspace(50, 100, 64).reshape(8, 8)   # minimum > 0: the reference bug washes it out
    pixels[..., 1] = 30                                        # constant channel stays constant
    pixels[..., 2] = np.linspace(0, 255, 64).reshape(8, 8)
    out = np.asarray(RandomAugment(num_ops=1, prob=1.0, op_names=["AutoContrast"])(Image.fromarray(pixels)))
    assert out[..., 0].min() == 0 and out[..., 0].max() >= 254   # PIL truncates the LUT values
    assert np.median(out[..., 0]) < 200
    assert (out[..., 1] == 30).all()
    assert np.array_equal(out[..., 2], pixels[..., 2])


def test_brightness_and_sharpness_clip_to_uint8_range():
    image = Image.new("RGB", (10, 10), (200, 100, 0))
    bright = np.asarray(RandomAugment(num_ops=1, prob=1.0, op_names=["Brightness"])(image))
    assert tuple(bright[5, 5]) == (255, 136, 0)
    checker = Image.fromarray((np.indices((10, 10)).sum(0) % 2 * 255).astype(np.uint8)).convert("RGB")
    sharp = np.asarray(RandomAugment(num_ops=1, prob=1.0, op_names=["Sharpness"])(checker))
    assert sharp.min() == 0 and sharp.max() == 255   # overshoot clipped, not wrapped


def test_geometric_ops_fill_with_grey():
    image = Image.new("RGB", (30, 30), (255, 0, 0))
    for op in ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate"):
        out = np.asarray(RandomAugment(num_ops=1, prob=1.0, op_names=[op])(image)).reshape(-1, 3)
        assert any(tuple(p) == (128, 128, 128) for p in out), op


def test_ops_are_drawn_with_replacement_and_applied_with_probability_half(monkeypatch):
    augment = RandomAugment(num_ops=2, magnitude=7)
    applied: list[list[str]] = []

    def recorder(name):
        return lambda image: (applied[-1].append(name), image)[1]

    monkeypatch.setattr(augment, "_ops", {name: recorder(name) for name in OP_NAMES})
    torch.manual_seed(0)
    image = Image.new("RGB", (4, 4))
    for _ in range(2000):
        applied.append([])
        augment(image)
    counts = Counter(len(ops) for ops in applied)
    assert set(counts) == {0, 1, 2}
    assert abs(counts[2] / 2000 - 0.25) < 0.04 and abs(counts[0] / 2000 - 0.25) < 0.04
    assert any(ops[0] == ops[1] for ops in applied if len(ops) == 2)
    assert set(name for ops in applied for name in ops) == set(OP_NAMES)


def test_unknown_op_name_is_rejected():
    with pytest.raises(ValueError, match="Solarize"):
        RandomAugment(op_names=["Solarize"])
