"""Train and evaluate a CLIP-style two-tower model with a (global) contrastive loss.

Wiring only: flags -> datasets, model, loss, optimisers -> the engine's epoch loop or evaluation.
Run `python bimodal_exps/clip.py --help` for the flags.
"""
from __future__ import annotations

import json
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
from engine.checkpoint import CheckpointError, load_checkpoint, load_state_strict  # noqa: E402
from engine.distributed import (DistEnv, DistributedSetupError, abort_process, init_distributed,  # noqa: E402
                                local_device, shutdown_distributed, silence_non_main)
from engine.evals.build import build_families, schedule_from_args  # noqa: E402
from engine.evaluation import EvalSuite  # noqa: E402
from engine.logger import append_jsonl, format_results_table, write_eval_logs, write_eval_results  # noqa: E402
from engine.optim import LRSchedule, create_optimizers  # noqa: E402
from engine.preemption import Preempted, StopSignal, requeue_slurm_job  # noqa: E402
from engine.task import ContrastiveTask  # noqa: E402
from engine.tracking import Tracker  # noqa: E402
from engine.train import StepConfig, TooManySkippedSteps  # noqa: E402
from engine.trainer import Run, fit, resume, seed_everything  # noqa: E402
from models.config import ModelConfig  # noqa: E402
from models.factory import create_model, create_tokenizer  # noqa: E402
from models.gcl.state import SampleIdError  # noqa: E402
from models.losses import LOSS_HPARAMS, build_loss  # noqa: E402
from models.pretrained import PretrainedWeightsError  # noqa: E402

USER_ERRORS = (UsageError, DataError, CheckpointError, PretrainedWeightsError, TooManySkippedSteps,
               DistributedSetupError, SampleIdError)


def resolve_device(requested: str | None) -> torch.device:
    if requested:
        device = torch.device(requested)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise UsageError(f"--device {requested}: CUDA is not available on this machine")
        return device
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_amp(args, device: torch.device) -> torch.dtype | None:
    if not args.use_amp:
        return None
    if device.type != "cuda":
        print("--use_amp: mixed precision needs CUDA; training in fp32 on", device.type)
        return None
    return torch.bfloat16 if args.amp_dtype == "bf16" else torch.float16


def build_evaluator(args, tokenizer, device: torch.device) -> EvalSuite:
    """The `--eval_suite` families on their schedule; a family whose data is absent is skipped with one line."""
    notes = []
    retrieval_set = None
    if "retrieval" in args.eval_suite:
        if os.path.isfile(args.val_coco_file) and os.path.isdir(args.coco_image_root):
            retrieval_set = RetrievalDataset(args.val_coco_file, args.coco_image_root,
                                             build_retrieval_transform(args.image_res), max_words=args.max_words)
        else:
            missing = args.val_coco_file if not os.path.isfile(args.val_coco_file) else args.coco_image_root
            notes.append(f"{missing} not found: skipping retrieval evaluation")
    zeroshot = None
    if args.zs_dataset != "none" and {"zeroshot", "linear"} & set(args.eval_suite):
        missing = missing_zeroshot_data(args.zs_dataset, args.zs_datafolder)
        if missing:
            notes.append(f"{missing}: skipping zero-shot evaluation")
        else:
            transform = build_zeroshot_transform(args.image_res, args.zs_norm, args.zs_dataset)
            zeroshot = load_zeroshot_benchmark(args.zs_dataset, args.zs_datafolder, transform, args.legacy_classnames)
    families, family_notes = build_families(args, tokenizer, device, zeroshot, retrieval_set)
    for note in notes + family_notes:
        print(note)  # other ranks' stdout is silenced
    if "zeroshot" not in args.eval_suite:
        zeroshot = None
    if args.evaluate and retrieval_set is None and zeroshot is None and not families:
        raise UsageError("--evaluate: no evaluation data found for --eval_suite "
                         f"{','.join(args.eval_suite)} (see the lines above)")
    return EvalSuite(tokenizer, device, retrieval_set, zeroshot,
                     batch_size=args.batch_size_test, zs_batch_size=args.zs_batch_size, workers=args.val_workers,
                     extra=families, schedule=schedule_from_args(args))


def write_json(path: Path, payload: dict) -> None:
    path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")


def evaluate_only(args, device: torch.device, output_dir: Path, is_main: bool) -> dict[str, float]:
    """`--evaluate --checkpoint PATH`: build the towers from config, load weights strictly, evaluate."""
    model_config = ModelConfig.from_args(args, pretrained=False)
    model = create_model(model_config).to(device)
    if args.compile:
        model.compile_towers(args.compile)
    checkpoint = load_checkpoint(args.checkpoint, required=("model",))
    load_state_strict(model, checkpoint["model"], "model", args.checkpoint)
    evaluator = build_evaluator(args, create_tokenizer(model_config), device)
    retrieval, zeroshot, extra = evaluator.run(model)
    results = {**retrieval, **zeroshot, **extra}
    if is_main:
        write_eval_logs(output_dir, retrieval, zeroshot, checkpoint.get("epoch", 0), evaluator.zeroshot_name)
        append_jsonl(output_dir / "log.txt", {"epoch": checkpoint.get("epoch"), "evaluate": str(args.checkpoint),
                                              **results})
        write_eval_results(output_dir / "eval_results.json", results, checkpoint=str(args.checkpoint),
                           epoch=checkpoint.get("epoch"))
        print(format_results_table(results))
    return results


def train_transform(args):
    """`--train_transform`: the random training augmentation, or the deterministic retrieval resize."""
    if args.train_transform == "deterministic":
        return build_retrieval_transform(args.image_res)
    return build_train_transform(args.image_res)


def build_train_loader(args, env, tokenizer, device: torch.device):
    """(loader, sampler with `set_epoch` and `start_at_batch`, per-sample state size, one-line description)."""
    if args.dataset_type == "webdataset":
        from dataset.webdataset_loader import WebDatasetSpec, create_webdataset_loader  # imports webdataset
        spec = WebDatasetSpec(args.train_data, args.train_num_samples, args.batch_size_train, args.data_size,
                              seed=args.seed, rank=env.rank, world_size=env.world_size, workers=args.workers,
                              resampled=args.dataset_resampled, pin_memory=device.type == "cuda")
        loader, state_size = create_webdataset_loader(spec, train_transform(args), tokenizer)
        size_from = "--data_size" if args.data_size else "the shards' max key + 1"
        return loader, loader, state_size, (f"webdataset {args.train_data}: {args.train_num_samples} samples/epoch, "
                                           f"state size {state_size} ({size_from})")
    dataset = ImageTextDataset(args.train_files, args.train_image_dir, train_transform(args),
                               max_words=args.max_words, strict=args.strict_data, train_frac=args.train_frac)
    sampler = ResumableDistributedSampler(dataset, args.batch_size_train, num_replicas=env.world_size, rank=env.rank,
                                          shuffle=True, seed=args.seed, drop_last=True)
    loader = DataLoader(dataset, batch_size=args.batch_size_train, sampler=sampler, drop_last=True,
                        num_workers=args.workers, collate_fn=TokenizingCollate(tokenizer),
                        pin_memory=device.type == "cuda", persistent_workers=args.workers > 0)
    if len(loader) == 0:
        raise UsageError(f"{len(dataset)} training samples cannot fill one batch of --batch_size_train "
                         f"{args.batch_size_train} × {env.world_size} process(es)")
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
    if args.compile:
        model.compile_towers(args.compile)
    if args.checkpoint:
        load_state_strict(model, load_checkpoint(args.checkpoint, required=("model",))["model"], "model",
                          args.checkpoint)
    hparams = {name: getattr(args, name) for name in LOSS_HPARAMS}
    hparams["embed_dim"] = args.embed_dim  # TempNet sizes its networks from the embedding width
    loss_fn = build_loss(args.ita_type, num_samples=num_samples, **hparams).to(device)
    task = ContrastiveTask(model, loss_fn)
    if env.distributed:
        # a uni-directional objective detaches the teacher tower, whose trainable parameters then get no gradient
        task = torch.nn.parallel.DistributedDataParallel(
            task, device_ids=[device.index] if device.type == "cuda" else None, forward_sync_buffers=False,
            find_unused_parameters=getattr(loss_fn, "uni_directional", False))
    optimizers = create_optimizers(model, loss_fn, args.opt, args.lr, args.weight_decay, args.momentum,
                                   args.lr_temp_net)
    schedule = LRSchedule(optimizers.main, args.lr_schedule, args.sched, args.epochs, len(loader), args.min_lr,
                          args.warmup_lr, args.warmup_epochs, args.warmup_steps, args.decay_rate)
    amp_dtype = resolve_amp(args, device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    tracker = Tracker(args.report_to, output_dir, _plain_args(args), env.is_main)
    stop_signal = StopSignal().install()
    step_config = StepConfig(device=device, amp_dtype=amp_dtype, grad_clip=args.grad_clip,
                             log_every=args.log_every,
                             show_progress=args.progress and env.is_main, stop_signal=stop_signal.requested,
                             max_consecutive_skips=args.max_skipped_steps,
                             on_log=tracker.train_scalars if args.report_to and env.is_main else None)
    run = Run(task=task, model=model, loss_fn=loss_fn, optimizers=optimizers, schedule=schedule, scaler=scaler,
              loader=loader, sampler=sampler, evaluator=evaluator, step_config=step_config, output_dir=output_dir,
              args=_plain_args(args), epochs=args.epochs, seed=args.seed, save_freq=args.save_freq,
              save_every_steps=args.save_every_steps,
              keep_checkpoints=args.keep_checkpoints, tracker=tracker)
    try:
        if args.resume:
            resume(run, args.resume)
        if env.is_main:
            print(f"training {args.ita_type} on {description}, {len(loader)} iterations/epoch × {args.epochs} "
                  f"epochs, device {device}, world size {env.world_size}")
        return fit(run)
    finally:
        stop_signal.uninstall()
        tracker.close()


def _plain_args(args) -> dict:
    """Args as JSON-able plain data (checkpoints must load with weights_only=True)."""
    return json.loads(json.dumps(vars(args), default=str))


def main(argv: list[str] | None = None) -> int:
    """Run clip.py. Exit status: 0 done, 1 error, 128 + N stopped by signal N (checkpoint_last.pth written).

    A failing rank of a distributed job ends at once instead of waiting for peers blocked in a collective:
    they fail at their next collective (gloo) or are stopped by the launcher (torchrun, srun -K), and
    `--dist_timeout` bounds the rest.
    """
    env = DistEnv()
    requeue = False
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
            try:
                output_dir.mkdir(parents=True, exist_ok=True)
                write_json(output_dir / "args.json", _plain_args(args))
            except OSError as error:
                raise UsageError(f"--output_dir {output_dir}: cannot write ({error.strerror})") from None
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
    if code == 1 and env.distributed:
        abort_process(code)
    shutdown_distributed()
    return code


if __name__ == "__main__":
    warnings.filterwarnings("once")
    sys.exit(main())
