"""Training throughput of our `clip.py` against OpenCLIP's trainer: same towers, data and batch.

Usage (from the repository root):
    python benchmarks/throughput_vs_openclip.py --threads 1                       # tiny preset, CPU
    python benchmarks/throughput_vs_openclip.py --preset rn50-distilbert --device cuda --precision bf16 \\
        --num-samples 8192 --workers 8                                            # GPU

Two measurements, each alternating ours and OpenCLIP's (`--repeats` rounds) and reporting the median:

* with data loading: `clip.py --ita_type clip` and `python -m open_clip_train.main` train on the same
  pairs of the demo data (the first `--num-samples`; CSV for OpenCLIP) for `--epochs` epochs; the first
  epoch is warm-up. Samples/s of an epoch: ours from `log.txt` (`train_samples_per_s`: samples over the
  epoch's loop time), OpenCLIP's from its per-step log (`--log-every-n-steps 1`: sum of the "Batch (t)"
  step times, which include waiting for data). Both loops start timing when the epoch's first batch is
  requested. Augmentations differ: ours by default adds RandomAugment (`--our-transform`).
* without data loading: in this process, the same synthetic batch (random images, the demo captions
  tokenised by each side's tokenizer) through forward, loss (our `clip` loss; OpenCLIP's `ClipLoss`),
  backward and an AdamW step, `--steps` steps per round after warm-up.

Ratio = ours / OpenCLIP (> 1: ours is faster). Writes `<work-dir>/throughput_vs_openclip.{json,md}`;
`--profile` adds the top operators of each side's synthetic step. Model equivalence: `openclip_setup.py`.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import torch

from openclip_setup import (PRESETS, REPO, TEXT_KINDS, DataFiles, ModelSpec, TrainerRun, openclip_command,
                            our_command, our_model_config, spec_with, write_data, write_openclip_model)
from models.factory import create_model, create_tokenizer  # noqa: E402  (openclip_setup puts bimodal_exps on the path)
from models.losses import build_loss  # noqa: E402

STEP_LINE = re.compile(r"Train Epoch: (\d+) \[\s*\d+/\d+ .*?Batch \(t\): ([\d.]+)")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    parser.add_argument("--image-encoder", default=None, help="timm model name (overrides the preset)")
    parser.add_argument("--image-res", type=int, default=None)
    parser.add_argument("--embed-dim", type=int, default=None)
    parser.add_argument("--text", choices=TEXT_KINDS, default=None, help="text tower kind")
    parser.add_argument("--text-width", type=int, default=None)
    parser.add_argument("--text-heads", type=int, default=None)
    parser.add_argument("--text-layers", type=int, default=None)
    parser.add_argument("--context-length", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--demo-dir", type=Path, default=None,
                        help="demo data root (default: built under --work-dir at the model's image size)")
    parser.add_argument("--num-samples", type=int, default=1024, help="training pairs per epoch")
    parser.add_argument("--epochs", type=int, default=3,
                        help="trainer epochs per run (the first is warm-up, unless it is the only one)")
    parser.add_argument("--repeats", type=int, default=2, help="alternating rounds of each measurement")
    parser.add_argument("--steps", type=int, default=10, help="synthetic steps per round")
    parser.add_argument("--workers", type=int, default=1, help="DataLoader workers of both trainers")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (OMP_NUM_THREADS) of both sides")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default=None,
                        help="default: bf16 autocast on CUDA, fp32 on CPU (ours --use_amp --amp_dtype bf16 = "
                             "OpenCLIP --precision amp_bf16)")
    parser.add_argument("--our-transform", choices=["augment", "deterministic"], default="augment",
                        help="our training transform (augment adds RandomAugment, which OpenCLIP does not do)")
    parser.add_argument("--skip-trainers", action="store_true", help="only the synthetic measurement")
    parser.add_argument("--skip-synthetic", action="store_true", help="only the trainer measurement")
    parser.add_argument("--profile", action="store_true", help="add each side's top operators (synthetic step)")
    parser.add_argument("--work-dir", type=Path, default=REPO / "output" / "throughput_vs_openclip")
    args = parser.parse_args(argv)
    args.precision = args.precision or ("bf16" if args.device.startswith("cuda") else "fp32")
    return args


def model_spec(args: argparse.Namespace) -> ModelSpec:
    return spec_with(args.preset, image_encoder=args.image_encoder, image_res=args.image_res,
                     embed_dim=args.embed_dim, text=args.text, text_width=args.text_width,
                     text_heads=args.text_heads, text_layers=args.text_layers,
                     context_length=args.context_length, batch=args.batch_size)


def ensure_demo(args: argparse.Namespace, spec: ModelSpec) -> Path:
    """The demo data to train on: `--demo-dir`, or one built at the model's image size."""
    if args.demo_dir is not None:
        return args.demo_dir
    demo = args.work_dir / f"demo_{spec.image_res}px"
    if not (demo / "SOURCE").is_file():
        subprocess.run([sys.executable, str(REPO / "bimodal_exps" / "build_demo_data.py"), "--source", "auto",
                        "--out", str(demo), "--num_train", str(args.num_samples), "--num_val", "8",
                        "--num_zeroshot_per_class", "1", "--image_size", str(spec.image_res)], check=True)
    return demo


# ---- with data loading: the two trainers as subprocesses -------------------------------------------------

def thread_env(threads: int | None) -> dict[str, str]:
    env = dict(os.environ)
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    return env


def run_logged(command: list[str], log: Path, env: dict[str, str]) -> None:
    """Run a trainer, its output in `log`; fail with the log's tail if it fails."""
    with open(log, "w", encoding="utf-8") as handle:
        status = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, env=env, cwd=REPO).returncode
    if status != 0:
        tail = "\n".join(line[:300] for line in log.read_text(encoding="utf-8", errors="replace").splitlines()[-20:])
        raise SystemExit(f"{' '.join(command[1:3])} failed (exit {status}); end of {log}:\n{tail}")


def our_epoch_rates(out_dir: Path) -> list[float]:
    """Samples/s of each epoch of our run, from its log.txt."""
    lines = (out_dir / "log.txt").read_text(encoding="utf-8").splitlines()
    return [float(json.loads(line)["train_samples_per_s"]) for line in lines]


def openclip_epoch_rates(log: Path, batch: int) -> list[float]:
    """Samples/s of each epoch of an OpenCLIP run: steps × batch / sum of the logged step times."""
    times: dict[int, list[float]] = {}
    for match in STEP_LINE.finditer(log.read_text(encoding="utf-8")):
        times.setdefault(int(match.group(1)), []).append(float(match.group(2)))
    return [len(steps) * batch / sum(steps) for _, steps in sorted(times.items())]


def after_warmup(epoch_rates: list[float]) -> list[float]:
    """The epochs after the first (all of them when there is only one)."""
    return epoch_rates[1:] or epoch_rates


def trainer_rates(args: argparse.Namespace, spec: ModelSpec, model_dir: Path, model_name: str,
                  data: DataFiles) -> dict[str, list[float]]:
    """Alternate our run and OpenCLIP's `--repeats` times; per side, the epochs after the first."""
    run = TrainerRun(args.epochs, args.workers, args.device, args.precision, args.our_transform)
    env = thread_env(args.threads)
    rates: dict[str, list[float]] = {"ours": [], "openclip": []}
    for repeat in range(args.repeats):
        ours_dir = args.work_dir / "runs" / f"ours_{repeat}"
        shutil.rmtree(ours_dir, ignore_errors=True)
        ours_dir.mkdir(parents=True)
        run_logged(our_command(spec, model_dir, data, run, ours_dir), ours_dir / "stdout.txt", env)
        rates["ours"] += after_warmup(our_epoch_rates(ours_dir))
        logs, name = args.work_dir / "runs", f"openclip_{repeat}"
        shutil.rmtree(logs / name, ignore_errors=True)
        run_logged(openclip_command(spec, model_name, data, run, logs, name), logs / f"{name}.stdout.txt", env)
        rates["openclip"] += after_warmup(openclip_epoch_rates(logs / name / "out.log", spec.batch))
        for checkpoint in [*ours_dir.glob("*.pth"), *(logs / name).glob("checkpoints/*.pt")]:
            checkpoint.unlink()
        print(f"round {repeat}: ours {rates['ours'][-1]:.1f}, OpenCLIP {rates['openclip'][-1]:.1f} samples/s "
              f"(last epoch)", flush=True)
    return rates


# ---- without data loading: both models in this process ---------------------------------------------------

Step = Callable[[], None]


def autocast(device: torch.device, precision: str):
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


def captions(demo_dir: Path, count: int) -> list[str]:
    pairs = json.loads((demo_dir / "clip_train" / "cc3m_train_subset.json").read_text(encoding="utf-8"))
    return [pairs[i % len(pairs)]["caption"] for i in range(count)]


def our_step(spec: ModelSpec, model_dir: Path, texts: list[str], device: torch.device, precision: str) -> Step:
    """One training step of our CLIP (clip.py's model factory) with our `clip` loss and AdamW."""
    config = our_model_config(spec, model_dir)
    model = create_model(config).to(device).train()
    loss_fn = build_loss("clip", num_samples=spec.batch).to(device)
    tokens = {k: v.to(device) for k, v in create_tokenizer(config)(texts).items()}
    images = torch.randn(spec.batch, 3, spec.image_res, spec.image_res, device=device)
    ids = torch.arange(spec.batch, device=device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.02)

    def step() -> None:
        with autocast(device, precision):
            image_features, text_features = model(images, tokens)
        loss = loss_fn(image_features, text_features, ids).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return step


def openclip_step(spec: ModelSpec, model_name: str, texts: list[str], device: torch.device, precision: str) -> Step:
    """One training step of OpenCLIP's model with its `ClipLoss` and AdamW, as its trainer runs it."""
    import open_clip
    model = open_clip.create_model(model_name, force_image_size=spec.image_res, output_dict=True).to(device).train()
    tokens = open_clip.get_tokenizer(model_name)(texts).to(device)
    images = torch.randn(spec.batch, 3, spec.image_res, spec.image_res, device=device)
    loss_fn = open_clip.ClipLoss()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.02)

    def step() -> None:
        with autocast(device, precision):
            out = model(images, tokens)
            loss = loss_fn(out["image_features"], out["text_features"], out["logit_scale"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return step


def samples_per_s(step: Step, steps: int, batch: int, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return steps * batch / (time.perf_counter() - start)


def synthetic_rates(steps: dict[str, Step], args: argparse.Namespace, batch: int,
                    device: torch.device) -> dict[str, list[float]]:
    """Warm-up (2 steps each), then `--repeats` rounds alternating the sides."""
    for step in steps.values():
        step()
        step()
    rates: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(args.repeats):
        for name, step in steps.items():
            rates[name].append(samples_per_s(step, args.steps, batch, device))
    return rates


def top_operators(step: Step, device: torch.device, rows: int = 12) -> str:
    """The profiler's table of the most expensive operators over 3 steps."""
    from torch.profiler import ProfilerActivity, profile
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(3):
            step()
    key = "cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=key, row_limit=rows)


# ---- report -------------------------------------------------------------------------------------------------

def summary(rates: dict[str, list[float]]) -> dict[str, float]:
    ours, theirs = statistics.median(rates["ours"]), statistics.median(rates["openclip"])
    return {"ours_samples_per_s": ours, "openclip_samples_per_s": theirs, "ratio": ours / theirs}


def markdown(results: dict) -> str:
    """The results as a markdown table plus the settings (and the operator tables with --profile)."""
    s = results["settings"]
    lines = [f"Model `{json.dumps(s['spec'])}`; {s['device']}, {s['precision']}, torch threads {s['threads']}, "
             f"workers {s['workers']}, our transform {s['our_transform']}; median of {s['repeats']} alternating "
             f"rounds.", "", "| measurement | ours (samples/s) | OpenCLIP (samples/s) | ratio ours/OpenCLIP |",
             "|---|---:|---:|---:|"]
    for label, key in (("with data loading (trainers)", "trainers"), ("without data loading (synthetic)", "synthetic")):
        if key in results:
            r = results[key]
            lines.append(f"| {label} | {r['ours_samples_per_s']:.1f} | {r['openclip_samples_per_s']:.1f} | "
                         f"{r['ratio']:.2f} |")
    for side, table in results.get("profile", {}).items():
        lines += ["", f"Top operators, {side} (3 synthetic steps):", "", "```", table, "```"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    spec = model_spec(args)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    demo = ensure_demo(args, spec)
    model_dir = args.work_dir / "openclip_model"
    model_name = write_openclip_model(spec, model_dir)
    data = write_data(demo, args.work_dir / "data", args.num_samples)
    settings = {"spec": asdict(spec),
                "device": args.device, "precision": args.precision, "threads": args.threads or torch.get_num_threads(),
                "workers": args.workers, "our_transform": args.our_transform, "repeats": args.repeats,
                "epochs": args.epochs, "num_samples": data.num_samples, "steps": args.steps,
                "torch": torch.__version__, "demo_dir": str(demo)}
    results: dict = {"settings": settings}
    if not args.skip_trainers:
        rates = trainer_rates(args, spec, model_dir, model_name, data)
        results["trainers"] = {**summary(rates), "rates": rates}
    if not args.skip_synthetic:
        device = torch.device(args.device)
        texts = captions(demo, spec.batch)
        steps = {"ours": our_step(spec, model_dir, texts, device, args.precision),
                 "openclip": openclip_step(spec, model_name, texts, device, args.precision)}
        rates = synthetic_rates(steps, args, spec.batch, device)
        results["synthetic"] = {**summary(rates), "rates": rates}
        if args.profile:
            results["profile"] = {name: top_operators(step, device) for name, step in steps.items()}
    text = markdown(results)
    (args.work_dir / "throughput_vs_openclip.json").write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    (args.work_dir / "throughput_vs_openclip.md").write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
