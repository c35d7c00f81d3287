"""Export a checkpoint of clip.py as an OpenCLIP `local-dir` model, for OpenCLIP and CLIP_benchmark.

    python bimodal_exps/export.py --checkpoint output/run/checkpoint_best.pth --out exported/
    open_clip.create_model_and_transforms("local-dir:exported/")   # or clip_benchmark eval --model local-dir:exported/

DIR gets `open_clip_config.json` (model_cfg + preprocess_cfg), `open_clip_model.safetensors` and the tokenizer:
OpenCLIP's BPE for the from-scratch Transformer, the Hugging Face tokenizer files for HF towers. A timm image tower
built with no extra arguments is named by its timm architecture; one with build arguments (e.g. img_size or depth)
is described by a timm `config.json` in DIR/timm, and an HF text tower by its `config.json` in DIR. OpenCLIP hands
those two paths to timm and transformers as they are, so they are written absolute and DIR moves freely only
without them (export.py says so; otherwise export again after moving). Expressible: timm image tower + BPE Transformer or HF text tower, with 0-layer, 1-layer or OpenCLIP-shaped
2-layer heads. Anything else stops with one line saying which tower and why.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import open_clip  # noqa: E402
import torch  # noqa: E402
from open_clip.transformer import QuickGELU  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from timm.models import save_for_hf  # noqa: E402
from torch import nn  # noqa: E402

from dataset.transforms import CLIP_MEAN, CLIP_STD  # noqa: E402
from engine.checkpoint import CheckpointError, load_checkpoint  # noqa: E402
from models.config import ModelConfig  # noqa: E402
from models.factory import create_model, create_tokenizer  # noqa: E402
from models.image_tower import resolve_image_encoder, timm_kwargs  # noqa: E402
from models.model_clip import CLIP  # noqa: E402
from models.text_tower import BPETextEncoder, HFTextEncoder, OpenCLIPTextEncoder  # noqa: E402

WEIGHTS_FILE = "open_clip_model.safetensors"  # the first name open_clip's local-dir loader looks for
CONFIG_FILE = "open_clip_config.json"
TIMM_SUBDIR = "timm"
# Our HF poolers as OpenCLIP's HFTextEncoder names them.
HF_POOLERS = {"cls": "cls_last_hidden_state_pooler", "pooler": "cls_pooler", "mean": "mean_pooler"}


class ExportError(ValueError):
    """A model that OpenCLIP cannot express; the message names the tower and the reason."""


def head_as_linear(head: nn.Module, in_dim: int) -> nn.Linear | None:
    """A 0-layer head as an identity Linear, a 1-layer head as itself; None for an MLP head."""
    if isinstance(head, nn.Linear):
        return head
    if isinstance(head, nn.Identity):
        linear = nn.Linear(in_dim, in_dim)
        nn.init.eye_(linear.weight)
        nn.init.zeros_(linear.bias)
        return linear
    return None


def openclip_mlp(head: nn.Module, embed_dim: int) -> tuple[nn.Linear, nn.Linear] | None:
    """(fc1, fc2) when `head` is timm's `Mlp` as OpenCLIP's `timm_proj: mlp` builds it: Linear -> GELU -> Linear,
    hidden width 2 x embed_dim, no BatchNorm; else None."""
    if not isinstance(head, nn.Sequential) or len(head) != 3:
        return None
    fc1, act, fc2 = head
    if isinstance(fc1, nn.Linear) and isinstance(act, nn.GELU) and act.approximate == "none" \
            and isinstance(fc2, nn.Linear) and fc1.out_features == 2 * embed_dim:
        return fc1, fc2
    return None


def image_part(cfg: ModelConfig, model: CLIP, out: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """OpenCLIP `vision_cfg` and `visual.*` tensors for a timm or OpenCLIP tower and its head."""
    if cfg.image_builder == "torchvision":
        raise ExportError("image tower: --image_builder torchvision is not expressible in OpenCLIP "
                          "(it builds image towers from timm or its own ViT/ResNet configs only)")
    if cfg.image_builder == "openclip":
        return openclip_image_part(cfg, model)
    tower = model.visual_encoder
    if int(getattr(tower, "head_hidden_size", None) or tower.num_features) != tower.num_features:
        raise ExportError(f"image tower: {cfg.image_encoder} has a hidden layer after pooling "
                          "(head_hidden_size != num_features); OpenCLIP's TimmModel projects from num_features")
    state = {f"visual.trunk.{key}": value for key, value in tower.state_dict().items()}
    linear = head_as_linear(model.vision_proj, tower.num_features)
    mlp = openclip_mlp(model.vision_proj, model.embed_dim)
    if linear is not None:
        proj = "linear"
        state.update({"visual.head.proj.weight": linear.weight, "visual.head.proj.bias": linear.bias})
    elif mlp is not None:
        proj = "mlp"
        for name, layer in zip(("fc1", "fc2"), mlp):
            state.update({f"visual.head.mlp.{name}.weight": layer.weight, f"visual.head.mlp.{name}.bias": layer.bias})
    else:
        raise ExportError(f"image head: --image_head_layers {cfg.image_head_layers} with --head_hidden_dim "
                          f"{cfg.head_hidden_dim}{' and --head_bn' if cfg.head_bn else ''} is not expressible; "
                          f"OpenCLIP's timm MLP head has 2 layers of hidden width 2 x embed_dim "
                          f"({2 * model.embed_dim}) and no BatchNorm")
    arch = resolve_image_encoder(cfg.image_encoder)
    # OpenCLIP's TimmModel passes no build arguments to timm: a tower that needs some is described by a config
    # folder (written by export()), one that needs none by its architecture name, which keeps DIR movable
    name = f"local-dir:{(out / TIMM_SUBDIR).resolve()}" if timm_kwargs(arch, cfg.image_res, cfg.image_kwargs) else arch
    vision_cfg = {"timm_model_name": name, "timm_model_pretrained": False,
                  "timm_pool": "", "timm_proj": proj, "timm_proj_bias": True, "image_size": cfg.image_res}
    return vision_cfg, state


def openclip_image_part(cfg: ModelConfig, model: CLIP) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The OpenCLIP model's own `vision_cfg` at our resolution and its `visual.*` tensors (0-layer head only)."""
    if not isinstance(model.vision_proj, nn.Identity):
        raise ExportError(f"image head: --image_head_layers {cfg.image_head_layers} on OpenCLIP {cfg.image_encoder} "
                          "is not expressible; OpenCLIP's vision projection has no bias and nothing after it "
                          "(use --image_head_layers 0)")
    vision_cfg = dict(open_clip.get_model_config(cfg.image_encoder)["vision_cfg"], image_size=cfg.image_res)
    return vision_cfg, {f"visual.{key}": value for key, value in model.visual_encoder.state_dict().items()}


def openclip_text_part(cfg: ModelConfig, model: CLIP) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The OpenCLIP model's own `text_cfg` and text tensors; a 1-layer head is folded into its projection."""
    tower: OpenCLIPTextEncoder = model.text_encoder
    clip = tower.clip
    if tower.prompts is not None:
        raise ExportError("text tower: --text_prompt_tokens inserts learnable prompt vectors, which OpenCLIP's "
                          "text transformer has no place for")
    if not hasattr(clip, "token_embedding"):
        raise ExportError(f"text tower: OpenCLIP {cfg.text_encoder} has a custom text tower, which export.py does "
                          "not map (exported: OpenCLIP models with the built-in text transformer)")
    text_cfg = dict(open_clip.get_model_config(cfg.text_encoder)["text_cfg"])
    state = dict(clip.state_dict())
    head = model.text_proj
    if isinstance(head, nn.Linear):
        # head(x @ P) = x @ (P W^T) + b: one biased Linear, OpenCLIP's `proj_bias`.
        projection = state.pop("text_projection")
        if isinstance(clip.text_projection, nn.Linear):
            weight = head.weight @ projection
            bias = head.weight @ state.pop("text_projection.bias") + head.bias
        else:
            weight, bias = head.weight @ projection.T, head.bias
        state.pop("text_projection.weight", None)
        state.update({"text_projection.weight": weight, "text_projection.bias": bias})
        text_cfg.update(proj_type="linear", proj_bias=True)
    elif not isinstance(head, nn.Identity):
        raise ExportError(f"text head: --text_head_layers {cfg.text_head_layers} is not expressible; OpenCLIP's "
                          "text projection is a single Linear")
    return text_cfg, state


def bpe_text_part(cfg: ModelConfig, model: CLIP) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """OpenCLIP `text_cfg` and top-level text tensors for the from-scratch Transformer and its head."""
    tower: BPETextEncoder = model.text_encoder
    if tower.prompts is not None:
        raise ExportError("text tower: --text_prompt_tokens inserts learnable prompt vectors, which OpenCLIP's "
                          "TextTransformer has no place for")
    linear = head_as_linear(model.text_proj, tower.num_features)
    if linear is None:
        raise ExportError(f"text head: --text_head_layers {cfg.text_head_layers} is not expressible; OpenCLIP's "
                          "TextTransformer projection is a single Linear")
    transformer = tower.transformer
    # Positions beyond the tokenizer's length are never read; dropping them makes OpenCLIP's tokenizer pad
    # and truncate exactly as ours.
    context = cfg.max_text_tokens
    state = {key: value for key, value in transformer.state_dict().items() if key != "attn_mask"}
    state["positional_embedding"] = state["positional_embedding"][:context]
    state.update({"text_projection.weight": linear.weight, "text_projection.bias": linear.bias})
    text_cfg = {"context_length": context, "vocab_size": transformer.vocab_size, "width": tower.num_features,
                "heads": cfg.text_heads, "layers": cfg.text_layers, "pool_type": "argmax", "proj_type": "linear",
                "proj_bias": True}
    return text_cfg, state


def hf_text_part(cfg: ModelConfig, model: CLIP, out: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """OpenCLIP `text_cfg` and `text.*` tensors for an HF tower (its config and tokenizer will be in `out`)."""
    tower: HFTextEncoder = model.text_encoder
    if cfg.adapter:
        raise ExportError(f"text tower: --adapter {cfg.adapter} adds modules OpenCLIP's HFTextEncoder does not build")
    if not isinstance(model.text_proj, nn.Identity):
        raise ExportError(f"text head: --text_head_layers {cfg.text_head_layers} is not expressible; OpenCLIP's HF "
                          "text projections have no bias (use --text_head_layers 0 with a matching --embed_dim, or "
                          "the BPE Transformer)")
    state = {f"text.transformer.{key}": value for key, value in tower.transformer.state_dict().items()}
    text_cfg = {"hf_model_name": str(out.resolve()), "hf_tokenizer_name": str(out.resolve()),
                "hf_model_pretrained": False, "hf_proj_type": None, "hf_pooler_type": HF_POOLERS[cfg.text_pooler],
                "context_length": cfg.max_text_tokens}
    return text_cfg, state


def export(cfg: ModelConfig, model: CLIP, out: Path) -> Path:
    """Write `model` (built from `cfg`) as an OpenCLIP local-dir model in `out`; returns the config path."""
    if cfg.text_builder == "sbert":
        raise ExportError("text tower: --text_builder sbert (a sentence-transformers pipeline) is not expressible "
                          "in OpenCLIP (exported: BPE Transformer, Hugging Face and OpenCLIP text towers)")
    quick_gelu = shared_quick_gelu(cfg, model)
    vision_cfg, state = image_part(cfg, model, out)
    if cfg.text_builder == "bpe":
        text_cfg, text_state = bpe_text_part(cfg, model)
    elif cfg.text_builder == "openclip":
        text_cfg, text_state = openclip_text_part(cfg, model)
    else:
        text_cfg, text_state = hf_text_part(cfg, model, out)
    state.update(text_state)
    state["logit_scale"] = torch.tensor(math.log(1 / 0.07))  # not part of the embeddings; OpenCLIP's default
    model_cfg: dict[str, Any] = {"embed_dim": model.embed_dim, "quick_gelu": quick_gelu, "vision_cfg": vision_cfg,
                                 "text_cfg": text_cfg}
    if cfg.text_builder == "hf":
        model_cfg["custom_text"] = True
    out.mkdir(parents=True, exist_ok=True)  # only now: a refused model leaves nothing behind
    if vision_cfg.get("timm_model_name", "").startswith("local-dir:"):
        save_for_hf(model.visual_encoder, out / TIMM_SUBDIR, safe_serialization=True)
    if cfg.text_builder == "hf":
        model.text_encoder.transformer.config.save_pretrained(out)
        create_tokenizer(cfg).tokenizer.save_pretrained(out)
    preprocess_cfg = {"size": cfg.image_res, "mode": "RGB", "mean": list(CLIP_MEAN), "std": list(CLIP_STD),
                      "interpolation": "bilinear", "resize_mode": "shortest", "fill_color": 0}
    save_file({key: value.detach().contiguous().clone() for key, value in state.items()}, str(out / WEIGHTS_FILE))
    config_path = out / CONFIG_FILE
    config_path.write_text(json.dumps({"model_cfg": model_cfg, "preprocess_cfg": preprocess_cfg}, indent=2) + "\n")
    return config_path


def absolute_paths(config_path: Path) -> list[str]:
    """The folders an exported config names by absolute path (a timm config folder, an HF config): OpenCLIP
    reads them from there, so DIR cannot be moved without exporting again."""
    model_cfg = json.loads(config_path.read_text())["model_cfg"]
    timm_name = model_cfg["vision_cfg"].get("timm_model_name") or ""
    paths = []
    if timm_name.startswith("local-dir:"):
        paths.append(timm_name.removeprefix("local-dir:"))
    if "hf_model_name" in model_cfg["text_cfg"]:
        paths.append(model_cfg["text_cfg"]["hf_model_name"])
    return paths


def shared_quick_gelu(cfg: ModelConfig, model: CLIP) -> bool:
    """OpenCLIP's one `quick_gelu` switch for its own towers (OpenCLIP builders, BPE Transformer): they must agree."""
    native = {"image": model.visual_encoder if cfg.image_builder == "openclip" else None,
              "text": model.text_encoder if cfg.text_builder in ("bpe", "openclip") else None}
    uses = {side: any(isinstance(module, QuickGELU) for module in tower.modules())
            for side, tower in native.items() if tower is not None}
    if len(set(uses.values())) > 1:
        raise ExportError(f"towers: OpenCLIP has one QuickGELU switch for both towers, but the image tower "
                          f"{'uses' if uses['image'] else 'does not use'} QuickGELU and the text tower "
                          f"{'does' if uses['text'] else 'does not'}")
    return any(uses.values())


def load_model(checkpoint_path: str) -> tuple[ModelConfig, CLIP]:
    """The model config from a checkpoint's `args` and the model with its weights (strict)."""
    checkpoint = load_checkpoint(checkpoint_path, required=("model", "args"))
    if not isinstance(checkpoint["args"], dict):
        raise CheckpointError(f"{checkpoint_path}: 'args' is not the dict of flags clip.py saves")
    cfg = ModelConfig.from_args(SimpleNamespace(**checkpoint["args"]), pretrained=False)
    model = create_model(cfg)
    model.load_state_dict(checkpoint["model"], strict=True)
    return cfg, model.eval()


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: export, print the written directory; a one-line error for anything not exportable."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="checkpoint written by clip.py")
    parser.add_argument("--out", required=True, help="directory for the OpenCLIP local-dir model")
    args = parser.parse_args(argv)
    try:
        cfg, model = load_model(args.checkpoint)
        config_path = export(cfg, model, Path(args.out))
    except (ValueError, OSError, RuntimeError) as error:  # ExportError, ModelBuildError, CheckpointError among them
        print(f"export.py: {str(error).splitlines()[0]}", file=sys.stderr)
        return 2
    print(f"wrote OpenCLIP model to {args.out}: open_clip.create_model_and_transforms('local-dir:{args.out}')")
    paths = absolute_paths(config_path)
    if paths:
        print(f"note: {CONFIG_FILE} names {' and '.join(paths)} by absolute path (OpenCLIP reads them from there); "
              "after moving or copying the folder elsewhere, export again")
    else:
        print("the folder can be moved: its config names no paths")
    return 0


if __name__ == "__main__":
    sys.exit(main())
