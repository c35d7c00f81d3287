"""Two-tower CLIP model: towers + projection heads to a joint space, l2-normalised outputs, no loss."""
from __future__ import annotations

from collections.abc import Mapping
from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel

from models.heads import build_head
from models.locking import lock_fully


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

    State-dict prefixes: `visual_encoder.`, `vision_proj.`, `text_encoder.`, `text_proj.` (1-layer heads are
    one Linear, as before heads became configurable). The text tower takes the tokenizer's dict
    (`input_ids`, optional `attention_mask`). A locked tower has no trainable parameters, runs under
    `no_grad` and stays in eval mode whatever `train()` is called with.
    """

    def __init__(self, visual_encoder: nn.Module, text_encoder: nn.Module, image_dim: int, text_dim: int,
                 embed_dim: int, image_head_layers: int = 1, text_head_layers: int = 1, head_hidden_dim: int = 2048,
                 head_bn: bool = False, lock_image: bool = False, lock_text: bool = False) -> None:
        super().__init__()
        self.visual_encoder = visual_encoder
        self.vision_proj = build_head(image_dim, embed_dim, image_head_layers, head_hidden_dim, head_bn)
        self.text_encoder = text_encoder
        self.text_proj = build_head(text_dim, embed_dim, text_head_layers, head_hidden_dim, head_bn)
        self.embed_dim = embed_dim
        self.image_locked = lock_image
        self.text_locked = lock_text
        if lock_image:
            lock_fully(visual_encoder)
        if lock_text:
            lock_fully(text_encoder)

    def train(self, mode: bool = True) -> CLIP:
        """Set train/eval mode on everything except locked towers, which stay in eval mode."""
        super().train(mode)
        for locked, tower in ((self.image_locked, self.visual_encoder), (self.text_locked, self.text_encoder)):
            if locked:
                tower.eval()
        return self

    def image_side_parameters(self) -> list[nn.Parameter]:
        """The image tower's and its head's parameters: what a LiT phase stops training (ProtoCLIP's `visual`
        module holds both)."""
        return [*self.visual_encoder.parameters(), *self.vision_proj.parameters()]

    def encode_image_backbone(self, images: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] images -> the image tower's pooled features before the head (linear probe, k-NN)."""
        with torch.no_grad() if self.image_locked else nullcontext():
            return self.visual_encoder(images)

    def encode_text_backbone(self, tokens: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Tokenizer output -> the text tower's pooled features before the head."""
        with torch.no_grad() if self.text_locked else nullcontext():
            return self.text_encoder(tokens)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] images -> [B, embed_dim] unit vectors (fp32)."""
        return l2_normalize(self.vision_proj(self.encode_image_backbone(images)))

    def encode_text(self, tokens: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Tokenizer output -> [B, embed_dim] unit vectors (fp32)."""
        return l2_normalize(self.text_proj(self.encode_text_backbone(tokens)))

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
