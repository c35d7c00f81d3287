"""Wiring of one linear-evaluation process: checkpoint -> frozen backbone, data, classifier, epochs, JSON result."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from engine.checkpoint import CheckpointError, load_checkpoint, load_state_strict
from engine.distributed import DistEnv, barrier, local_device, wrap_ddp
from engine.logger import append_jsonl
from engine.runtime import UsageError, plain_args, resolve_device, seed_everything, write_args, write_json
from unimodal import linear
from unimodal.augment import eval_transform, linear_train_transform
from unimodal.data import IndexedImageFolder, open_split
from unimodal.launch import Launch, workers_per_process
from unimodal.model import backbone_state, create_backbone, freeze
from unimodal.runtime import resolve_precision
from unimodal.schedule import cosine, scaled_lr, set_lr

RANDOM_INIT = "random"


def load_backbone(path: str, arch: str | None) -> tuple[nn.Module, dict[str, Any]]:
    """The frozen backbone of a train.py checkpoint (arch from the checkpoint unless given) and its metadata.

    `random` instead of a path: a randomly initialised `arch` (seeded), the floor a pre-training must beat.
    """
    if path == RANDOM_INIT:
        if not arch:
            raise UsageError("--pretrained random needs --arch")
        return freeze(create_backbone(arch)), {"arch": arch, "epoch": 0, "loss_type": None}
    ckpt = load_checkpoint(path)
    if "model" not in ckpt:
        raise CheckpointError(f"{path}: not a train.py checkpoint (no 'model' entry)")
    arch = arch or ckpt.get("arch")
    if not arch:
        raise UsageError(f"{path} does not name its architecture; pass --arch")
    backbone = create_backbone(arch)
    load_state_strict(backbone, backbone_state(ckpt["model"]), "backbone", path)
    return freeze(backbone), {"arch": arch, "epoch": ckpt.get("epoch"),
                              "loss_type": ckpt.get("args", {}).get("loss_type")}


def _datasets(args: argparse.Namespace, augment: bool) -> tuple[IndexedImageFolder, IndexedImageFolder]:
    """(train, val) folders: augmented or centre-cropped training images, centre-cropped validation images."""
    train_tf = linear_train_transform(args.image_size) if augment else eval_transform(args.image_size)
    train = open_split(args.data, "train", train_tf, args.class_list)
    val = open_split(args.data, "val", eval_transform(args.image_size), args.class_list)
    if train.classes != val.classes:
        raise UsageError(f"{args.data}: train/ and val/ hold different class folders")
    return train, val


def _fit_augmented(backbone: nn.Module, head: nn.Module, train_set: Dataset, val_set: Dataset,
                   args: argparse.Namespace, env: DistEnv, config: linear.ProbeConfig,
                   peak_lr: float) -> list[dict[str, Any]]:
    """Seed protocol: augmented crops through the frozen backbone every epoch, DDP over the classifier."""
    sampler = DistributedSampler(train_set, num_replicas=env.world_size, rank=env.rank, shuffle=True, seed=args.seed)
    loader = DataLoader(train_set, batch_size=config.batch_size, sampler=sampler, num_workers=config.workers,
                        pin_memory=config.device.type == "cuda", persistent_workers=config.workers > 0)
    model = head
    if env.distributed:
        model = wrap_ddp(head, config.device)
    optimizer = torch.optim.SGD(head.parameters(), lr=peak_lr, momentum=args.momentum, weight_decay=args.weight_decay)
    history = []
    for epoch in range(args.epochs):
        sampler.set_epoch(epoch)
        set_lr(optimizer, cosine(peak_lr, epoch, args.epochs))
        loss = linear.train_epoch(backbone, model, loader, optimizer, config)
        history.append({"epoch": epoch, "train_loss": loss, **linear.evaluate(backbone, head, val_set, config)})
        _report(history[-1], args, env)
    return history


def _fit_cached(backbone: nn.Module, head: nn.Module, train_set: Dataset, val_set: Dataset,
                args: argparse.Namespace, env: DistEnv, config: linear.ProbeConfig,
                peak_lr: float) -> list[dict[str, Any]]:
    """Fast variant: features once, the same classifier trained on every rank."""
    train_f, train_y = linear.cached_features(backbone, train_set, config)
    val_f, val_y = linear.cached_features(backbone, val_set, config)
    optimizer = torch.optim.SGD(head.parameters(), lr=peak_lr, momentum=args.momentum, weight_decay=args.weight_decay)
    generator = torch.Generator().manual_seed(args.seed)
    history = []
    for epoch in range(args.epochs):
        set_lr(optimizer, cosine(peak_lr, epoch, args.epochs))
        loss = linear.train_epoch_cached(head, train_f, train_y, optimizer, args.batch_size, generator)
        history.append({"epoch": epoch, "train_loss": loss,
                        **linear.evaluate_cached(head, val_f, val_y, args.batch_size)})
        _report(history[-1], args, env)
    return history


def _report(record: dict[str, Any], args: argparse.Namespace, env: DistEnv) -> None:
    """Print one epoch's numbers on rank 0 every --print-freq epochs and at the end."""
    if env.is_main and (record["epoch"] % args.print_freq == 0 or record["epoch"] + 1 == args.epochs):
        print(f"epoch {record['epoch']}: train loss {record['train_loss']:.4f}, "
              f"val top-1 {record['top1']:.2f}%, top-5 {record['top5']:.2f}%", flush=True)


def lincls_worker(env: DistEnv, launch: Launch, args: argparse.Namespace) -> None:
    """Linear evaluation in this process (rank `env.rank` of `env.world_size`)."""
    device = resolve_device(args.device)
    if env.distributed:
        device = local_device(env, device.type)
    if args.batch_size % env.world_size:
        raise UsageError(f"--batch-size {args.batch_size} is not divisible by the {env.world_size} processes")
    out_dir = Path(args.save_dir)
    if env.is_main:
        write_args(out_dir, plain_args(args), "--save_dir", "lincls_args.json")
    config = linear.ProbeConfig(device, resolve_precision(args.precision, device), args.batch_size // env.world_size,
                                workers_per_process(args, launch))
    seed_everything(args.seed)
    backbone, meta = load_backbone(args.pretrained, args.arch)
    backbone.to(device)
    train_set, val_set = _datasets(args, augment=not args.cache_features)
    seed_everything(args.seed)
    head = linear.new_classifier(backbone.num_features, len(train_set.classes)).to(device)
    peak_lr = scaled_lr(args.lr, args.batch_size, "linear")
    if env.is_main:
        print(f"linear evaluation of {args.pretrained} ({meta['arch']}, {meta['loss_type']}, epoch {meta['epoch']}): "
              f"{len(train_set)} train / {len(val_set)} val images, {len(train_set.classes)} classes, "
              f"lr {peak_lr:.4g}, {'cached features' if args.cache_features else 'augmented crops'}", flush=True)
    if args.cache_features:
        history = _fit_cached(backbone, head, train_set, val_set, args, env, config, peak_lr)
    else:
        history = _fit_augmented(backbone, head, train_set, val_set, args, env, config, peak_lr)
    if env.is_main:
        _write_result(args, meta, history, len(train_set.classes), out_dir)
    barrier()


def _write_result(args: argparse.Namespace, meta: dict[str, Any], history: list[dict[str, Any]],
                  num_classes: int, out_dir: Path) -> None:
    """Append the per-epoch log and write the JSON result (rank 0)."""
    for record in history:
        append_jsonl(out_dir / "lincls_log.txt", record)
    final = history[-1]
    result = {"pretrained": str(args.pretrained), **meta, "data": str(args.data), "num_classes": num_classes,
              "epochs": args.epochs, "batch_size": args.batch_size, "cache_features": args.cache_features,
              "top1": final["top1"], "top5": final["top5"], "best_top1": max(r["top1"] for r in history),
              "units": "percent"}
    path = Path(args.result_file) if args.result_file else out_dir / "lincls_result.json"
    write_json(path, result)
    print(f"top-1 {final['top1']:.2f}%  top-5 {final['top5']:.2f}%  (best top-1 {result['best_top1']:.2f}%); "
          f"wrote {path}", flush=True)
