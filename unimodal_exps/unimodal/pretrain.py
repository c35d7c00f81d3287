"""Wiring of one pre-training process: data, encoder, loss, DDP, LARS, epoch loop, logs and checkpoints."""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from dataset.sampler import ResumableDistributedSampler
from engine.distributed import DistEnv, barrier, local_device, wrap_ddp
from engine.logger import append_jsonl
from engine.runtime import UsageError, plain_args, resolve_device, seed_everything, write_args
from models.gcl.unimodal import build_unimodal_loss
from unimodal import checkpoints
from unimodal.augment import pretrain_transform
from unimodal.data import open_split
from unimodal.launch import Launch, workers_per_process
from unimodal.model import ContrastiveEncoder, TwoViewTask, count_parameters
from unimodal.optim import create_lars
from unimodal.pretrain_loop import LoopConfig, train_one_epoch
from unimodal.runtime import resolve_precision
from unimodal.schedule import scaled_lr


def _loader(args: argparse.Namespace, env: DistEnv, launch: Launch,
            device: torch.device) -> tuple[DataLoader, ResumableDistributedSampler, int]:
    """(loader, sampler, dataset size) of the two-view training set; the global batch is split over ranks."""
    if args.batch_size % env.world_size:
        raise UsageError(f"--batch-size {args.batch_size} is not divisible by the {env.world_size} processes")
    dataset = open_split(args.data, "train", pretrain_transform(args.image_size, args.crop_min, args.blur_prob),
                         args.class_list)
    per_rank = args.batch_size // env.world_size
    # its SampleKeys seed every image's augmentation by (seed, epoch, index): independent of the worker layout
    sampler = ResumableDistributedSampler(dataset, per_rank, num_replicas=env.world_size, rank=env.rank, shuffle=True,
                                          seed=args.seed, drop_last=True)
    workers = workers_per_process(args, launch)
    loader = DataLoader(dataset, batch_size=per_rank, sampler=sampler, drop_last=True, num_workers=workers,
                        pin_memory=device.type == "cuda", persistent_workers=workers > 0)
    if len(loader) == 0:
        raise UsageError(f"{len(dataset)} training images cannot fill one batch of --batch-size {args.batch_size}")
    return loader, sampler, len(dataset)


def _encoder(args: argparse.Namespace, env: DistEnv, device: torch.device) -> ContrastiveEncoder:
    """The encoder with identical initial weights on every rank (SyncBatchNorm under DDP on CUDA)."""
    seed_everything(args.seed)  # the same initial weights on every rank (DDP also broadcasts rank 0's)
    encoder = ContrastiveEncoder(args.arch, args.dim, args.mlp_dim, args.num_proj_layers)
    if env.distributed and device.type == "cuda":
        encoder = torch.nn.SyncBatchNorm.convert_sync_batchnorm(encoder)
    return encoder.to(device)


def pretrain_worker(env: DistEnv, launch: Launch, args: argparse.Namespace) -> None:
    """Pre-train in this process (rank `env.rank` of `env.world_size`)."""
    device = resolve_device(args.device)
    if env.distributed:
        device = local_device(env, device.type)
    amp_dtype = resolve_precision(args.precision, device)
    out_dir = write_args(args.save_dir, plain_args(args), "--save_dir") if env.is_main else Path(args.save_dir)
    loader, sampler, num_images = _loader(args, env, launch, device)
    encoder = _encoder(args, env, device)
    loss_fn = build_unimodal_loss(args.loss_type, num_images, temp=args.t, gamma=args.gamma).to(device)
    task = TwoViewTask(encoder, loss_fn)
    if env.distributed:
        task = wrap_ddp(task, device)
    peak_lr = scaled_lr(args.lr, args.batch_size, args.learning_rate_scaling)
    optimizer = create_lars(encoder, peak_lr, args.weight_decay, args.momentum)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    state = checkpoints.TrainingState(encoder, loss_fn, optimizer, scaler, plain_args(args))
    start_epoch = checkpoints.resume(state, args.resume) if args.resume else 0
    config = LoopConfig(device, amp_dtype, peak_lr, args.warmup_epochs, args.epochs, args.print_freq, env.is_main)
    if env.is_main:
        print(f"pre-training {args.arch} ({count_parameters(encoder) / 1e6:.1f}M parameters) with {args.loss_type} "
              f"on {num_images} images of {args.data}: global batch {args.batch_size} over {env.world_size} "
              f"process(es), {len(loader)} iterations/epoch, peak lr {peak_lr:.4g}, device {device}"
              + (f", resumed after epoch {start_epoch}" if start_epoch else ""), flush=True)
    for epoch in range(start_epoch, args.epochs):
        seed_everything(args.seed + env.rank + 1000 * epoch)
        sampler.set_epoch(epoch)
        loss_fn.set_epoch(epoch, args.epochs)
        stats = train_one_epoch(task, loader, optimizer, scaler, epoch, config)
        if env.is_main:
            append_jsonl(out_dir / "log.txt", {"epoch": epoch, **stats})
            last = epoch + 1 == args.epochs
            path = checkpoints.save(state, out_dir, epoch + 1, (epoch + 1) * len(loader),
                                    numbered=last or epoch % args.save_freq == 0)
            print(f"epoch {epoch}: loss {stats.get('loss', float('nan')):.4f}, {stats['epoch_seconds']:.1f}s; "
                  f"wrote {path}", flush=True)
        barrier()
