"""RandomAugment (N ops drawn with replacement, each applied with p = 0.5), the training augmentation of ALBEF.

A PIL/torchvision re-implementation of the ALBEF operation table: same ten operations and
magnitudes, results clipped to [0, 255], and the intended per-channel AutoContrast stretch
(not the references' unsigned wrap-around).
"""
import math
from collections.abc import Callable, Sequence

import torch
import torchvision.transforms.functional as F
from PIL import Image
from torchvision.transforms import InterpolationMode

MAX_LEVEL = 10.0
GREY_FILL = 128
OP_NAMES = (
    "Identity", "AutoContrast", "Equalize", "Brightness", "Sharpness",
    "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate",
)


def _random_sign() -> float:
    return 1.0 if torch.rand(()).item() < 0.5 else -1.0


def _shear(image: Image.Image, coefficient: float, axis: int) -> Image.Image:
    """Shear about the top-left corner: x' = x + c*y (axis 0) or y' = y + c*x (axis 1)."""
    angles = [0.0, 0.0]
    angles[axis] = -math.degrees(math.atan(coefficient))  # torchvision shears with the opposite sign
    return F.affine(image, angle=0.0, translate=[0, 0], scale=1.0, shear=angles,
                    interpolation=InterpolationMode.BILINEAR, fill=GREY_FILL, center=[0, 0])


def _translate(image: Image.Image, pixels: float, axis: int) -> Image.Image:
    offset = [0, 0]
    offset[axis] = round(pixels)
    return F.affine(image, angle=0.0, translate=offset, scale=1.0, shear=[0.0, 0.0],
                    interpolation=InterpolationMode.BILINEAR, fill=GREY_FILL)


def _rotate(image: Image.Image, degrees: float) -> Image.Image:
    return F.rotate(image, degrees, interpolation=InterpolationMode.BILINEAR, fill=GREY_FILL)


def _build_ops(magnitude: float) -> dict[str, Callable[[Image.Image], Image.Image]]:
    """Map each op name to a callable at `magnitude` (0..10); signed ops draw their sign per call."""
    level = magnitude / MAX_LEVEL
    enhance = level * 1.8 + 0.1
    shear = level * 0.3
    translate = level * 10.0
    rotate = level * 30.0
    return {
        "Identity": lambda image: image,
        "AutoContrast": F.autocontrast,
        "Equalize": F.equalize,
        "Brightness": lambda image: F.adjust_brightness(image, enhance),
        "Sharpness": lambda image: F.adjust_sharpness(image, enhance),
        "ShearX": lambda image: _shear(image, _random_sign() * shear, 0),
        "ShearY": lambda image: _shear(image, _random_sign() * shear, 1),
        "TranslateX": lambda image: _translate(image, _random_sign() * translate, 0),
        "TranslateY": lambda image: _translate(image, _random_sign() * translate, 1),
        "Rotate": lambda image: _rotate(image, _random_sign() * rotate),
    }


class RandomAugment:
    """Apply `num_ops` operations drawn uniformly with replacement, each with probability `prob`.

    Randomness comes from torch's global generator, which the training datasets seed per sample
    (`dataset.sample_rng`).
    """

    def __init__(self, num_ops: int = 2, magnitude: float = 7.0, prob: float = 0.5,
                 op_names: Sequence[str] = OP_NAMES) -> None:
        unknown = sorted(set(op_names) - set(OP_NAMES))
        if unknown:
            raise ValueError(f"unknown RandomAugment operations {unknown}; choices: {OP_NAMES}")
        self.num_ops = num_ops
        self.magnitude = magnitude
        self.prob = prob
        self.op_names = tuple(op_names)
        self._ops = _build_ops(magnitude)

    def __call__(self, image: Image.Image) -> Image.Image:
        """Augment a PIL image (converted to RGB first) and return an RGB PIL image."""
        if image.mode != "RGB":
            image = image.convert("RGB")
        choices = torch.randint(len(self.op_names), (self.num_ops,)).tolist()
        for choice in choices:
            if torch.rand(()).item() < self.prob:
                image = self._ops[self.op_names[choice]](image)
        return image

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(num_ops={self.num_ops}, magnitude={self.magnitude}, "
                f"prob={self.prob}, ops={list(self.op_names)})")
