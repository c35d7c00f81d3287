"""Image transforms: SimCLR two-view augmentation for pre-training, crops for linear evaluation.

The pre-training recipe is SogCLR's (BYOL/SimCLR family): RandomResizedCrop(scale=(crop_min, 1)),
colour jitter (0.4, 0.4, 0.2, 0.1) with p = 0.8, grayscale p = 0.2, Gaussian blur σ ∈ [0.1, 2] (PIL radius),
horizontal flip, ImageNet normalisation; both views use the same distribution.
"""
from __future__ import annotations

import random
from typing import Callable

import torchvision.transforms as T
from PIL import Image, ImageFilter
from torch import Tensor

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class RandomGaussianBlur:
    """PIL Gaussian blur with a radius drawn uniformly from `sigma` (sizes in pixels, as in SimCLR/MoCo)."""

    def __init__(self, sigma: tuple[float, float] = (0.1, 2.0)) -> None:
        self.sigma = sigma

    def __call__(self, image: Image.Image) -> Image.Image:
        return image.filter(ImageFilter.GaussianBlur(radius=random.uniform(*self.sigma)))


class TwoViews:
    """Apply `transform` twice: the two independently augmented views of one image."""

    def __init__(self, transform: Callable[[Image.Image], Tensor]) -> None:
        self.transform = transform

    def __call__(self, image: Image.Image) -> list[Tensor]:
        return [self.transform(image), self.transform(image)]


def pretrain_transform(image_size: int, crop_min: float, blur_prob: float = 1.0) -> TwoViews:
    """SogCLR's two-view SimCLR augmentation."""
    view = T.Compose([
        T.RandomResizedCrop(image_size, scale=(crop_min, 1.0)),
        T.RandomApply([T.ColorJitter(0.4, 0.4, 0.2, 0.1)], p=0.8),
        T.RandomGrayscale(p=0.2),
        T.RandomApply([RandomGaussianBlur()], p=blur_prob),
        T.RandomHorizontalFlip(),
        T.ToTensor(),
        T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])
    return TwoViews(view)


def linear_train_transform(image_size: int) -> T.Compose:
    """Linear-probe training crops (seed: RandomResizedCrop + flip)."""
    return T.Compose([T.RandomResizedCrop(image_size), T.RandomHorizontalFlip(), T.ToTensor(),
                      T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def eval_transform(image_size: int) -> T.Compose:
    """Resize the shorter side to size·256/224 and centre-crop (seed: Resize(256) + CenterCrop(224))."""
    return T.Compose([T.Resize(round(image_size * 256 / 224)), T.CenterCrop(image_size), T.ToTensor(),
                      T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
