"""The flag inventory of clip.py: the reference commands (README "Training and evaluation") parse verbatim."""
from __future__ import annotations

import argparse

from cli.compose import add_composition_flags, bool_or_steps
from cli.evals import add_eval_suite_flags
from cli.flags import OneLineParser, add_bool_flag, add_flag, str2bool
from cli.itra import LOSS_FLAG_ALIASES, add_itra_loss_flags
from cli.ranges import COUNT, NON_NEGATIVE, NON_NEGATIVE_INT, POSITIVE, Range
from dataset.zeroshot import ZEROSHOT_DATASETS
from models.config import parse_kwargs, parse_pretrained
from models.losses import ITA_TYPES, LOSS_HPARAMS

# Flags the references declared but never used; accepted so old commands run, warned about when set.
COMPATIBILITY_FLAGS: dict[str, tuple[type, object]] = {
    "vision_width": (int, 768), "bert_config": (str, "configs/config_bert.json"), "warmup": (bool_or_steps, True),
    "k_test": (int, 256), "enable_surrogate": (str2bool, False), "alpha": (float, 1.0), "grad_accum": (int, 10),
    "save_learned_taus": (str2bool, False), "proto_std": (float, 10.0), "proto_num": (int, 256),
    "upper_rho_plus": (float, 0.0), "proto_weight": (float, 1.0), "sinkhorn_eps": (float, 0.05),
    "swav_temp": (float, 0.1), "swav_weight": (float, 1.0), "noise_level": (float, 0.0), "wd_temp_net": (float, 1e-3),
    "num_strategies": (int, 3), "neg_samples_per_strategy": (int, 256),
    "memory_bank_momentum": (float, 0.99), "hybrid_gamma": (float, 0.8), "hybrid_tau_min": (float, 0.005),
    "hybrid_tau_max": (float, 1.0), "total_epochs": (int, 100), "hybrid_memory_momentum": (float, 0.9),
    "hybrid_cross_modal_weight": (float, 0.5), "hybrid_difficulty_weight": (float, 0.1),
}
STORE_TRUE_COMPATIBILITY_FLAGS = ("isogclr_temp_net", "check_samples_tau", "check_tempnet_params",
                                  "vis_prototypes", "find_clusters", "extract_data")
# Ranges of the numeric flags (interval notation, cli.ranges); NaN and ±inf are refused everywhere.
SEED = Range(int, "[0, 4294967295]")  # NumPy's seed range
UNSUPPORTED_FLAGS = {
    "personalized_tau": "per-sample learnable τ of the references broadcasts τ along the wrong axis "
                        "(docs/losses.md §3); use --ita_type isogclr for per-sample temperatures",
}


def build_parser() -> argparse.ArgumentParser:
    """clip.py's parser: every flag of the references plus the project's, in --help groups."""
    parser = OneLineParser(
        prog="clip.py", description="Train and evaluate CLIP-style two-tower models with global contrastive losses.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_flag(parser, "--config", default=None, help="YAML file whose keys set flag defaults (flags still override)")
    _add_data_flags(parser)
    _add_model_flags(parser)
    add_composition_flags(parser)
    _add_loss_flags(parser)
    _add_optim_flags(parser)
    _add_run_flags(parser)
    _add_evaluation_flags(parser)
    add_eval_suite_flags(parser)
    _add_compatibility_flags(parser)
    return parser


def _add_data_flags(parser: argparse.ArgumentParser) -> None:
    """Training data, annotation paths and loaders."""
    data = parser.add_argument_group("data and paths")
    add_flag(data, "--data_path", default="./datasets", help="root of the image folders")
    add_flag(data, "--ann_path", default="./clip_train", help="folder of the annotation JSON files")
    add_flag(data, "--train_file", nargs="+", default=["cc3m_train_subset.json"],
             help="training annotation JSON(s), relative to --ann_path")
    add_flag(data, "--train_image_root", default="cc3m_subset_100k", help="training images, relative to --data_path")
    add_flag(data, "--data", default="cc3m", help="dataset tag used in logs (cc3m, cc12m, dfn_med, ...)")
    add_flag(data, "--train_frac", type=Range(float, "(0, 1]"), default=1.0,
             help="keep this prefix fraction of the training set")
    add_flag(data, "--val_coco_file", "--coco_file", default=None,
             help="COCO retrieval JSON (default: <ann_path>/coco_val.json)")
    add_flag(data, "--coco_image_root", default=None,
             help="COCO images (default: <data_path>/mscoco_val/mscoco_val2014_subset_5k)")
    add_flag(data, "--dataset_type", default="json", choices=["json", "webdataset", "csv", "auto"],
             help="training input: annotation JSON + image folder, or webdataset shards (auto: by --train-data's "
                  ".tar extension)")
    add_flag(data, "--train-data", default=None, help="webdataset shard pattern (brace expansion, '::' lists)")
    add_flag(data, "--train-num-samples", type=COUNT, default=None, help="webdataset samples per epoch")
    add_flag(data, "--data_size", "--state_size", type=COUNT, default=None,
             help="slots of the per-sample loss state: an upper bound of the webdataset sample keys (default: scan "
                  "the shards once for max key + 1), or at least the number of JSON training pairs (default)")
    add_flag(data, "--dataset_resampled", action="store_true",
             help="webdataset: draw shards with replacement (per rank and worker) instead of shuffling and splitting")
    add_flag(data, "--workers", type=NON_NEGATIVE_INT, default=4, help="training DataLoader workers")
    add_flag(data, "--val_workers", type=NON_NEGATIVE_INT, default=2, help="evaluation DataLoader workers")
    add_flag(data, "--max_words", type=COUNT, default=30, help="captions are cut to this many words")
    add_flag(data, "--train_transform", default="augment", choices=["augment", "deterministic"],
             help="training images: random crops/flips/RandomAugment, or the retrieval resize (reproducible runs, "
                  "exactness checks across world sizes)")
    add_bool_flag(data, "--strict_data", default=False,
                  help="fail on a training entry with a missing/empty image instead of skipping and counting it")


def _add_model_flags(parser: argparse.ArgumentParser) -> None:
    """Towers, pretrained weights and tokenisation."""
    model = parser.add_argument_group("model")
    add_flag(model, "--image_encoder", default="resnet50", help="timm model name; 'ViT' = ViT-B/32")
    add_flag(model, "--text_encoder", default="distilbert-base-uncased",
             help="Hugging Face name or local directory; 'Transformer' = from-scratch BPE text transformer")
    add_flag(model, "--image_res", type=COUNT, default=256, help="square input resolution")
    add_flag(model, "--embed_dim", type=COUNT, default=256, help="joint embedding size")
    add_flag(model, "--init_model", action="store_true",
             help="load pretrained weights for both towers from local files (never downloads)")
    add_flag(model, "--image_pretrained", type=parse_pretrained, default=None,
             help="true/false or a local .pth/.safetensors file; default: --init_model")
    add_flag(model, "--text_pretrained", type=parse_pretrained, default=None,
             help="true/false, an HF model directory, or a state-dict file; default: --init_model")
    add_flag(model, "--text_tokenizer", default=None,
             help="local HF tokenizer directory or WordPiece vocab.txt (default: beside the text weights / HF cache)")
    add_flag(model, "--image_kwargs", type=parse_kwargs, default=None,
             help="extra timm.create_model kwargs as JSON, e.g. '{\"depth\": 2}' to shrink a ViT")
    add_flag(model, "--text_width", type=COUNT, default=512, help="width of the from-scratch text transformer")
    add_flag(model, "--text_heads", type=COUNT, default=8, help="heads of the from-scratch text transformer")
    add_flag(model, "--text_layers", type=COUNT, default=12, help="layers of the from-scratch text transformer")
    add_flag(model, "--context_length", type=COUNT, default=77, help="BPE context length of the text transformer")
    add_flag(model, "--text_max_len", type=Range(int, "[2, inf)"), default=None,
             help="tokens per caption incl. special tokens; default 30 for HF towers, --context_length for Transformer")


def _add_loss_flags(parser: argparse.ArgumentParser) -> None:
    """--ita_type and every loss hyper-parameter (generated from LOSS_HPARAMS)."""
    loss = parser.add_argument_group("loss (math in docs/losses.md)")
    add_flag(loss, "--ita_type", default="clip", choices=ITA_TYPES, help="image-text alignment loss")
    for name, spec in LOSS_HPARAMS.items():
        kwargs = {"default": spec.default, "help": spec.help}
        if spec.type is bool:
            add_bool_flag(loss, "--" + name, *LOSS_FLAG_ALIASES.get(name, ()), default=spec.default, help=spec.help)
            continue
        if getattr(spec, "choices", None):
            kwargs["choices"] = spec.choices
        add_flag(loss, "--" + name, *LOSS_FLAG_ALIASES.get(name, ()),
                 type=Range(spec.type, spec.within) if spec.within else spec.type, **kwargs)
    add_itra_loss_flags(loss)


def _add_optim_flags(parser: argparse.ArgumentParser) -> None:
    """Optimiser, learning-rate schedule, batch sizes and precision."""
    optim = parser.add_argument_group("optimisation")
    add_flag(optim, "--opt", default="adamW", help="timm optimizer name (adamw, sgd, lamb, lars, ...)")
    add_flag(optim, "--lr", type=POSITIVE, default=2e-4, help="peak learning rate")
    add_flag(optim, "--weight_decay", type=NON_NEGATIVE, default=0.02,
             help="decoupled weight decay (not on biases/norms/τ)")
    add_flag(optim, "--momentum", type=Range(float, "[0, 1)"), default=0.9, help="momentum of SGD-family optimizers")
    add_flag(optim, "--lr_temp_net", type=NON_NEGATIVE, default=6e-6, help="Adam lr of TempNet (×0.9 per epoch)")
    add_flag(optim, "--grad_clip", "--max_norm", type=NON_NEGATIVE, default=0.0,
             help="clip the gradient norm (0 = off)")
    add_flag(optim, "--sched", default="cosine", choices=["cosine", "tanh", "step", "poly", "constant"],
             help="learning-rate schedule shape (timm)")
    add_flag(optim, "--lr_schedule", default="legacy", choices=["legacy", "step"],
             help="legacy: warm-up in 100-iteration blocks, one lr per epoch; step: per-iteration schedule")
    add_flag(optim, "--epochs", type=COUNT, default=30, help="training epochs")
    add_flag(optim, "--min_lr", type=NON_NEGATIVE, default=1e-6, help="floor of the cosine schedule")
    add_flag(optim, "--warmup_lr", type=NON_NEGATIVE, default=1e-5, help="learning rate at the start of warm-up")
    add_flag(optim, "--warmup_epochs", type=NON_NEGATIVE_INT, default=5,
             help="legacy schedule: number of 100-iteration warm-up blocks in epoch 0")
    add_flag(optim, "--warmup_steps", type=NON_NEGATIVE_INT, default=0, help="step schedule: warm-up iterations")
    add_flag(optim, "--decay_rate", type=POSITIVE, default=1.0, help="per-cycle decay of timm schedules")
    add_flag(optim, "--lit_start_epoch", "--lit-start-epoch", type=NON_NEGATIVE_INT, default=0,
             help="E > 0: the image tower and its head train only in epochs 0..E-2 (their warm-up + cosine compressed "
                  "into them, lr 0 after: a LiT phase; protoclip then trains its InfoNCE term alone); 0 = off")
    add_flag(optim, "--lr_text", "--lr-text", type=POSITIVE, default=None,
             help="peak lr of everything but the image tower and its head (default: --lr)")
    add_flag(optim, "--text_start_epoch", "--text-start-epoch", type=NON_NEGATIVE_INT, default=0,
             help="0-based epoch where the non-image parameters' own warm-up + cosine starts (lr 0 before)")
    add_flag(optim, "--text_end_epoch", "--text-end-epoch", type=COUNT, default=None,
             help="0-based epoch where the non-image parameters' schedule ends (lr 0 from it on; default: --epochs)")
    add_flag(optim, "--cooldown_epochs", type=int, default=0, help="accepted for compatibility (no effect)")
    add_flag(optim, "--batch_size_train", type=COUNT, default=128, help="per-process training batch")
    add_flag(optim, "--accum_freq", type=COUNT, default=1,
             help="micro-batches of --batch_size_train per optimiser step (exact, by gradient caching: one loss "
                  "and state update on the whole effective batch)")
    add_flag(optim, "--batch_size_test", type=COUNT, default=128, help="image batch for retrieval features")
    add_flag(optim, "--zs_batch_size", "--zeroshot_batch_size", type=COUNT, default=512, help="zero-shot image batch")
    add_flag(optim, "--use_amp", action="store_true", help="mixed precision on CUDA (fp32 on CPU)")
    add_flag(optim, "--amp_dtype", default="fp16", choices=["fp16", "bf16"], help="autocast dtype with --use_amp")


def _add_run_flags(parser: argparse.ArgumentParser) -> None:
    """Distributed set-up, device, outputs, checkpoints and logging."""
    run = parser.add_argument_group("distributed, device, outputs")
    add_bool_flag(run, "--distributed", default=None,
                  help="use torch.distributed (default: on when launched with world size > 1)")
    add_flag(run, "--world_size", type=COUNT, default=None, help="expected number of processes (checked)")
    add_flag(run, "--dist_url", default="env://", help="rendezvous URL")
    add_flag(run, "--dist_timeout", type=POSITIVE, default=30.0,
             help="minutes a collective may wait for the other ranks before the job fails")
    add_flag(run, "--requeue_on_preempt", action="store_true",
             help="after SIGTERM/SIGUSR1 has written checkpoint_last.pth, run `scontrol requeue $SLURM_JOB_ID`")
    add_flag(run, "--device", default=None, help="cpu, cuda or cuda:N (default: cuda when available)")
    add_flag(run, "--grad_checkpointing", action="store_true",
             help="recompute the towers' block activations in the backward (less memory, ~30%% more compute): "
                  "timm, Hugging Face and the BPE transformer towers")
    add_flag(run, "--compile", nargs="?", const="inductor", default=None, metavar="BACKEND",
             help="torch.compile both towers (default backend inductor; e.g. aot_eager to debug a graph break)")
    add_flag(run, "--seed", type=SEED, default=42, help="base seed (each process adds its rank)")
    add_flag(run, "--output_dir", default="./output/clip_test", help="where logs and checkpoints go")
    add_flag(run, "--resume", nargs="?", const="", default=None,
             help="resume from PATH (no value: checkpoint_last.pth in --output_dir)")
    add_flag(run, "--checkpoint", default="", help="weights to evaluate (--evaluate) or to start training from")
    add_flag(run, "--save_freq", type=COUNT, default=1, help="write checkpoint_<epoch>.pth every N epochs")
    add_flag(run, "--keep_checkpoints", type=NON_NEGATIVE_INT, default=0,
             help="keep only the K newest checkpoint_<epoch>.pth (0 = all); the one checkpoint_last.pth names stays")
    add_flag(run, "--save_every_steps", type=NON_NEGATIVE_INT, default=0,
             help="also write checkpoint_last.pth every N training steps, inside epochs; --resume continues at "
                  "that step (0 = only at epoch ends)")
    add_flag(run, "--max_skipped_steps", type=COUNT, default=100,
             help="stop (after writing checkpoint_last.pth) when K steps in a row have a non-finite loss")
    add_flag(run, "--log_every", type=COUNT, default=50, help="progress-bar refresh interval (iterations)")
    add_bool_flag(run, "--progress", default=True, help="show a tqdm progress bar")


def _add_evaluation_flags(parser: argparse.ArgumentParser) -> None:
    """Retrieval and zero-shot evaluation."""
    evaluation = parser.add_argument_group("evaluation")
    add_flag(evaluation, "--evaluate", action="store_true", help="evaluate --checkpoint and exit")
    add_flag(evaluation, "--eval_freq", type=NON_NEGATIVE_INT, default=0,
             help="also evaluate every N epochs (0: only at the end)")
    add_flag(evaluation, "--zs_dataset", default="imagenet", choices=[*ZEROSHOT_DATASETS, "none", ""],
             help="zero-shot classification set ('none' skips it; absent data is skipped with a note)")
    add_flag(evaluation, "--zs_datafolder", default=None,
             help="ImageNet-style class folders, or torchvision's CIFAR root holding cifar-10-batches-py / "
                  "cifar-100-python (default: <data_path>/imagenet/val, or <data_path> for CIFAR)")
    add_flag(evaluation, "--zs_norm", default="clip", choices=["clip", "legacy"],
             help="zero-shot normalisation: training constants, or the references' per-dataset constants")
    add_flag(evaluation, "--legacy_classnames", action="store_true",
             help="ImageNet names of the course-template/HybridSogCLR code (class 267 misspelt 'Standard Poodale'), to "
                  "reproduce their numbers exactly")


def _add_compatibility_flags(parser: argparse.ArgumentParser) -> None:
    """Reference flags accepted so old commands run (hidden from --help)."""
    compat = parser.add_argument_group("accepted for compatibility with the reference repositories (no effect)")
    for name, (kind, default) in COMPATIBILITY_FLAGS.items():
        add_flag(compat, "--" + name, type=kind, default=default, help=argparse.SUPPRESS)
    for name in STORE_TRUE_COMPATIBILITY_FLAGS:
        add_flag(compat, "--" + name, action="store_true", help=argparse.SUPPRESS)
    add_flag(compat, "--store_tau", action="store_true", help=argparse.SUPPRESS)
    for name in UNSUPPORTED_FLAGS:
        add_flag(compat, "--" + name, action="store_true", help=argparse.SUPPRESS)
