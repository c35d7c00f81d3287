"""Local-only pretrained weights: cache locations, offline guard, state-dict reading and key alignment.

The project never downloads. Everything here resolves files that already exist on disk and
turns every failure into a `PretrainedWeightsError` that says where it looked and how to provide weights.
"""
from __future__ import annotations

import os
import pickle
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import huggingface_hub.constants
import torch
from safetensors import SafetensorError
from timm.models import load_state_dict as timm_load_state_dict

WEIGHT_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors")
CACHE_HINT = ("set HF_HUB_CACHE (or HF_HOME, or the legacy HUGGINGFACE_HUB_CACHE) and TORCH_HOME to caches "
              "populated on a machine with network access")


class PretrainedWeightsError(RuntimeError):
    """Pretrained weights were requested but cannot be found or do not fit the model."""


def hf_hub_cache_dir() -> Path:
    """The Hugging Face hub cache, read from the environment at call time (same precedence as huggingface_hub).

    huggingface_hub reads these variables once at import; resolving them here lets a process (or a test)
    point the cache elsewhere after import.
    """
    for variable in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(variable):
            return Path(os.path.expandvars(os.environ[variable])).expanduser()
    hf_home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(os.path.expandvars(hf_home)).expanduser() / "hub"


def torch_hub_checkpoint_dir() -> Path:
    """`$TORCH_HOME/hub/checkpoints`, where torch.hub (and old timm releases) keep downloaded weights."""
    return Path(torch.hub.get_dir()) / "checkpoints"


@contextmanager
def hub_offline() -> Iterator[None]:
    """Run a block with the Hugging Face hub in offline mode (HF_HUB_OFFLINE=1), restoring the previous mode.

    Loading calls already pass `local_files_only=True`; this guard additionally makes any stray hub
    HTTP request fail immediately instead of touching the network.
    """
    saved_env = {name: os.environ.get(name) for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    saved_flag = huggingface_hub.constants.HF_HUB_OFFLINE
    os.environ.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    huggingface_hub.constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        huggingface_hub.constants.HF_HUB_OFFLINE = saved_flag
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a `.pth/.pt/.bin` (with `weights_only=True`) or `.safetensors` weight file into a flat state dict.

    Training checkpoints that wrap the weights under `state_dict`/`model` (or hold EMA weights) are
    unwrapped and a DDP `module.` prefix is removed (timm's reader does both).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise PretrainedWeightsError(f"pretrained weight file {path} does not exist")
    if path.suffix not in WEIGHT_SUFFIXES:
        raise PretrainedWeightsError(f"pretrained weight file {path}: expected one of {', '.join(WEIGHT_SUFFIXES)}")
    try:
        state = timm_load_state_dict(str(path), weights_only=True)
    except (OSError, RuntimeError, ValueError, pickle.UnpicklingError, SafetensorError) as error:
        raise PretrainedWeightsError(f"cannot read pretrained weights {path}: {error}") from error
    if not state or not all(isinstance(value, torch.Tensor) for value in state.values()):
        raise PretrainedWeightsError(f"{path} does not hold a state dict of tensors")
    return dict(state)


Layout = Mapping[str, torch.Size]


def align_state_dict(state: Mapping[str, torch.Tensor], layouts: Sequence[Layout],
                     source: str | os.PathLike) -> tuple[int, dict[str, torch.Tensor]]:
    """Rename `state` to the first model key layout it fits; returns (index of that layout, renamed state).

    A layout fits when the key names are the same set (shapes are left to the strict load, so that a
    library filter may still adapt e.g. position embeddings), or else when the file has the same number
    of tensors with the same shapes in the same order: that maps checkpoints of the same architecture
    saved under another naming scheme (torchvision MobileNetV2 into timm `mobilenetv2_100`).
    """
    for index, layout in enumerate(layouts):
        if set(state) == set(layout):
            return index, dict(state)
    for index, layout in enumerate(layouts):
        if len(state) == len(layout) and all(
                tensor.shape == shape for tensor, shape in zip(state.values(), layout.values(), strict=True)):
            return index, dict(zip(layout, state.values(), strict=True))
    raise PretrainedWeightsError(f"{source}: the weights do not fit the model. {_describe_mismatch(state, layouts)}")


def _describe_mismatch(state: Mapping[str, torch.Tensor], layouts: Sequence[Layout]) -> str:
    """One-sentence diagnosis, for a state that fits no layout by names nor by ordered shapes."""
    layout = next((candidate for candidate in layouts if len(candidate) == len(state)), None)
    if layout is None:
        expected = " or ".join(str(len(candidate)) for candidate in layouts)
        missing = sorted(set(layouts[0]) - set(state))[:3]
        return (f"The file has {len(state)} tensors, the model expects {expected}, and the names differ "
                f"(e.g. missing {missing}).")
    pairs = enumerate(zip(state.items(), layout.items(), strict=True))
    position, ((file_key, tensor), (model_key, shape)) = next(
        (index, pair) for index, pair in pairs if pair[0][1].shape != pair[1][1])
    return (f"Names differ and the ordered mapping fails at tensor {position}: file {file_key!r} "
            f"{tuple(tensor.shape)} vs model {model_key!r} {tuple(shape)}.")


def state_layout(module: torch.nn.Module) -> dict[str, torch.Size]:
    """Key -> shape of a module's state dict, in registration order."""
    return {key: value.shape for key, value in module.state_dict().items()}


def load_aligned(module: torch.nn.Module, path: str | os.PathLike) -> None:
    """Load a local weight file into `module` strictly, mapping keys by order where the names differ."""
    _, state = align_state_dict(read_state_dict(path), [state_layout(module)], path)
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise PretrainedWeightsError(f"{path}: {error}") from error
