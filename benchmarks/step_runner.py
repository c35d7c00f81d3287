"""Training steps of clip.py's own engine on synthetic batches, one configuration per process, with the process's
peak memory: the worker behind `batch_memory.py` and `feature_cost.py`.

Usage (from the repository root; everything after `--` is clip.py flags):
    python benchmarks/step_runner.py --steps 2 -- --image_encoder resnet50 --image_res 224 --batch_size_train 16 \\
        --accum_freq 2 --loss_tile 64

The model, loss, optimisers, learning-rate schedule and step loop are the ones `clip.py` builds from the same
flags (`clip.build_model`, `clip.build_loss_from_flags`, `engine.optim`, `engine.train.train_one_epoch`), so
`--accum_freq`, `--grad_checkpointing` and `--loss_tile` act exactly as in training. Batches are random images
and tokenised made-up captions padded to the text tower's length, held in memory (no loader). One step warms up,
then `--steps` steps are timed by the step loop itself (its samples/s). Prints one JSON line: samples/s, the loss,
and memory in MiB: `peak` is the process's peak resident set (`getrusage` ru_maxrss: CPU memory; it includes
Python, torch and the weights), `built` the resident set after building, before the first step, and on CUDA
`cuda_peak` (`torch.cuda.max_memory_allocated`). `--amp bf16` runs the engine's autocast in bf16 (clip.py's
`--use_amp` autocasts on CUDA only).
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bimodal_exps"))
import clip  # noqa: E402
from cli.options import parse_args as parse_clip_args  # noqa: E402
from dataset.collate import Batch  # noqa: E402
from engine.optim import LRSchedule, create_optimizers  # noqa: E402
from engine.task import ContrastiveTask  # noqa: E402
from engine.train import StepConfig, train_one_epoch  # noqa: E402
from models.factory import create_tokenizer  # noqa: E402

WORDS = ("a", "photo", "of", "red", "small", "dog", "cat", "car", "on", "the", "street", "beach", "two", "people")


def rss_mib() -> float:
    """Peak resident set of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def synthetic_batches(args: argparse.Namespace, tokenizer, steps: int, generator: torch.Generator) -> list[Batch]:
    """`steps` batches of `--batch_size_train` × `--accum_freq` pairs (what clip.py's loader yields per step)."""
    rows = args.batch_size_train * args.accum_freq
    batches = []
    for step in range(steps):
        picks = torch.randint(len(WORDS), (rows, 12), generator=generator).tolist()
        tokens = tokenizer([" ".join(WORDS[i] for i in row) for row in picks])
        images = torch.randn(rows, 3, args.image_res, args.image_res, generator=generator)
        batches.append(Batch(images, dict(tokens), torch.arange(step * rows, (step + 1) * rows)))
    return batches


def run(clip_flags: list[str], steps: int, amp: str, device: torch.device) -> dict[str, float]:
    """Build clip.py's model and loss from `clip_flags`, train 1 + `steps` steps; the measured figures."""
    args, _ = parse_clip_args([*clip_flags, "--device", str(device), "--no-progress"])
    torch.manual_seed(args.seed)
    config = clip.model_config_of(args, pretrained=False)
    batches = synthetic_batches(args, create_tokenizer(config), steps + 1, torch.Generator().manual_seed(0))
    model = clip.build_model(args, config, device)
    num_samples = (steps + 1) * args.batch_size_train * args.accum_freq
    loss_fn = clip.build_loss_from_flags(args, num_samples, "step_runner", device, model.embed_dim)
    task = ContrastiveTask(model, loss_fn)
    optimizers = create_optimizers(model, loss_fn, args.opt, args.lr, args.weight_decay, args.momentum,
                                   args.lr_temp_net)
    schedule = LRSchedule(optimizers, args.lr_schedule, args.sched, 2, steps + 1, args.min_lr, args.warmup_lr,
                          args.warmup_epochs, args.warmup_steps, args.decay_rate)
    amp_dtype = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    step_config = StepConfig(device=device, amp_dtype=amp_dtype, show_progress=False, accum_freq=args.accum_freq)
    built = rss_mib()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    train_one_epoch(task, batches[:1], optimizers, schedule, scaler, 0, step_config)  # warm-up step
    stats = train_one_epoch(task, batches[1:], optimizers, schedule, scaler, 1, step_config) if steps else {}
    result = {"samples_per_s": stats.get("samples_per_s"), "loss": stats.get("loss"), "peak": rss_mib(),
              "built": built, "batch": args.batch_size_train, "accum_freq": args.accum_freq,
              "threads": torch.get_num_threads()}
    if device.type == "cuda":
        result["cuda_peak"] = torch.cuda.max_memory_allocated(device) / 2 ** 20
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=2, 
                        help="timed steps after one warm-up step (0: the warm-up only, for memory)")
    parser.add_argument("--amp", choices=["none", "bf16", "fp16"], default="none", help="autocast dtype")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("clip_flags", nargs=argparse.REMAINDER, help="-- then clip.py flags")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    flags = args.clip_flags[1:] if args.clip_flags[:1] == ["--"] else args.clip_flags
    print(json.dumps(run(flags, args.steps, args.amp, torch.device(args.device))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
