"""Image towers from torchvision and OpenCLIP (`--image_builder`), headless, with their pooled output width.

timm towers live in `image_tower.py`; `build_image_tower` dispatches on the builder. Weights come from
local files only: a file path, or the library's default file already in the torch hub / HF cache.
torchvision towers see ImageNet-normalised images (their weights' convention): a pre-hook maps our
CLIP-normalised inputs, so the data pipeline stays one for all builders.
"""
from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse

import torch
from huggingface_hub import try_to_load_from_cache
from torch import nn

from dataset.transforms import CLIP_MEAN, CLIP_STD, IMAGENET_MEAN, IMAGENET_STD
from models.config import ModelBuildError, ModelConfig, Pretrained
from models.image_tower import create_image_tower, image_output_dim
from models.pretrained import (CACHE_HINT, PretrainedWeightsError, hf_hub_cache_dir, read_state_dict,
                               torch_hub_checkpoint_dir)

# torchvision classifier attributes: `fc` (ResNet, RegNet, ShuffleNet, Inception, GoogLeNet), `classifier`
# (AlexNet, VGG, MNASNet, EfficientNet, MobileNet, DenseNet, ConvNeXt) and `heads` (ViT).
TORCHVISION_NO_AUX = ("inception_v3", "googlenet")


def build_image_tower(cfg: ModelConfig) -> tuple[nn.Module, int]:
    """(headless image tower, width of its pooled output) for `cfg.image_builder`."""
    if cfg.image_builder == "torchvision":
        return create_torchvision_tower(cfg.image_encoder, cfg.image_res, cfg.image_pretrained)
    if cfg.image_builder == "openclip":
        visual = create_openclip_model(cfg.image_encoder, cfg.image_model_tag, cfg.image_pretrained,
                                       cfg.image_res).visual
        return visual, int(visual.output_dim)
    tower = create_image_tower(cfg.image_encoder, cfg.image_res, cfg.image_pretrained, cfg.image_kwargs)
    return tower, image_output_dim(tower)


def create_torchvision_tower(name: str, image_res: int, pretrained: Pretrained = False) -> tuple[nn.Module, int]:
    """`torchvision.models.<name>` with its classifier replaced by Identity; returns (model, feature width).

    pretrained: False = random init; True = torchvision's default weights file in the torch hub cache;
    a path = a local file of the full model (classifier included), loaded strictly before removal.
    """
    import torchvision  # only for this builder: importing it takes a second

    if name not in torchvision.models.list_models():
        raise ModelBuildError(f"--image_encoder {name!r} is not a torchvision model "
                              f"(see torchvision.models.list_models())")
    kwargs: dict = {"aux_logits": False, "init_weights": True} if name in TORCHVISION_NO_AUX else {}
    if name.startswith("vit_"):
        kwargs["image_size"] = image_res
    model = torchvision.models.get_model(name, weights=None, **kwargs)
    if pretrained is not False:
        source = _torchvision_cached_file(name) if pretrained is True else Path(pretrained)
        state = read_state_dict(source)
        if kwargs.get("aux_logits") is False:
            state = {key: value for key, value in state.items() if not key.startswith("aux")}
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as error:
            raise PretrainedWeightsError(f"{source}: weights do not fit torchvision {name!r}: {error}") from error
    width = _remove_torchvision_classifier(model, name)
    model.register_forward_pre_hook(_clip_to_imagenet_normalisation)
    return model, width


def _clip_to_imagenet_normalisation(_module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """Our transforms normalise with CLIP's mean/std; torchvision's weights expect ImageNet's (exact affine map)."""
    images, *rest = inputs
    scale = torch.tensor(CLIP_STD, device=images.device) / torch.tensor(IMAGENET_STD, device=images.device)
    shift = (torch.tensor(CLIP_MEAN, device=images.device) - torch.tensor(IMAGENET_MEAN, device=images.device)) \
        / torch.tensor(IMAGENET_STD, device=images.device)
    return (images * scale.view(1, 3, 1, 1).to(images.dtype) + shift.view(1, 3, 1, 1).to(images.dtype), *rest)


def _torchvision_cached_file(name: str) -> Path:
    """torchvision's default weight file for `name` in `$TORCH_HOME/hub/checkpoints`, or a clear error."""
    import torchvision

    try:
        weights = torchvision.models.get_model_weights(name).DEFAULT
    except (ValueError, AttributeError) as error:
        raise PretrainedWeightsError(f"torchvision has no pretrained weights for {name!r}") from error
    candidate = torch_hub_checkpoint_dir() / os.path.basename(urlparse(weights.url).path)
    if not candidate.is_file():
        raise PretrainedWeightsError(
            f"no local pretrained weights for torchvision {name!r} (looked in: torch hub cache {candidate}). "
            f"Nothing is downloaded: pass a weight file with --image_pretrained PATH, or {CACHE_HINT}.")
    return candidate


def _remove_torchvision_classifier(model: nn.Module, name: str) -> int:
    """Replace the classifier by Identity in place and return the width of the features it received."""
    if isinstance(getattr(model, "fc", None), nn.Linear):
        width = model.fc.in_features
        model.fc = nn.Identity()
        return width
    heads = getattr(model, "heads", None)
    if heads is not None and hasattr(model, "hidden_dim"):
        model.heads = nn.Identity()
        return int(model.hidden_dim)
    classifier = getattr(model, "classifier", None)
    if isinstance(classifier, nn.Linear):
        model.classifier = nn.Identity()
        return classifier.in_features
    if isinstance(classifier, nn.Sequential):
        linears = [index for index, module in enumerate(classifier) if isinstance(module, nn.Linear)]
        if linears and any(isinstance(module, nn.Flatten) for module in classifier):  # ConvNeXt: keep norm, flatten
            width = classifier[linears[-1]].in_features
            classifier[linears[-1]] = nn.Identity()
            return width
        if linears:
            model.classifier = nn.Identity()
            return classifier[linears[0]].in_features
    raise ModelBuildError(f"torchvision {name!r}: its classifier layout is not supported by --image_builder "
                          "torchvision (supported: fc, classifier ending in Linear layers, ViT heads)")


def create_openclip_model(name: str, tag: str, pretrained: Pretrained, image_res: int | None = None) -> nn.Module:
    """`open_clip.create_model(name)` on CPU, random init or weights from a local file only.

    Weights load when `pretrained` is not False: from `pretrained` if it is a path, else from `tag` (a file, or
    an OpenCLIP pretrained name whose file is already in the HF hub cache).
    """
    import open_clip

    if name not in open_clip.list_models():
        raise ModelBuildError(f"{name!r} is not an OpenCLIP model (see open_clip.list_models())")
    source = None
    kwargs: dict = {"force_image_size": image_res} if image_res else {}
    if pretrained is not False:
        tag_cfg = open_clip.get_pretrained_cfg(name, tag) if tag else {}
        kwargs["force_quick_gelu"] = bool(tag_cfg.get("quick_gelu", False))
        if isinstance(pretrained, str):
            source = pretrained
        elif tag and Path(tag).expanduser().is_file():
            source = str(Path(tag).expanduser())
        else:
            source = str(_openclip_cached_file(name, tag, tag_cfg))
    try:
        return open_clip.create_model(name, pretrained=source, **kwargs)
    except RuntimeError as error:
        raise PretrainedWeightsError(f"{source}: weights do not fit OpenCLIP {name!r}: {error}") from error


def _openclip_cached_file(name: str, tag: str, tag_cfg: dict) -> Path:
    """The weight file of OpenCLIP's pretrained `tag` for `name` in the HF hub cache or `~/.cache/clip`."""
    if not tag:
        raise PretrainedWeightsError(f"OpenCLIP {name!r}: pretrained weights need --image_model_tag/--text_model_tag "
                                     "(a pretrained name such as 'openai', or a local weight file)")
    if not tag_cfg:
        raise PretrainedWeightsError(f"OpenCLIP {name!r} has no pretrained tag {tag!r} and no file {tag} exists")
    looked = []
    if tag_cfg.get("hf_hub"):
        repo_id, filename = os.path.split(tag_cfg["hf_hub"])
        names = (filename,) if filename else ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
        for candidate in names:
            found = try_to_load_from_cache(repo_id, candidate, cache_dir=hf_hub_cache_dir())
            if isinstance(found, str):
                return Path(found)
        looked.append(f"HF cache {hf_hub_cache_dir()} for {repo_id} ({', '.join(names)})")
    if tag_cfg.get("url"):
        candidate = Path("~/.cache/clip").expanduser() / os.path.basename(urlparse(tag_cfg["url"]).path)
        if candidate.is_file():
            return candidate
        looked.append(str(candidate))
    raise PretrainedWeightsError(
        f"no local pretrained weights for OpenCLIP {name!r} tag {tag!r} (looked in: {'; '.join(looked)}). "
        f"Nothing is downloaded: pass a weight file as the tag or with --image_pretrained/--text_pretrained PATH, "
        f"or {CACHE_HINT}.")
