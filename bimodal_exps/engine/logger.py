"""Run outputs (README): console table, JSON-lines logs, and running averages that avoid per-step host syncs."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping

import torch

from models.gcl.collectives import all_reduce_sum


class RunningMeans:
    """Sums of scalar tensors kept on device; turned into floats once, when read."""

    def __init__(self) -> None:
        self._sums: dict[str, torch.Tensor] = {}
        self.count = 0

    def update(self, values: Mapping[str, torch.Tensor]) -> None:
        for name, value in values.items():
            value = value.detach().float()
            self._sums[name] = self._sums[name] + value if name in self._sums else value.clone()
        self.count += 1

    def means(self, synchronize: bool = False) -> dict[str, float]:
        """Averages over updates (and over ranks with `synchronize`)."""
        if not self._sums:
            return {}
        names = sorted(self._sums)
        stacked = torch.stack([self._sums[n] for n in names] + [torch.tensor(float(self.count),
                              device=self._sums[names[0]].device)])
        if synchronize:
            stacked = all_reduce_sum(stacked)
        values = stacked.tolist()
        return {name: values[i] / max(values[-1], 1.0) for i, name in enumerate(names)}


def append_jsonl(path: Path, record: Mapping[str, Any]) -> None:
    """One JSON object per line; values stay numbers (no 3-decimal strings as in the references)."""
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record, allow_nan=True) + "\n")


def write_eval_logs(output_dir: Path, retrieval: Mapping[str, float], zeroshot: Mapping[str, float],
                    epoch: int, zeroshot_name: str) -> None:
    """Append the references' legacy files: `coco_log.txt` (val_* keys) and `zeroshot_<dataset>_log.txt`."""
    if retrieval:
        append_jsonl(output_dir / "coco_log.txt",
                     {**{f"val_{k}": v for k, v in retrieval.items()}, "epoch": epoch, "data": "coco"})
    if zeroshot:
        append_jsonl(output_dir / f"zeroshot_{zeroshot_name}_log.txt", {**zeroshot, "epoch": epoch})


def write_eval_results(path: Path, metrics: Mapping[str, float], **context: Any) -> None:
    """`eval_results.json`: the latest evaluation's metrics (percent) and what was evaluated (`context`)."""
    path.write_text(json.dumps({**context, "units": "percent", "metrics": dict(metrics)}, indent=2) + "\n",
                    encoding="utf-8")


def format_results_table(results: Mapping[str, float]) -> str:
    """Readable console table: retrieval and zero-shot rows, then one row per other metric (README "Evaluations")."""
    groups = (("image→text R@1/5/10", ("txt_r1", "txt_r5", "txt_r10")),
              ("text→image R@1/5/10", ("img_r1", "img_r5", "img_r10")),
              ("zero-shot top-1/top-5", ("zeroshot_top1", "zeroshot_top5")))
    grouped = {"txt_r_mean", "img_r_mean", "r_mean", *(key for _, keys in groups for key in keys)}
    lines = [(title, " / ".join(f"{results[k]:6.2f}" for k in keys if k in results and not math.isnan(results[k])))
             for title, keys in groups]
    lines += [(key, f"{value:6.2f}") for key, value in results.items()
              if key not in grouped and isinstance(value, float)]
    lines = [(title, value) for title, value in lines if value]
    if not lines:
        return "(no evaluation results)"
    width = max(22, *(len(title) for title, _ in lines))
    border = f"|{'-' * (width + 2)}|{'-' * 26}|"
    return "\n".join([f"| {'metric (%)':<{width}} | {'value':<24} |", border,
                      *(f"| {title:<{width}} | {value:<24} |" for title, value in lines)])
