"""Train and evaluate a CLIP-style two-tower model with a (global) contrastive loss.

Wiring only: flags -> datasets, model, loss, optimisers -> the engine's epoch loop or evaluation.
Run `python bimodal_exps/clip.py --help` for the flags.
"""
from __future__ import annotations

import os
import sys
import traceback
import warnings
from contextlib import AbstractContextManager
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
from torch.utils.data import DataLoader, Dataset, Subset  # noqa: E402

from cli.flags import blame_flags  # noqa: E402
from cli.options import UsageError, parse_args  # noqa: E402
from dataset.annotations import read_json_array  # noqa: E402
from dataset.collate import TokenizingCollate  # noqa: E402
from dataset.csv_pairs import CSVReader  # noqa: E402
from dataset.episodes import EpisodicSampler  # noqa: E402
from dataset.errors import DataError, without_worker_traceback  # noqa: E402
from dataset.image_text import ImageTextDataset  # noqa: E402
from dataset.retrieval import RetrievalDataset  # noqa: E402
from dataset.sampler import ResumableDistributedSampler  # noqa: E402
from dataset.transforms import build_retrieval_transform, build_train_transform, build_zeroshot_transform  # noqa: E402
from dataset.zeroshot import load_zeroshot_benchmark, missing_zeroshot_data  # noqa: E402
from engine.checkpoint import (CheckpointError, NonFiniteModel, load_checkpoint, load_state_strict,  # noqa: E402
                               refuse_non_finite)
from engine.clustering import ClusteringStep, load_external_teacher  # noqa: E402
from engine.distributed import (DistEnv, DistributedSetupError, abort_process, barrier,  # noqa: E402
                                broadcast_from_main, init_distributed, local_device, shutdown_distributed,
                                silence_non_main, wrap_ddp)
from engine.evals.build import build_families, schedule_from_args  # noqa: E402
from engine.evaluation import EvalSuite  # noqa: E402
from engine.logger import append_jsonl, format_results_table, write_eval_logs, write_eval_results  # noqa: E402
from engine.optim import LRSchedule, TowerSchedule, create_optimizers  # noqa: E402
from engine.preemption import Preempted, StopSignal, requeue_slurm_job  # noqa: E402
from engine.runlock import RunLock, RunLockError  # noqa: E402
from engine.task import ContrastiveTask  # noqa: E402
from engine.teacher_cache import cache_teacher_embeddings  # noqa: E402
from engine.tracking import Tracker  # noqa: E402
from engine.train import StepConfig, TooManySkippedSteps  # noqa: E402
from engine.runtime import (available_memory, plain_args, resolve_device, seed_everything,  # noqa: E402
                            write_args)
from engine.trainer import Run, fit, resume  # noqa: E402
from models.config import ModelBuildError, ModelConfig  # noqa: E402
from models.factory import create_model, create_tokenizer  # noqa: E402
from models.image_tower import check_input_size  # noqa: E402
from models.gcl.state import SampleIdError  # noqa: E402
from models.losses import LOSS_HPARAMS, build_loss, used_hparams  # noqa: E402
from models.pretrained import PretrainedWeightsError  # noqa: E402

USER_ERRORS = (UsageError, DataError, CheckpointError, NonFiniteModel, PretrainedWeightsError,
               TooManySkippedSteps, DistributedSetupError, SampleIdError, RunLockError,
               ModelBuildError)
# Flags that the towers, the optimisers and the learning-rate schedule are built from (named by construction errors).
IMAGE_FLAGS = ("image_encoder", "image_res", "image_kwargs", "image_pretrained")
MODEL_FLAGS = (*IMAGE_FLAGS, "text_encoder", "text_pretrained", "text_tokenizer", "text_width", "text_heads",
               "text_layers", "context_length", "text_max_len", "embed_dim")
OPTIMIZER_FLAGS = ("opt", "lr", "weight_decay", "momentum", "lr_temp_net", "lr_text")
SCHEDULE_FLAGS = ("sched", "lr_schedule", "epochs", "min_lr", "warmup_lr", "warmup_epochs", "warmup_steps",
                  "decay_rate", "lit_start_epoch", "text_start_epoch", "text_end_epoch")


def blame(args, *dests: str) -> AbstractContextManager[None]:
    """`blame_flags` for clip.py: errors that already are one-line user errors pass unchanged."""
    return blame_flags(args, *dests, keep=USER_ERRORS)


def model_config_of(args, pretrained: bool) -> ModelConfig:
    """The towers' description from the flags; an inconsistent combination is a UsageError naming the flags."""
    with blame(args, *MODEL_FLAGS):
        return ModelConfig.from_args(args, pretrained=pretrained)


def build_model(args, model_config: ModelConfig, device: torch.device,
                notes: list[str] | None = None) -> torch.nn.Module:
    """Both towers on `device` (`notes` collects the builders' remarks); a tower that cannot be built from the flags,
    or cannot take --image_res (e.g. not a multiple of a ViT's patch), is a UsageError naming the flags now, not a
    traceback at the first step."""
    with blame(args, *MODEL_FLAGS):
        model = create_model(model_config, notes).to(device)
    with blame(args, *IMAGE_FLAGS):
        check_input_size(model.visual_encoder, args.image_res)
    if args.grad_checkpointing:
        with blame(args, "grad_checkpointing", *MODEL_FLAGS):
            model.set_grad_checkpointing()
    return model


def build_loss_from_flags(args, num_samples: int, size_from: str, device: torch.device,
                          embed_dim: int) -> torch.nn.Module:
    """The loss of --ita_type with per-sample state for `num_samples` ids, after checking that the state fits
    in memory (`size_from` names where the size came from); wrong hyper-parameters are a UsageError naming them.
    `embed_dim` is the model's joint width (heads may change it), which sizes TempNet's networks and the queues."""
    hparams = {name: getattr(args, name) for name in LOSS_HPARAMS}
    hparams["embed_dim"] = embed_dim
    hparams["lit_start_epoch"] = args.lit_start_epoch
    dests = ("ita_type", *sorted(used_hparams(args.ita_type)), "embed_dim")
    with blame(args, *dests):
        # size the state on the meta device: nothing is allocated and the RNG stream stays as it was
        with torch.random.fork_rng(devices=[]), torch.device("meta"):
            probe = build_loss(args.ita_type, num_samples=num_samples, **hparams)
        state = [t for t in probe.state_dict().values() if torch.is_tensor(t)]
        needed = sum(t.numel() * t.element_size() for t in state)
        per_sample = sum(t[0].numel() * t.element_size() for t in state if t.dim() and t.shape[0] == num_samples)
        for where in dict.fromkeys((torch.device("cpu"), device)):  # built on the CPU, then moved
            free = available_memory(where)
            if free is not None and needed > free:
                raise UsageError(f"{size_from}: the per-sample state of --ita_type {args.ita_type} for "
                                 f"{num_samples} ids needs {needed / 2**30:.1f} GiB ({per_sample} bytes per id), "
                                 f"more than the {free / 2**30:.1f} GiB available on {where.type}")
        return build_loss(args.ita_type, num_samples=num_samples, **hparams).to(device)


def unlocked_teacher_warning(ita_type: str, loss_fn: torch.nn.Module, model: torch.nn.Module) -> str | None:
    """One warning line when a uni-directional objective's teacher tower still has trainable parameters: the
    objective detaches the teacher side (docs/losses.md, distillation objectives), so they never get a gradient."""
    if not getattr(loss_fn, "uni_directional", False):
        return None
    side = loss_fn.teacher
    tower = model.text_encoder if side == "text" else model.visual_encoder
    trainable = sum(p.numel() for p in tower.parameters() if p.requires_grad)
    if not trainable:
        return None
    return (f"warning: --ita_type {ita_type} is uni-directional: the teacher ({side}) tower's {trainable:,} trainable "
            f"parameters get no gradient; --lock_{side} freezes it and saves their backward and optimiser state")


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


def evaluate_only(args, device: torch.device, output_dir: Path, is_main: bool) -> dict[str, float]:
    """`--evaluate --checkpoint PATH`: build the towers from config, load weights strictly, evaluate."""
    model_config = model_config_of(args, pretrained=False)
    model = build_model(args, model_config, device)
    if args.compile:
        model.compile_towers(args.compile)
    checkpoint = load_checkpoint(args.checkpoint, required=("model",))
    load_state_strict(model, checkpoint["model"], "model", args.checkpoint)
    refuse_non_finite({"model": model}, args.checkpoint)
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
    """(loader, sampler with `set_epoch` and `start_at_batch`, per-sample state size, where that size comes from,
    one-line description). A batch holds the `--accum_freq` micro-batches of one optimiser step."""
    step_batch = args.batch_size_train * args.accum_freq
    if args.dataset_type == "webdataset":
        from dataset.webdataset_loader import WebDatasetSpec, create_webdataset_loader  # imports webdataset
        spec = WebDatasetSpec(args.train_data, args.train_num_samples, step_batch, args.data_size,
                              seed=args.seed, rank=env.rank, world_size=env.world_size, workers=args.workers,
                              resampled=args.dataset_resampled, pin_memory=device.type == "cuda")
        loader, state_size = create_webdataset_loader(spec, train_transform(args), tokenizer)
        size_from = f"--data_size {args.data_size}" if args.data_size else "the shards' max key + 1"
        description = (f"webdataset {args.train_data}: {args.train_num_samples} samples/epoch, "
                       f"state size {state_size} ({size_from})")
        return loader, loader, state_size, size_from, description
    dataset, base = build_train_dataset(args, train_transform(args))
    # the samplers draw positions of `dataset` (the first --train_size pairs); they are also `base`'s indices, and
    # `base` takes the samplers' SampleKeys directly
    if args.episode_size:
        sampler = EpisodicSampler(len(dataset), args.episode_size, step_batch, num_replicas=env.world_size,
                                  rank=env.rank, shuffle=True, seed=args.seed, drop_last=True)
    else:
        sampler = ResumableDistributedSampler(dataset, step_batch, num_replicas=env.world_size,
                                              rank=env.rank, shuffle=True, seed=args.seed, drop_last=True)
    loader = DataLoader(base, batch_size=step_batch, sampler=sampler, drop_last=True,
                        num_workers=args.workers, collate_fn=TokenizingCollate(tokenizer),
                        pin_memory=device.type == "cuda", persistent_workers=args.workers > 0)
    if len(loader) == 0:
        kept = f" (--train_frac {args.train_frac} keeps {base.num_kept} of {base.num_samples} entries)" \
            if args.train_frac < 1 else ""
        raise UsageError(f"{len(dataset)} training samples{kept} cannot fill one batch of --batch_size_train "
                         f"{args.batch_size_train} × --accum_freq {args.accum_freq} × {env.world_size} process(es)")
    state_size = args.data_size or base.num_samples
    if state_size < base.num_samples:
        raise UsageError(f"--data_size {args.data_size} is smaller than the {base.num_samples} pair ids of "
                         f"{', '.join(base_files(args))}; leave it out to size the loss state from the data")
    size_from = f"--data_size {args.data_size}" if args.data_size else f"the {state_size} entries of the training file"
    episodes = f", episodes of {args.episode_size}" if args.episode_size else ""
    return loader, sampler, state_size, size_from, f"{len(dataset)} pairs ({base.num_skipped} skipped){episodes}"


def base_files(args) -> list[str]:
    """The training annotation files: `--train-data` for CSV/TSV, else the JSON files of `--train_file`."""
    return [args.train_data] if args.dataset_type == "csv" else args.train_files


def build_train_dataset(args, transform) -> tuple[Dataset, ImageTextDataset]:
    """(training set, cut to `--train_size` pairs if given; the full `ImageTextDataset` it comes from)."""
    reader = (CSVReader(args.csv_img_key, args.csv_caption_key, args.csv_separator)
              if args.dataset_type == "csv" else read_json_array)
    base = ImageTextDataset(base_files(args), args.train_image_dir, transform, max_words=args.max_words,
                            strict=args.strict_data, train_frac=args.train_frac, reader=reader)
    if args.train_size is None or args.train_size >= len(base):
        return base, base
    return Subset(base, range(args.train_size)), base


def train(args, device: torch.device, env, output_dir: Path) -> dict[str, float]:
    model_config = model_config_of(args, pretrained=args.init_model)
    tokenizer = create_tokenizer(model_config)
    loader, sampler, num_samples, size_from, description = build_train_loader(args, env, tokenizer, device)
    evaluator = build_evaluator(args, tokenizer, device)

    notes: list[str] = []
    model = build_model(args, model_config, device, notes)
    if env.is_main:
        for note in notes:
            print(f"note: {note}")
    if args.compile:
        model.compile_towers(args.compile)
    if args.checkpoint:
        load_state_strict(model, load_checkpoint(args.checkpoint, required=("model",))["model"], "model",
                          args.checkpoint)
        refuse_non_finite({"model": model}, args.checkpoint)
    if args.cache_teacher:
        return write_teacher_cache(args, model, tokenizer, device, env, num_samples)
    loss_fn = build_loss_from_flags(args, num_samples, size_from, device, model.embed_dim)
    warning = unlocked_teacher_warning(args.ita_type, loss_fn, model)
    if warning and env.is_main:
        print(warning)
    task = ContrastiveTask(model, loss_fn)
    if env.distributed:
        # a uni-directional objective detaches the teacher tower, whose trainable parameters then get no gradient
        task = wrap_ddp(task, device, find_unused_parameters=getattr(loss_fn, "uni_directional", False))
    towers = tower_schedule(args)
    with blame(args, *OPTIMIZER_FLAGS):
        optimizers = create_optimizers(model, loss_fn, args.opt, args.lr, args.weight_decay, args.momentum,
                                       args.lr_temp_net, image_side=model.image_side_parameters() if towers else None,
                                       lr_text=args.lr_text)
    with blame(args, *SCHEDULE_FLAGS):
        schedule = LRSchedule(optimizers, args.lr_schedule, args.sched, args.epochs, len(loader), args.min_lr,
                              args.warmup_lr, args.warmup_epochs, args.warmup_steps, args.decay_rate, towers)
    amp_dtype = resolve_amp(args, device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    tracker = Tracker(args.report_to, output_dir, plain_args(args), env.is_main)
    stop_signal = StopSignal().install()
    step_config = StepConfig(device=device, amp_dtype=amp_dtype, grad_clip=args.grad_clip,
                             log_every=args.log_every,
                             show_progress=args.progress and env.is_main, stop_signal=stop_signal.requested,
                             max_consecutive_skips=args.max_skipped_steps, accum_freq=args.accum_freq,
                             on_log=tracker.train_scalars if args.report_to and env.is_main else None)
    run = Run(task=task, model=model, loss_fn=loss_fn, optimizers=optimizers, schedule=schedule, scaler=scaler,
              loader=loader, sampler=sampler, evaluator=evaluator, step_config=step_config, output_dir=output_dir,
              args=plain_args(args), epochs=args.epochs, seed=args.seed, save_freq=args.save_freq,
              save_every_steps=args.save_every_steps,
              keep_checkpoints=args.keep_checkpoints, tracker=tracker,
              epoch_start=clustering_step(args, model, loss_fn, sampler, tokenizer, device, num_samples))
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


def tower_schedule(args) -> TowerSchedule | None:
    """ProtoCLIP's asymmetric schedule (image side vs the rest, docs/losses.md §15.10) when any of its flags is
    given; None keeps one schedule for every parameter."""
    if not (args.lit_start_epoch or args.text_start_epoch or args.text_end_epoch is not None
            or args.lr_text is not None):
        return None
    return TowerSchedule.from_flags(args.epochs, args.lit_start_epoch, args.text_start_epoch, args.text_end_epoch)


def clustering_step(args, model, loss_fn, sampler, tokenizer, device: torch.device,
                    num_samples: int) -> ClusteringStep | None:
    """ProtoCLIP's per-epoch clustering of the pairs the epoch trains on (the episode, or the whole training set),
    encoded with the retrieval transform; None for the other losses."""
    if args.ita_type != "protoclip":
        return None
    dataset, _ = build_train_dataset(args, build_retrieval_transform(args.image_res))
    external = load_external_teacher(args.external_teacher, num_samples) if loss_fn.external else None

    def positions(epoch: int):
        return sampler.episode(epoch) if isinstance(sampler, EpisodicSampler) else range(len(dataset))

    return ClusteringStep(model, loss_fn, dataset, positions, TokenizingCollate(tokenizer), args.batch_size_test,
                          args.workers, device, args.seed, external)


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


def write_teacher_cache(args, model, tokenizer, device: torch.device, env, num_samples: int) -> dict[str, float]:
    """`--cache_teacher FILE`: rank 0 encodes every training pair (retrieval transform, in order) and exits."""
    if args.dataset_type == "webdataset":
        raise UsageError("--cache_teacher needs an annotation-file training set (not --dataset_type webdataset)")
    if env.is_main:
        dataset, _ = build_train_dataset(args, build_retrieval_transform(args.image_res))
        loader = DataLoader(dataset, batch_size=args.batch_size_test, shuffle=False, num_workers=args.workers,
                            collate_fn=TokenizingCollate(tokenizer))
        try:
            rows = cache_teacher_embeddings(model, loader, args.teacher, num_samples, device, args.cache_teacher)
        except OSError as error:
            raise UsageError(f"--cache_teacher {args.cache_teacher}: cannot write ({error.strerror})") from None
        print(f"wrote {args.teacher} teacher embeddings of {rows} pairs ({num_samples} rows × {model.embed_dim}) "
              f"to {args.cache_teacher}")
    barrier()
    return {}


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
