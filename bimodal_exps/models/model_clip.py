"""Two-tower CLIP model: towers + linear projections to a joint space, l2-normalised outputs, no loss."""
from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel


def l2_normalize(features: torch.Tensor) -> torch.Tensor:
    """Unit-norm rows, computed in fp32 so that fp16/bf16 activations neither overflow nor lose the norm.

    The result stays fp32: every consumer (losses, retrieval, zero-shot) works in fp32.
    """
    return F.normalize(features.float(), dim=-1)


def enable_grad_checkpointing(tower: nn.Module, which: str) -> None:
    """Turn on activation checkpointing of a tower: timm's and open_clip's `set_grad_checkpointing`, Hugging Face's
    `activation_checkpointing_enable` (the text towers wrap their model as `.transformer`); ValueError otherwise.

    A BatchNorm tower (ResNet) recomputes its blocks in train mode, so its running statistics see each batch twice.
    """
    target = getattr(tower, "transformer", tower)
    try:
        if isinstance(target, PreTrainedModel):
            target.activation_checkpointing_enable({"use_reentrant": False})
            return
        if hasattr(target, "set_grad_checkpointing"):
            target.set_grad_checkpointing(True)
            return
    except (AssertionError, NotImplementedError, ValueError):
        pass
    raise ValueError(f"--grad_checkpointing: the {which} tower ({type(target).__name__}) does not support "
                     f"gradient checkpointing")


class CLIP(nn.Module):
    """Image tower -> `vision_proj`, text tower -> `text_proj`, both l2-normalised to `embed_dim`.

    State-dict prefixes: `visual_encoder.`, `vision_proj.`, `text_encoder.`, `text_proj.`.
    The text tower takes the tokenizer's dict (`input_ids`, optional `attention_mask`).
    """

    def __init__(self, visual_encoder: nn.Module, text_encoder: nn.Module, image_dim: int, text_dim: int,
                 embed_dim: int) -> None:
        super().__init__()
        self.visual_encoder = visual_encoder
        self.vision_proj = nn.Linear(image_dim, embed_dim)
        self.text_encoder = text_encoder
        self.text_proj = nn.Linear(text_dim, embed_dim)
        self.embed_dim = embed_dim

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] images -> [B, embed_dim] unit vectors (fp32)."""
        return l2_normalize(self.vision_proj(self.visual_encoder(images)))

    def encode_text(self, tokens: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Tokenizer output -> [B, embed_dim] unit vectors (fp32)."""
        return l2_normalize(self.text_proj(self.text_encoder(tokens)))

    def compile_towers(self, backend: str = "inductor") -> None:
        """torch.compile both towers in place: training and evaluation use them, state-dict keys stay the same."""
        self.visual_encoder.compile(backend=backend)
        self.text_encoder.compile(backend=backend)

    def set_grad_checkpointing(self) -> None:
        """Recompute both towers' block activations in the backward instead of storing them (`--grad_checkpointing`)."""
        enable_grad_checkpointing(self.visual_encoder, "image")
        enable_grad_checkpointing(self.text_encoder, "text")

    def forward(self, images: torch.Tensor, tokens: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(image_features, text_features), both [B, embed_dim] and l2-normalised."""
        return self.encode_image(images), self.encode_text(tokens)
