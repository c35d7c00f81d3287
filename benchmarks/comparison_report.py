"""Report of `loss_comparison.py`: read the runs' logs, aggregate over seeds, write JSON, markdown and plots.

Metrics are the final epoch's retrieval R@1 both ways (image→text = `val_txt_r1`, text→image =
`val_img_r1`), their mean, and zero-shot top-1, in percent. Mean ± sample standard deviation over seeds.
"""
from __future__ import annotations

import json
import math
import os
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

METRICS: dict[str, str] = {"txt_r1": "image→text R@1", "img_r1": "text→image R@1", "r1_mean": "mean R@1",
                           "zeroshot_top1": "zero-shot top-1"}
TABLE_METRICS = ("txt_r1", "img_r1", "zeroshot_top1")
PLOT_METRICS = ("r1_mean", "zeroshot_top1")
README_BEGIN = "<!-- loss-comparison:begin (written by benchmarks/loss_comparison.py --readme) -->"
README_END = "<!-- loss-comparison:end -->"
NOTES_BEGIN = "<!-- notes:begin (hand-written; kept when the page is regenerated) -->"
NOTES_END = "<!-- notes:end -->"
# Sections of other benchmarks (e.g. distillation.py's) at the end of the page, kept when it is regenerated.
OTHERS_BEGIN = "<!-- other-benchmarks:begin (hand-written; kept when the page is regenerated) -->"
OTHERS_END = "<!-- other-benchmarks:end -->"
EPOCH_PLOT = "metric_vs_epoch.png"
BATCH_PLOT = "metric_vs_batch.png"


@dataclass(frozen=True)
class RunResult:
    """One finished run: its cell and the evaluation after every epoch (`curve[i]` = epoch i + 1)."""

    ita_type: str
    batch: int
    seed: int
    curve: list[dict[str, float]]

    @property
    def final(self) -> dict[str, float]:
        return self.curve[-1]


def _metrics(record: dict) -> dict[str, float]:
    values = {key: float(record.get(f"val_{key}", math.nan)) for key in ("txt_r1", "img_r1")}
    values["r1_mean"] = (values["txt_r1"] + values["img_r1"]) / 2
    values["zeroshot_top1"] = float(record.get("zeroshot_top1", math.nan))
    return values


def load_run(run_dir: Path, epochs: int) -> RunResult | None:
    """The run in `run_dir` if its log has an evaluation for each of its `epochs` epochs, else None.

    A resumed run may log an epoch twice; the last record of an epoch wins.
    """
    log, args_file = run_dir / "log.txt", run_dir / "args.json"
    if not (log.is_file() and args_file.is_file()):
        return None
    by_epoch = {}
    for line in log.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if "val_txt_r1" in record:
            by_epoch[int(record["epoch"])] = _metrics(record)
    if sorted(by_epoch) != list(range(epochs)):
        return None
    args = json.loads(args_file.read_text(encoding="utf-8"))
    return RunResult(args["ita_type"], int(args["batch_size_train"]), int(args["seed"]),
                     [by_epoch[epoch] for epoch in range(epochs)])


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarise(results: list[RunResult]) -> list[dict]:
    """One row per (loss, batch): seeds, and mean/std of each final metric."""
    cells: dict[tuple[str, int], list[RunResult]] = {}
    for run in results:
        cells.setdefault((run.ita_type, run.batch), []).append(run)
    rows = []
    for (ita_type, batch), runs in cells.items():
        row: dict = {"ita_type": ita_type, "batch": batch, "seeds": sorted(r.seed for r in runs)}
        for key in METRICS:
            row[key], row[f"{key}_std"] = _mean_std([r.final[key] for r in runs])
        rows.append(row)
    return rows


def batch_effect(rows: list[dict]) -> list[dict]:
    """Per loss: change of each final metric from the largest to the smallest batch size (points), with its
    standard error from the seed spread of the two cells (seeds are independent runs)."""
    by_loss: dict[str, dict[int, dict]] = {}
    for row in rows:
        by_loss.setdefault(row["ita_type"], {})[row["batch"]] = row
    effects = []
    for ita_type, cells in by_loss.items():
        if len(cells) < 2:
            continue
        small, large = cells[min(cells)], cells[max(cells)]
        effect = {"ita_type": ita_type, "small": min(cells), "large": max(cells)}
        for key in PLOT_METRICS:
            effect[f"delta_{key}"] = small[key] - large[key]
            effect[f"se_{key}"] = (math.hypot(*(c[f"{key}_std"] / math.sqrt(len(c["seeds"])) for c in (small, large)))
                                   if min(len(small["seeds"]), len(large["seeds"])) > 1 else math.nan)
        effects.append(effect)
    return effects


def _cell(row: dict, key: str) -> str:
    if math.isnan(row[key]):
        return "–"
    return f"{row[key]:.2f} ± {row[f'{key}_std']:.2f}"


def results_table(rows: list[dict], loss_order: list[str]) -> str:
    """Markdown: one line per (loss, batch) with mean ± std over seeds."""
    lines = ["| loss | batch | seeds | " + " | ".join(METRICS[k] for k in TABLE_METRICS) + " |",
             "|---|---:|---|" + "---:|" * len(TABLE_METRICS)]
    for row in sorted(rows, key=lambda r: (loss_order.index(r["ita_type"]), r["batch"])):
        cells = " | ".join(_cell(row, key) for key in TABLE_METRICS)
        seeds = ",".join(map(str, row["seeds"]))
        lines.append(f"| {row['ita_type']} | {row['batch']} | {seeds} | {cells} |")
    return "\n".join(lines)


def _signed(value: float, se: float) -> str:
    return f"{value:+.2f}" + ("" if math.isnan(se) else f" ± {se:.2f}")


def relative_to_clip(effect: dict, clip: dict, key: str) -> tuple[float, float]:
    """(Δ of `effect` − clip's Δ, its standard error)."""
    return effect[f"delta_{key}"] - clip[f"delta_{key}"], math.hypot(effect[f"se_{key}"], clip[f"se_{key}"])


def effect_table(effects: list[dict], loss_order: list[str]) -> str:
    """Markdown: small-batch change per loss ± standard error, and the same relative to clip's."""
    clip = next((e for e in effects if e["ita_type"] == "clip"), None)
    header = " | ".join(f"Δ {METRICS[k]}" + (" (− clip's Δ)" if clip else "") for k in PLOT_METRICS)
    lines = [f"| loss | {header} |", "|---|" + "---:|" * len(PLOT_METRICS)]
    for effect in sorted(effects, key=lambda e: loss_order.index(e["ita_type"])):
        cells = []
        for key in PLOT_METRICS:
            cell = _signed(effect[f"delta_{key}"], effect[f"se_{key}"])
            if clip and effect is not clip:
                cell += f" ({_signed(*relative_to_clip(effect, clip, key))})"
            cells.append(cell)
        lines.append(f"| {effect['ita_type']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def effect_summary(effects: list[dict], rows: list[dict]) -> str:
    """One paragraph: do the global losses lose less than clip when the batch shrinks?"""
    clip = next((e for e in effects if e["ita_type"] == "clip"), None)
    others = [e for e in effects if e["ita_type"] != "clip"]
    if clip is None or not others:
        return "The grid needs `clip` and another loss at two batch sizes for this comparison."
    key = "r1_mean"
    relative = {e["ita_type"]: relative_to_clip(e, clip, key) for e in others}
    better = [name for name, (diff, se) in relative.items() if diff > 2 * se]
    worse = [name for name, (diff, se) in relative.items() if diff < -2 * se]
    opening = (f"From B={clip['large']} to B={clip['small']}, clip's mean R@1 changes by "
               f"{clip[f'delta_{key}']:+.2f} points; the other losses change by "
               f"{min(e[f'delta_{key}'] for e in others):+.2f} to {max(e[f'delta_{key}'] for e in others):+.2f}. ")
    if any(math.isnan(se) for _, se in relative.values()):
        return opening + "Telling these apart from seed noise needs at least two seeds per cell."
    noise = statistics.fmean(r[f"{key}_std"] for r in rows)
    return (opening + f"Δ − clip's Δ is how much a loss's margin over clip grows when the batch shrinks: by more "
            f"than two standard errors it grows for {len(better)} of {len(others)} ({', '.join(better) or 'none'}) "
            f"and shrinks for {len(worse)} of {len(others)} ({', '.join(worse) or 'none'}); the rest are within "
            f"noise. For scale: the seed-to-seed standard deviation of a cell's mean R@1 is {noise:.2f} points on "
            f"average.")


def _losses_in(results: list[RunResult], loss_order: list[str]) -> list[str]:
    present = {r.ita_type for r in results}
    return [name for name in loss_order if name in present]


def _style(ita_type: str, index: int) -> dict:
    """clip stands out (black, dashed); the others take distinct colours."""
    if ita_type == "clip":
        return {"color": "black", "linestyle": "--", "linewidth": 2.2}
    return {"color": plt.get_cmap("tab10")(index % 10), "linewidth": 1.4}


def _save(fig: plt.Figure, legend_ax: plt.Axes, title: str, path: Path) -> None:
    """Title the figure, put one legend right of the plots (hiding no data), write the PNG, free the figure."""
    handles, labels = legend_ax.get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def plot_vs_epoch(results: list[RunResult], loss_order: list[str], path: Path) -> None:
    """Rows: mean R@1, zero-shot top-1; columns: batch sizes; one line per loss (mean over seeds, ±std band)."""
    batches = sorted({r.batch for r in results})
    fig, axes = plt.subplots(len(PLOT_METRICS), len(batches), figsize=(5 * len(batches), 7), squeeze=False,
                             sharey="row")
    for col, batch in enumerate(batches):
        for row, key in enumerate(PLOT_METRICS):
            ax = axes[row][col]
            for index, name in enumerate(_losses_in(results, loss_order)):
                runs = [r for r in results if r.ita_type == name and r.batch == batch]
                if not runs:
                    continue
                epochs = list(range(1, len(runs[0].curve) + 1))
                stats = [_mean_std([r.curve[e - 1][key] for r in runs]) for e in epochs]
                ax.plot(epochs, [m for m, _ in stats], marker="o", markersize=3, label=name, **_style(name, index))
                ax.fill_between(epochs, [m - s for m, s in stats], [m + s for m, s in stats],
                                color=_style(name, index)["color"], alpha=0.12)
            ax.set_title(f"B = {batch}")
            ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_ylabel(f"{METRICS[key]} (%)")
            ax.grid(alpha=0.3)
    _save(fig, axes[0][-1], "Evaluation after each epoch (mean over seeds, band = ±1 std)", path)


def plot_vs_batch(rows: list[dict], loss_order: list[str], path: Path) -> None:
    """Final mean R@1 and zero-shot top-1 against batch size (log2 axis), one line per loss, ±std bars."""
    fig, axes = plt.subplots(1, len(PLOT_METRICS), figsize=(11, 4.5), squeeze=False)
    names = [n for n in loss_order if any(r["ita_type"] == n for r in rows)]
    for ax, key in zip(axes[0], PLOT_METRICS, strict=True):
        for index, name in enumerate(names):
            cells = sorted((r for r in rows if r["ita_type"] == name), key=lambda r: r["batch"])
            ax.errorbar([c["batch"] for c in cells], [c[key] for c in cells], yerr=[c[f"{key}_std"] for c in cells],
                        marker="o", markersize=4, capsize=3, label=name, **_style(name, index))
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted({r["batch"] for r in rows}), labels=[str(b) for b in sorted({r["batch"] for r in rows})])
        ax.set_xlabel("batch size")
        ax.set_ylabel(f"final {METRICS[key]} (%)")
        ax.grid(alpha=0.3)
    _save(fig, axes[0][-1], "Final metric against batch size (mean over seeds, bars = ±1 std)", path)


def chance_text(counts: dict[str, int]) -> str:
    """Chance level of the metrics on the evaluation data: R@1 is 1/images both ways (an image's k captions
    among k·images), zero-shot top-1 is 1/classes."""
    parts = []
    if counts.get("retrieval_images"):
        parts.append(f"R@1 {100 / counts['retrieval_images']:.1f} % both ways")
    if counts.get("zeroshot_classes"):
        parts.append(f"zero-shot top-1 {100 / counts['zeroshot_classes']:.0f} %")
    return ", ".join(parts) or "unknown"


def settings_text(grid: dict) -> str:
    """The grid's settings as a markdown list."""
    extra = " ".join(grid["extra_flags"]) or "none"
    pairs = math.floor(grid["demo_counts"]["train_pairs"] * grid["train_frac"])
    steps = ", ".join(f"B={b}: {pairs // b} × {grid['epochs']} = {pairs // b * grid['epochs']}"
                      for b in grid["batch_sizes"])
    return "\n".join([
        f"* data: `{grid['demo_source']}` demo, {grid['demo_counts']['train_pairs']} training pairs × train_frac "
        f"{grid['train_frac']} = {pairs} used; evaluation on all of its retrieval and zero-shot data",
        f"* towers/optimiser: `{Path(grid['config']).name}`; lr warm-up {grid['warmup_frac']:.0%} of each run's steps",
        f"* losses: {', '.join(grid['ita_types'])}",
        f"* batch sizes {grid['batch_sizes']}, seeds {grid['seeds']}, {grid['epochs']} epochs, evaluation after "
        f"every epoch (`--eval_freq 1`), {grid['threads']} CPU thread(s) per run",
        f"* optimiser steps per run (equal epochs, so larger batches take fewer steps): {steps}",
        f"* chance level: {chance_text(grid['demo_counts'])}",
        f"* extra clip.py flags: `{extra}`",
    ])


def kept_block(results_md: Path, begin: str = NOTES_BEGIN, end: str = NOTES_END) -> str:
    """The hand-written block between `begin` and `end` of an existing results page, or an empty block."""
    if results_md.is_file():
        text = results_md.read_text(encoding="utf-8")
        first, last = text.find(begin), text.find(end)
        if 0 <= first < last:
            return text[first:last + len(end)]
    return f"{begin}\n{end}"


def results_markdown(rows: list[dict], effects: list[dict], grid: dict, loss_order: list[str],
                     plot_link: str, notes: str) -> str:
    """The whole results page."""
    command = ("python benchmarks/loss_comparison.py --ita-types " + " ".join(grid["ita_types"]) +
               " --batch-sizes " + " ".join(map(str, grid["batch_sizes"])) +
               " --seeds " + " ".join(map(str, grid["seeds"])) +
               f" --epochs {grid['epochs']} --train-frac {grid['train_frac']} --warmup-frac {grid['warmup_frac']}" +
               (" -- " + " ".join(grid["extra_flags"]) if grid["extra_flags"] else ""))
    return "\n".join([
        f"# Loss comparison on the {grid['demo_source']} demo", "",
        "Written by `benchmarks/loss_comparison.py`; regenerate with", "", "```bash", command, "```", "",
        "## Settings", "", settings_text(grid), "",
        "## Final metrics (%, mean ± std over seeds)", "", results_table(rows, loss_order), "",
        "## Small-batch effect", "",
        "Δ = metric at the smallest batch − metric at the largest batch (points) ± its standard error over "
        "seeds; in brackets, Δ − clip's Δ ± its standard error (positive: the loss's margin over clip is larger "
        "at the small batch than at the large one).", "",
        effect_table(effects, loss_order), "", effect_summary(effects, rows), "", notes, "",
        "## Plots", "", f"![final metric against batch size]({plot_link}/{BATCH_PLOT})", "",
        f"![metric against epoch]({plot_link}/{EPOCH_PLOT})", "",
    ])


def readme_section(rows: list[dict], loss_order: list[str], results_link: str, plot_link: str) -> str:
    """README block between the markers: table, main plot, link to the results page."""
    intro = (f"Mean ± std over seeds of the final metrics (%); settings, the small-batch effect and the "
             f"per-epoch plot: [{results_link}]({results_link}).")
    plot = f"![final metric against batch size]({plot_link}/{BATCH_PLOT})"
    return "\n".join([README_BEGIN, intro, "", results_table(rows, loss_order), "", plot, README_END])


def update_readme(readme: Path, section: str) -> None:
    """Replace the text between the markers (they must already be in the README)."""
    text = readme.read_text(encoding="utf-8")
    start, end = text.find(README_BEGIN), text.find(README_END)
    if start < 0 or end < start:
        raise SystemExit(f"{readme}: no '{README_BEGIN}' ... '{README_END}' block to update")
    readme.write_text(text[:start] + section + text[end + len(README_END):], encoding="utf-8")


def _link(target: Path, start: Path) -> str:
    return Path(os.path.relpath(target.resolve(), start.resolve())).as_posix()


def write_report(results: list[RunResult], grid: dict, json_path: Path, results_md: Path, plots_dir: Path,
                 readme: Path | None) -> None:
    """JSON (every run's curve and the summary), the markdown page, both plots, optionally the README block."""
    loss_order = list(grid["ita_types"])
    rows = summarise(results)
    effects = batch_effect(rows)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps({"grid": grid, "summary": rows, "batch_effect": effects,
                                     "runs": [asdict(r) for r in results]}, indent=1) + "\n", encoding="utf-8")
    plots_dir.mkdir(parents=True, exist_ok=True)
    results_md.parent.mkdir(parents=True, exist_ok=True)
    if results:
        plot_vs_epoch(results, loss_order, plots_dir / EPOCH_PLOT)
        plot_vs_batch(rows, loss_order, plots_dir / BATCH_PLOT)
    plot_link = _link(plots_dir, results_md.parent)
    page = results_markdown(rows, effects, grid, loss_order, plot_link, kept_block(results_md))
    results_md.write_text(page + "\n" + kept_block(results_md, OTHERS_BEGIN, OTHERS_END) + "\n", encoding="utf-8")
    if readme is not None:
        update_readme(readme, readme_section(rows, loss_order, _link(results_md, readme.parent),
                                             _link(plots_dir, readme.parent)))
