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


def format_results_table(results: Mapping[str, float]) -> str:
    """Readable console table of retrieval and zero-shot metrics."""
    rows = []
    groups = (("image→text R@1/5/10", ("txt_r1", "txt_r5", "txt_r10")),
              ("text→image R@1/5/10", ("img_r1", "img_r5", "img_r10")),
              ("zero-shot top-1/top-5", ("zeroshot_top1", "zeroshot_top5")))
    for title, keys in groups:
        present = [results[k] for k in keys if k in results and not math.isnan(results[k])]
        if present:
            rows.append(f"| {title:<22} | {' / '.join(f'{v:6.2f}' for v in present):<24} |")
    if not rows:
        return "(no evaluation results)"
    border = f"|{'-' * 24}|{'-' * 26}|"
    return "\n".join([f"| {'metric (%)':<22} | {'value':<24} |", border, *rows])
