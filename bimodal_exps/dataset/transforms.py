"""Image transforms for training, retrieval evaluation and zero-shot evaluation (CLIP normalisation)."""
from typing import Literal

import torchvision.transforms as T
from torchvision.transforms import InterpolationMode

from dataset.randaugment import RandomAugment

# Normalisation constants of CLIP and ImageNet (the same values as open_clip.constants; a test checks they agree).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# The references' zero-shot constants, one pair per dataset (`--zs_norm legacy`).
LEGACY_ZEROSHOT_NORMS = {
    "imagenet": (IMAGENET_MEAN, IMAGENET_STD),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "cifar100": ((0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)),
}

ZeroShotNorm = Literal["clip", "legacy"]


def build_train_transform(image_res: int) -> T.Compose:
    """Random resized crop (scale 0.5-1, bicubic), flip, RandomAugment(2, 7), CLIP normalisation."""
    return T.Compose([
        T.RandomResizedCrop(image_res, scale=(0.5, 1.0), interpolation=InterpolationMode.BICUBIC),
        T.RandomHorizontalFlip(),
        RandomAugment(num_ops=2, magnitude=7),
        T.ToTensor(),
        T.Normalize(CLIP_MEAN, CLIP_STD),
    ])


def build_retrieval_transform(image_res: int) -> T.Compose:
    """Resize to exactly image_res x image_res (bicubic, aspect not kept), CLIP normalisation."""
    return T.Compose([
        T.Resize((image_res, image_res), interpolation=InterpolationMode.BICUBIC),
        T.ToTensor(),
        T.Normalize(CLIP_MEAN, CLIP_STD),
    ])


def build_zeroshot_transform(image_res: int, norm: ZeroShotNorm = "clip", dataset: str = "imagenet") -> T.Compose:
    """Shorter side to image_res (bilinear), centre crop; "legacy" uses the references' constants of `dataset`."""
    if norm == "clip":
        mean, std = CLIP_MEAN, CLIP_STD
    elif norm == "legacy" and dataset in LEGACY_ZEROSHOT_NORMS:
        mean, std = LEGACY_ZEROSHOT_NORMS[dataset]
    else:
        raise ValueError(f"unknown zero-shot normalisation {norm!r} for {dataset!r}; choices: clip, legacy "
                         f"(legacy for {', '.join(LEGACY_ZEROSHOT_NORMS)})")
    return T.Compose([
        T.Resize(image_res, interpolation=InterpolationMode.BILINEAR),
        T.CenterCrop(image_res),
        T.ToTensor(),
        T.Normalize(mean, std),
    ])
