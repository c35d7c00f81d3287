"""Image towers: any timm model, headless (`num_classes=0`), returning pooled features of `image_output_dim`."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import timm
import torch
from huggingface_hub import try_to_load_from_cache
from timm.models import get_pretrained_cfg
from torch import nn

from models.config import VIT_ALIAS, Pretrained
from models.pretrained import (CACHE_HINT, WEIGHT_SUFFIXES, PretrainedWeightsError, align_state_dict,
                               hf_hub_cache_dir, read_state_dict, state_layout, torch_hub_checkpoint_dir)

# ViT-B/32 with CLIP's layout (pre-norm, bias-free patch embedding, class-token pooling), as DistTempNet's tower.
VIT_B32 = "vit_base_patch32_clip_224"
HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def resolve_image_encoder(name: str) -> str:
    """Map the `ViT` alias to its timm name and check that timm knows the model."""
    arch = VIT_B32 if name.lower() == VIT_ALIAS else name
    if not timm.is_model(arch):
        raise ValueError(f"unknown image encoder {name!r}: not a timm model name "
                         f"(see timm.list_models()) nor the alias 'ViT'")
    return arch


def timm_kwargs(arch: str, image_res: int, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Keyword arguments for `timm.create_model`: models with a fixed input size (ViTs) get `img_size`."""
    kwargs = dict(extra or {})
    cfg = get_pretrained_cfg(arch)
    if cfg is not None and cfg.fixed_input_size:
        kwargs.setdefault("img_size", image_res)
    return kwargs


def create_image_tower(name: str, image_res: int, pretrained: Pretrained = False,
                       extra_kwargs: dict[str, Any] | None = None) -> nn.Module:
    """Create a headless timm image tower (the timm model itself, so its keys keep timm's names).

    The pooled output size is `image_output_dim(tower)`.

    pretrained: False = random init; True = timm's default weights for `name`, found in the local HF
    or torch hub cache; a path = a local `.pth/.safetensors` file (timm key names, or another naming of
    the same architecture whose tensors match in order, e.g. torchvision checkpoints).
    """
    arch = resolve_image_encoder(name)
    kwargs = timm_kwargs(arch, image_res, extra_kwargs)
    if pretrained is False:
        return timm.create_model(arch, pretrained=False, num_classes=0, **kwargs)
    source = find_cached_weights(arch) if pretrained is True else Path(pretrained)
    return _create_from_file(arch, source, kwargs)


def find_cached_weights(arch: str) -> Path:
    """Locate timm's default pretrained file for `arch` in the local HF cache or torch hub cache."""
    cfg = get_pretrained_cfg(arch)
    if cfg is None:
        raise PretrainedWeightsError(f"timm has no pretrained weights registered for {arch!r}; "
                                     "pass a weight file with --image_pretrained PATH")
    looked = []
    if cfg.hf_hub_id:
        cache_dir = hf_hub_cache_dir()
        filenames = (cfg.hf_hub_filename,) if cfg.hf_hub_filename else HF_WEIGHT_FILES
        for filename in filenames:
            found = try_to_load_from_cache(cfg.hf_hub_id, filename, cache_dir=cache_dir)
            if isinstance(found, str):
                return Path(found)
        looked.append(f"HF cache {cache_dir} for {cfg.hf_hub_id} ({', '.join(filenames)})")
    url_name = os.path.basename(urlparse(cfg.url).path) if cfg.url and not cfg.custom_load else ""
    if url_name.endswith(WEIGHT_SUFFIXES):
        candidate = torch_hub_checkpoint_dir() / url_name
        if candidate.is_file():
            return candidate
        looked.append(f"torch hub cache {candidate}")
    raise PretrainedWeightsError(
        f"no local pretrained weights for image encoder {arch!r} (looked in: {'; '.join(looked) or 'nowhere'}). "
        f"Nothing is downloaded: pass a weight file with --image_pretrained PATH, or {CACHE_HINT}.")


def _create_from_file(arch: str, source: Path, kwargs: dict[str, Any]) -> nn.Module:
    """Build the headless model with the weights of `source`, strictly, through timm's pretrained loader.

    The file is first renamed to timm's key names (with or without the classifier it may carry); timm
    then applies the model's checkpoint filter (e.g. resampling ViT position embeddings to `img_size`)
    and loads strictly.
    """
    reference = timm.create_model(arch, pretrained=False, **kwargs)
    full_layout = state_layout(reference)
    reference.reset_classifier(0)
    body_layout = state_layout(reference)
    _, state = align_state_dict(read_state_dict(source), [full_layout, body_layout], source)
    body_state = {key: tensor for key, tensor in state.items() if key in body_layout}
    try:
        return timm.create_model(arch, pretrained=True, num_classes=0,
                                 pretrained_cfg_overlay={"state_dict": body_state, "num_classes": 0}, **kwargs)
    except RuntimeError as error:
        raise PretrainedWeightsError(f"{source}: weights do not fit image encoder {arch!r}: {error}") from error


def image_output_dim(tower: nn.Module) -> int:
    """Size of the pooled feature a headless timm model returns.

    That is timm's `head_hidden_size`, which differs from `num_features` for models whose head has a
    hidden layer (e.g. MobileNetV3: 960 channels pooled, then a 1280-d layer).
    """
    return int(getattr(tower, "head_hidden_size", None) or tower.num_features)


def check_input_size(tower: nn.Module, image_res: int) -> None:
    """Run one dummy `image_res`² image through `tower` (eval mode, no gradient, no RNG draw), so that a size it
    cannot take (e.g. not a multiple of a ViT's patch, or not the size a fixed-size model was built for) fails
    when the model is built instead of at the first training step."""
    parameter = next(tower.parameters(), None)
    device = parameter.device if parameter is not None else None
    was_training = tower.training
    try:
        with torch.no_grad():
            tower.eval()
            tower(torch.zeros(1, 3, image_res, image_res, device=device))
    finally:
        tower.train(was_training)
