"""Train and evaluate a CLIP-style two-tower model with a (global) contrastive loss.

Wiring only: flags -> datasets, model, loss, optimisers -> the engine's epoch loop or evaluation.
Run `python bimodal_exps/clip.py --help` for the flags.
"""
from __future__ import annotations

import os
import sys
import traceback
import warnings
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from cli.options import UsageError, parse_args  # noqa: E402
from dataset.collate import TokenizingCollate  # noqa: E402
from dataset.errors import DataError, without_worker_traceback  # noqa: E402
from dataset.image_text import ImageTextDataset  # noqa: E402
from dataset.retrieval import RetrievalDataset  # noqa: E402
from dataset.sampler import ResumableDistributedSampler  # noqa: E402
from dataset.transforms import build_retrieval_transform, build_train_transform, build_zeroshot_transform  # noqa: E402
from dataset.zeroshot import load_zeroshot_benchmark, missing_zeroshot_data  # noqa: E402
from engine.checkpoint import (CheckpointError, NonFiniteModel, load_checkpoint, load_state_strict,  # noqa: E402
                               refuse_non_finite)
from engine.distributed import (DistEnv, DistributedSetupError, abort_process, broadcast_from_main,  # noqa: E402
                                init_distributed, local_device, shutdown_distributed, silence_non_main, wrap_ddp)
from engine.evaluation import EvalSuite  # noqa: E402
from engine.logger import format_results_table, write_eval_logs  # noqa: E402
from engine.optim import LRSchedule, create_optimizers  # noqa: E402
from engine.preemption import Preempted, StopSignal, requeue_slurm_job  # noqa: E402
from engine.runlock import RunLock, RunLockError  # noqa: E402
from engine.task import ContrastiveTask  # noqa: E402
from engine.train import StepConfig, TooManySkippedSteps  # noqa: E402
from engine.runtime import plain_args, resolve_device, seed_everything, write_args, write_json  # noqa: E402
from engine.trainer import Run, fit, resume  # noqa: E402
from models.config import ModelConfig  # noqa: E402
from models.factory import create_model, create_tokenizer  # noqa: E402
from models.gcl.state import SampleIdError  # noqa: E402
from models.losses import LOSS_HPARAMS, build_loss  # noqa: E402
from models.pretrained import PretrainedWeightsError  # noqa: E402

USER_ERRORS = (UsageError, DataError, CheckpointError, NonFiniteModel, PretrainedWeightsError,
               TooManySkippedSteps, DistributedSetupError, SampleIdError, RunLockError)


def resolve_amp(args, device: torch.device) -> torch.dtype | None:
    if not args.use_amp:
        return None
    if device.type != "cuda":
        print("--use_amp: mixed precision needs CUDA; training in fp32 on", device.type)
        return None
    return torch.bfloat16 if args.amp_dtype == "bf16" else torch.float16


def build_evaluator(args, tokenizer, device: torch.device) -> EvalSuite:
    """Retrieval on the COCO-style JSON and zero-shot on `--zs_dataset`; absent zero-shot data is skipped."""
    retrieval_set = RetrievalDataset(args.val_coco_file, args.coco_image_root,
                                     build_retrieval_transform(args.image_res), max_words=args.max_words)
    zeroshot = None
    if args.zs_dataset != "none":
        missing = missing_zeroshot_data(args.zs_dataset, args.zs_datafolder)
        if missing:
            print(f"{missing}: skipping zero-shot evaluation")
        else:
            transform = build_zeroshot_transform(args.image_res, args.zs_norm, args.zs_dataset)
            zeroshot = load_zeroshot_benchmark(args.zs_dataset, args.zs_datafolder, transform, args.legacy_classnames)
    return EvalSuite(tokenizer, device, retrieval_set, zeroshot, batch_size=args.batch_size_test,
                     zs_batch_size=args.zs_batch_size, workers=args.val_workers)


def evaluate_only(args, device: torch.device, output_dir: Path, is_main: bool) -> dict[str, float]:
    """`--evaluate --checkpoint PATH`: build the towers from config, load weights strictly, evaluate."""
    model_config = ModelConfig.from_args(args, pretrained=False)
    model = create_model(model_config).to(device)
    if args.grad_checkpointing:
        try:
            model.set_grad_checkpointing()
        except ValueError as error:
            raise UsageError(str(error)) from None
    if args.compile:
        model.compile_towers(args.compile)
    checkpoint = load_checkpoint(args.checkpoint, required=("model",))
    load_state_strict(model, checkpoint["model"], "model", args.checkpoint)
    refuse_non_finite({"model": model}, args.checkpoint)
    evaluator = build_evaluator(args, create_tokenizer(model_config), device)
    retrieval, zeroshot = evaluator.run(model)
    results = {**retrieval, **zeroshot}
    if is_main:
        write_eval_logs(output_dir, retrieval, zeroshot, checkpoint.get("epoch", 0), evaluator.zeroshot_name)
        write_json(output_dir / "eval_results.json",
                   {"checkpoint": str(args.checkpoint), "epoch": checkpoint.get("epoch"), "units": "percent",
                    "metrics": results})
        print(format_results_table(results))
    return results


def train_transform(args):
    """`--train_transform`: the random training augmentation, or the deterministic retrieval resize."""
    if args.train_transform == "deterministic":
        return build_retrieval_transform(args.image_res)
    return build_train_transform(args.image_res)


def build_train_loader(args, env, tokenizer, device: torch.device):
    """(loader, sampler with `set_epoch` and `start_at_batch`, per-sample state size, one-line description).

    A batch holds the `--accum_freq` micro-batches of one optimiser step.
    """
    step_batch = args.batch_size_train * args.accum_freq
    if args.dataset_type == "webdataset":
        from dataset.webdataset_loader import WebDatasetSpec, create_webdataset_loader  # imports webdataset
        spec = WebDatasetSpec(args.train_data, args.train_num_samples, step_batch, args.data_size,
                              seed=args.seed, rank=env.rank, world_size=env.world_size, workers=args.workers,
                              resampled=args.dataset_resampled, pin_memory=device.type == "cuda")
        loader, state_size = create_webdataset_loader(spec, train_transform(args), tokenizer)
        size_from = "--data_size" if args.data_size else "the shards' max key + 1"
        return loader, loader, state_size, (f"webdataset {args.train_data}: {args.train_num_samples} samples/epoch, "
                                           f"state size {state_size} ({size_from})")
    dataset = ImageTextDataset(args.train_files, args.train_image_dir, train_transform(args),
                               max_words=args.max_words, strict=args.strict_data, train_frac=args.train_frac)
    sampler = ResumableDistributedSampler(dataset, step_batch, num_replicas=env.world_size, rank=env.rank,
                                          shuffle=True, seed=args.seed, drop_last=True)
    loader = DataLoader(dataset, batch_size=step_batch, sampler=sampler, drop_last=True,
                        num_workers=args.workers, collate_fn=TokenizingCollate(tokenizer),
                        pin_memory=device.type == "cuda", persistent_workers=args.workers > 0)
    if len(loader) == 0:
        raise UsageError(f"{len(dataset)} training samples cannot fill one batch of --batch_size_train "
                         f"{args.batch_size_train} × --accum_freq {args.accum_freq} × {env.world_size} process(es)")
    state_size = args.data_size or dataset.num_samples
    if state_size < dataset.num_samples:
        raise UsageError(f"--data_size {args.data_size} is smaller than the {dataset.num_samples} pair ids of "
                         f"{', '.join(args.train_files)}; leave it out to size the loss state from the data")
    return loader, sampler, state_size, f"{len(dataset)} pairs ({dataset.num_skipped} skipped)"


def train(args, device: torch.device, env, output_dir: Path) -> dict[str, float]:
    model_config = ModelConfig.from_args(args, pretrained=args.init_model)
    tokenizer = create_tokenizer(model_config)
    loader, sampler, num_samples, description = build_train_loader(args, env, tokenizer, device)
    evaluator = build_evaluator(args, tokenizer, device)

    model = create_model(model_config).to(device)
    if args.grad_checkpointing:
        try:
            model.set_grad_checkpointing()
        except ValueError as error:
            raise UsageError(str(error)) from None
    if args.compile:
        model.compile_towers(args.compile)
    if args.checkpoint:
        load_state_strict(model, load_checkpoint(args.checkpoint, required=("model",))["model"], "model",
                          args.checkpoint)
        refuse_non_finite({"model": model}, args.checkpoint)
    hparams = {name: getattr(args, name) for name in LOSS_HPARAMS}
    hparams["embed_dim"] = args.embed_dim  # TempNet sizes its networks from the embedding width
    loss_fn = build_loss(args.ita_type, num_samples=num_samples, **hparams).to(device)
    task = ContrastiveTask(model, loss_fn)
    if env.distributed:
        # a uni-directional objective detaches the teacher tower, whose trainable parameters then get no gradient
        task = wrap_ddp(task, device, find_unused_parameters=getattr(loss_fn, "uni_directional", False))
    optimizers = create_optimizers(model, loss_fn, args.opt, args.lr, args.weight_decay, args.momentum,
                                   args.lr_temp_net)
    schedule = LRSchedule(optimizers, args.lr_schedule, args.sched, args.epochs, len(loader), args.min_lr,
                          args.warmup_lr, args.warmup_epochs, args.warmup_steps, args.decay_rate)
    amp_dtype = resolve_amp(args, device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    stop_signal = StopSignal().install()
    step_config = StepConfig(device=device, amp_dtype=amp_dtype, grad_clip=args.grad_clip,
                             log_every=args.log_every,
                             show_progress=args.progress and env.is_main, stop_signal=stop_signal.requested,
                             max_consecutive_skips=args.max_skipped_steps, accum_freq=args.accum_freq)
    run = Run(task=task, model=model, loss_fn=loss_fn, optimizers=optimizers, schedule=schedule, scaler=scaler,
              loader=loader, sampler=sampler, evaluator=evaluator, step_config=step_config, output_dir=output_dir,
              args=plain_args(args), epochs=args.epochs, seed=args.seed, save_freq=args.save_freq,
              eval_freq=args.eval_freq, save_every_steps=args.save_every_steps,
              keep_checkpoints=args.keep_checkpoints)
    try:
        if args.resume:
            resume(run, args.resume)
        if env.is_main:
            print(f"training {args.ita_type} on {description}, {len(loader)} iterations/epoch × {args.epochs} "
                  f"epochs, device {device}, world size {env.world_size}")
        return fit(run)
    finally:
        stop_signal.uninstall()


def claim_output_dir(args, output_dir: Path, env: DistEnv) -> RunLock | None:
    """Rank 0 creates `--output_dir`, takes its run lock, refuses a fresh run over another run's checkpoints
    and writes args.json; the other ranks wait for it and stop too when it fails. Returns rank 0's lock."""
    lock, failure = None, None
    if env.is_main:
        try:
            try:
                output_dir.mkdir(parents=True, exist_ok=True)
                lock = RunLock(output_dir).acquire()
                if lock.note:
                    print(f"note: {lock.note}")
                refuse_fresh_run_over_checkpoints(args, output_dir)
                write_args(output_dir, plain_args(args), "--output_dir")
            except OSError as error:
                raise UsageError(f"--output_dir {output_dir}: cannot write ({error.strerror})") from None
        except (UsageError, RunLockError) as error:
            if lock is not None:
                lock.release()
            failure = error
    message = broadcast_from_main(str(failure) if failure else None)
    if failure is not None:
        raise failure
    if message is not None:
        raise RunLockError(f"rank {env.rank}: stopping, rank 0 could not prepare --output_dir {output_dir}")
    return lock


def refuse_fresh_run_over_checkpoints(args, output_dir: Path) -> None:
    """A training run without --resume must not overwrite the checkpoints another run left in its folder."""
    if args.evaluate or args.resume is not None:
        return
    found = sorted(path.name for path in output_dir.glob("checkpoint_*.pth"))
    if found:
        shown = ", ".join(found[:3]) + (", …" if len(found) > 3 else "")
        raise UsageError(f"--output_dir {output_dir} already holds another run's checkpoints ({shown}); pass "
                         f"--resume to continue that run, or choose a new --output_dir")


def main(argv: list[str] | None = None) -> int:
    """Run clip.py. Exit status: 0 done, 1 error, 128 + N stopped by signal N (checkpoint_last.pth written).

    A failing rank of a distributed job ends at once instead of waiting for peers blocked in a collective:
    they fail at their next collective (gloo) or are stopped by the launcher (torchrun, srun -K), and
    `--dist_timeout` bounds the rest.
    """
    env = DistEnv()
    requeue = False
    lock = None
    try:
        args, notes = parse_args(argv)
        requeue = args.requeue_on_preempt
        device = resolve_device(args.device)
        env = init_distributed(args.distributed, device.type, args.world_size, args.dist_url, 60.0 * args.dist_timeout)
        if env.distributed:
            device = local_device(env, device.type)
            silence_non_main(env)
        output_dir = Path(args.output_dir)
        if env.is_main:
            for note in notes:
                print(f"note: {note}")
        lock = claim_output_dir(args, output_dir, env)
        seed_everything(args.seed + env.rank)
        if args.evaluate:
            evaluate_only(args, device, output_dir, env.is_main)
        else:
            train(args, device, env, output_dir)
        code = 0
    except Preempted as stop:
        code = stop.exit_code
        if env.is_main:
            print(f"{stop}; exiting with status {code}" + (f" ({requeue_slurm_job()})" if requeue else ""),
                  flush=True)
    except USER_ERRORS as error:
        print(f"error: {without_worker_traceback(str(error))}", file=sys.stderr)
        code = 1
    except Exception as error:  # a bug, not a user mistake: keep the traceback, but never hang the peers
        if not env.distributed:
            raise
        print(f"rank {env.rank}: unhandled {type(error).__name__}; ending this process", file=sys.stderr)
        traceback.print_exc()
        code = 1
    finally:
        if lock is not None:
            lock.release()
    if code == 1 and env.distributed:
        abort_process(code)
    shutdown_distributed()
    return code


if __name__ == "__main__":
    warnings.filterwarnings("once")
    sys.exit(main())
