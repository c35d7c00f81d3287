"""`ModelConfig`: everything needed to build the two towers and the tokenizer, separate from the CLI."""
from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

VIT_ALIAS = "vit"
TRANSFORMER_ALIAS = "transformer"
HF_DEFAULT_MAX_LEN = 30
BPE_DEFAULT_MAX_LEN = 77

Pretrained = bool | str

IMAGE_BUILDERS = ("timm", "torchvision", "openclip")
# Builder and pooler names as ours and as ITRA spells them (values are matched case-insensitively).
TEXT_BUILDERS = {"hf": "hf", "huggingface": "hf", "bpe": "bpe", "openclip": "openclip", "sbert": "sbert"}
# Text-tower adapters (`models.adapters`); ITRA's other names (lang_adapter, dummy, mam_adapter, unipelt) are rejected.
ADAPTERS = ("lora_adapter", "ia3_adapter", "prefix_tuning", "bottleneck_adapter")
TEXT_POOLERS = {"cls": "cls", "cls_before_pooler": "cls", "pooler": "pooler", "mean": "mean", "prompt": "prompt",
                "promptbert": "prompt"}


class ModelBuildError(ValueError):
    """A model description that cannot be built (unknown name, incompatible sizes or options)."""

_TRUE_WORDS = {"true", "yes", "1", "on", "timm", "hf"}
_FALSE_WORDS = {"false", "no", "0", "off", "none", ""}


def parse_pretrained(value: Pretrained | None) -> Pretrained | None:
    """Parse a pretrained flag value: booleans (true/false, yes/no, 1/0, none; `timm`/`hf` = true) or a path.

    Usable as an argparse `type=`. `None` (flag not given) stays `None`.
    """
    if value is None or isinstance(value, bool):
        return value
    text = str(value).strip()
    if text.lower() in _TRUE_WORDS:
        return True
    if text.lower() in _FALSE_WORDS:
        return False
    return str(Path(text).expanduser())


def parse_kwargs(value: str | dict[str, Any] | None) -> dict[str, Any]:
    """Parse a JSON object of extra keyword arguments (argparse `type=` for `--image_kwargs`)."""
    if value is None:
        return {}
    try:
        parsed = json.loads(value) if isinstance(value, str) else value
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    if not isinstance(parsed, dict):
        raise ValueError(f"expected a JSON object of keyword arguments, got {value!r}")
    return dict(parsed)


@dataclass(frozen=True)
class ModelConfig:
    """Two-tower model description.

    image_encoder: timm model name, or `ViT` (= ViT-B/32 `vit_base_patch32_clip_224` at `image_res`).
    text_encoder: Hugging Face model id (resolved in the local HF cache) or local directory, or
        `Transformer` (from-scratch text transformer with open_clip's BPE tokenizer).
    image_pretrained / text_pretrained: False = random init; True = the library's default weights from
        the local caches; a path = a local weight file (text: also an HF model directory).
    text_tokenizer: local HF tokenizer directory or WordPiece `vocab.txt` (HF towers; default: found
        beside the weights or in the HF cache).
    text_max_len: tokens per caption incl. specials; None = 30 for HF towers, `context_length` for BPE;
        OpenCLIP text towers always read their model's context length.
    text_width / text_heads / text_layers / context_length: sizes of the from-scratch `Transformer`.
    image_kwargs: extra keyword arguments for `timm.create_model` (e.g. `{"depth": 2}` shrinks a ViT).
    image_builder: `timm`, `torchvision` or `openclip` (then `image_encoder` is that library's model name).
    text_builder: `hf`, `bpe` (the from-scratch Transformer), `openclip` (the text tower of an OpenCLIP model
        named `text_encoder`) or `sbert`; "" = `bpe` for `Transformer`, else `hf`.
    image_model_tag / text_model_tag: OpenCLIP pretrained name or local weight file (used when pretrained).
    text_pooler: HF towers: `cls` (h_0), `pooler` (the model's pooler head on h_0), `mean` (masked mean) or
        `prompt` (PromptBERT: the state at the [MASK] of a template around the caption).
    image_head_layers / text_head_layers: 0 = no head, 1 = Linear, n >= 2 = MLP of width `head_hidden_dim`
        (`head_bn`: BatchNorm after each hidden Linear); see `models.heads`.
    lock_image / lock_text: freeze a whole tower; lock_*_partial: comma list of parameter-name keywords to
        freeze (leading `!` = freeze all but those); see `models.locking`.
    adapter: HF text towers: `lora_adapter`, `ia3_adapter`, `prefix_tuning` (peft) or `bottleneck_adapter`;
        the base weights freeze, the adapter trains (even with `lock_text`); see `models.adapters`.
    text_prompt_tokens: BPE/OpenCLIP text towers: n learnable prompt vectors after the start token (CoOp);
        captions get n fewer tokens.
    """

    image_encoder: str = "resnet50"
    text_encoder: str = "distilbert-base-uncased"
    embed_dim: int = 256
    image_res: int = 256
    image_pretrained: Pretrained = False
    text_pretrained: Pretrained = False
    text_tokenizer: str | None = None
    text_max_len: int | None = None
    text_width: int = 512
    text_heads: int = 8
    text_layers: int = 12
    context_length: int = 77
    image_kwargs: dict[str, Any] = field(default_factory=dict)
    image_builder: str = "timm"
    text_builder: str = ""
    image_model_tag: str = ""
    text_model_tag: str = ""
    text_pooler: str = "cls"
    image_head_layers: int = 1
    text_head_layers: int = 1
    head_hidden_dim: int = 2048
    head_bn: bool = False
    lock_image: bool = False
    lock_text: bool = False
    lock_image_partial: str = ""
    lock_text_partial: str = ""
    adapter: str = ""
    text_prompt_tokens: int = 0

    def __post_init__(self) -> None:
        image_builder = self.image_builder.lower()
        if image_builder not in IMAGE_BUILDERS:
            raise ModelBuildError(f"--image_builder {self.image_builder!r}: choose one of {', '.join(IMAGE_BUILDERS)}")
        text_builder = self.text_builder.lower() or ("bpe" if self.text_encoder.lower() == TRANSFORMER_ALIAS else "hf")
        if text_builder not in TEXT_BUILDERS:
            raise ModelBuildError(f"--text_builder {self.text_builder!r}: choose one of hf, bpe, openclip, sbert")
        if self.text_pooler.lower() not in TEXT_POOLERS:
            raise ModelBuildError(f"--text_pooler {self.text_pooler!r}: choose one of cls, pooler, mean, prompt")
        object.__setattr__(self, "image_builder", image_builder)
        object.__setattr__(self, "text_builder", TEXT_BUILDERS[text_builder])
        object.__setattr__(self, "text_pooler", TEXT_POOLERS[self.text_pooler.lower()])
        if self.adapter and self.adapter not in ADAPTERS:
            raise ModelBuildError(f"--adapter {self.adapter!r} is not supported; choose one of {', '.join(ADAPTERS)}")
        if self.adapter and self.text_builder != "hf":
            raise ModelBuildError(f"--adapter needs --text_builder hf (got {self.text_builder})")
        if self.text_pooler == "prompt" and self.text_builder != "hf":
            raise ModelBuildError(f"--text_pooler prompt needs --text_builder hf (got {self.text_builder})")
        if self.text_prompt_tokens and not self.uses_bpe_text:
            raise ModelBuildError(f"--text_prompt_tokens needs --text_builder bpe or openclip (got {self.text_builder})")
        for name in ("image_head_layers", "text_head_layers", "text_prompt_tokens"):
            if getattr(self, name) < 0:
                raise ModelBuildError(f"--{name} must be >= 0, got {getattr(self, name)}")
        for name in ("embed_dim", "image_res", "text_width", "text_heads", "text_layers", "context_length"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.text_width % self.text_heads:
            raise ValueError(f"text_width {self.text_width} is not divisible by text_heads {self.text_heads}")
        if self.text_max_len is not None and self.text_max_len < 2:
            raise ValueError(f"text_max_len must leave room for the start and end tokens, got {self.text_max_len}")
        if self.text_builder == "bpe" and self.max_text_tokens > self.context_length:
            raise ValueError(f"text_max_len {self.text_max_len} exceeds context_length {self.context_length}")
        if self.text_builder == "openclip" and self.text_max_len not in (None, self.max_text_tokens):
            raise ModelBuildError(f"--text_max_len {self.text_max_len}: OpenCLIP text tower {self.text_encoder!r} "
                                  f"reads exactly {self.max_text_tokens} tokens; leave the flag out")

    @property
    def uses_bpe_text(self) -> bool:
        """True for towers fed open_clip's BPE tokens (the from-scratch Transformer, OpenCLIP text towers)."""
        return self.text_builder in ("bpe", "openclip")

    @property
    def max_text_tokens(self) -> int:
        """Tokens per caption including special tokens (the tokenizer pads and truncates to this)."""
        if self.text_builder == "openclip":
            return openclip_context_length(self.text_encoder)
        if self.text_max_len is not None:
            return self.text_max_len
        return self.context_length if self.uses_bpe_text else HF_DEFAULT_MAX_LEN

    @classmethod
    def from_args(cls, args: Any, pretrained: bool | None = None) -> ModelConfig:
        """Build from an argparse namespace whose attributes carry the field names.

        Missing or None attributes keep the defaults. A tower's weights come from `--image_pretrained` /
        `--text_pretrained` when given, else from `pretrained` (None = `args.init_model`): clip.py passes
        `pretrained=False` for `--evaluate`, where the checkpoint supplies every weight.
        """
        values = {item.name: getattr(args, item.name) for item in fields(cls)
                  if getattr(args, item.name, None) is not None}
        default = bool(getattr(args, "init_model", False)) if pretrained is None else pretrained
        for name in ("image_pretrained", "text_pretrained"):
            explicit = parse_pretrained(values.get(name))
            values[name] = default if explicit is None else explicit
        if "image_kwargs" in values:
            values["image_kwargs"] = parse_kwargs(values["image_kwargs"])
        return cls(**values)


def openclip_context_length(name: str) -> int:
    """Tokens per caption of the OpenCLIP model `name` (its positional embedding length, 77 for CLIP's)."""
    import open_clip  # only for OpenCLIP text towers: the import takes a second

    config = open_clip.get_model_config(name)
    if config is None:
        raise ModelBuildError(f"{name!r} is not an OpenCLIP model (see open_clip.list_models())")
    return int(config.get("text_cfg", {}).get("context_length", 77))


def tiny_model_config(**overrides: Any) -> ModelConfig:
    """A seconds-on-CPU model for tests and the demo.

    Same as the flags `--image_encoder test_vit --image_res 64 --text_encoder Transformer --text_width 64
    --text_heads 2 --text_layers 2 --context_length 32 --embed_dim 32`.
    """
    tiny = dict(image_encoder="test_vit", image_res=64, text_encoder="Transformer", text_width=64, text_heads=2,
                text_layers=2, context_length=32, embed_dim=32)
    return ModelConfig(**{**tiny, **overrides})  # not dataclasses.replace: the builders resolve from the overrides
