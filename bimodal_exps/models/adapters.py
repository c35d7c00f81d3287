"""Parameter-efficient adapters on Hugging Face text towers (`--adapter`), through `peft` plus a native bottleneck.

With an adapter the base weights are frozen and only the adapter (and the head) trains; the tower stays in
train mode under autograd. ITRA used adapter-transformers, which does not support transformers 5; its
language adapters, Compacter (`dummy`), Mix-and-Match and UniPELT have no counterpart here.
"""
from __future__ import annotations

import torch
from torch import nn
from transformers import PreTrainedModel

from models.config import ModelBuildError

PREFIX_TOKENS = 30
BOTTLENECK_REDUCTION = 16


class Bottleneck(nn.Module):
    """x -> x + W_up ReLU(W_down x) (Houlsby et al. 2019); W_up starts at zero, so the tower starts unchanged."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.down = nn.Linear(width, max(width // BOTTLENECK_REDUCTION, 1))
        self.up = nn.Linear(self.down.out_features, width)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.up(torch.relu(self.down(x)))


def add_bottleneck_adapters(transformer: PreTrainedModel) -> nn.ModuleList:
    """Insert a Bottleneck after each layer's attention output and feed-forward output projections (BERT naming).

    Returns the adapters (the caller registers them so they are trained and saved); the base is frozen.
    """
    targets = [module for name, module in transformer.named_modules()
               if name.endswith(("attention.output.dense", ".output.dense")) and isinstance(module, nn.Linear)]
    if not targets:
        raise ModelBuildError(f"--adapter bottleneck_adapter: {type(transformer).__name__} has no BERT-style "
                              "'attention.output.dense' / 'output.dense' layers; try lora_adapter")
    transformer.requires_grad_(False)
    adapters = nn.ModuleList(Bottleneck(module.out_features) for module in targets)
    for module, adapter in zip(targets, adapters, strict=True):
        module.register_forward_hook(lambda _module, _inputs, output, adapter=adapter: adapter(output))
    return adapters


def add_peft_adapter(transformer: PreTrainedModel, name: str) -> nn.Module:
    """Wrap the encoder with a peft LoRA (r 8, alpha 16), IA3 or prefix-tuning (30 tokens) adapter."""
    try:
        from peft import IA3Config, LoraConfig, PrefixTuningConfig, TaskType, get_peft_model
    except ImportError as error:
        raise ModelBuildError(f"--adapter {name} needs the peft package (pip install peft)") from error
    configs = {
        "lora_adapter": lambda: LoraConfig(r=8, lora_alpha=16, task_type=TaskType.FEATURE_EXTRACTION),
        "ia3_adapter": lambda: IA3Config(task_type=TaskType.FEATURE_EXTRACTION),
        "prefix_tuning": lambda: PrefixTuningConfig(num_virtual_tokens=PREFIX_TOKENS, prefix_projection=True,
                                                    task_type=TaskType.FEATURE_EXTRACTION),
    }
    try:
        return get_peft_model(transformer, configs[name]())
    except ValueError as error:
        raise ModelBuildError(f"--adapter {name}: peft cannot adapt {type(transformer).__name__}: {error}") from error
