"""Experiment tracking (`--report_to tensorboard,wandb`): rank 0 writes train scalars every `--log_every`
steps, eval scalars per epoch and the resolved args once as text (README "Outputs")."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any, Mapping

BACKENDS = {"tensorboard": "tensorboard", "wandb": "wandb"}  # --report_to name -> package that must be installed


def parse_report_to(text: str) -> tuple[str, ...]:
    """`tensorboard,wandb` -> the names; unknown names or uninstalled packages are a ValueError naming them."""
    names = tuple(dict.fromkeys(name.strip() for name in text.split(",") if name.strip()))
    for name in names:
        if name not in BACKENDS:
            raise ValueError(f"unknown backend {name!r} (choose from {', '.join(BACKENDS)})")
        if importlib.util.find_spec(BACKENDS[name]) is None:
            raise ValueError(f"{name}: the {BACKENDS[name]} package is not installed (pip install {BACKENDS[name]})")
    return names


class Tracker:
    """Scalars to every chosen backend; a no-op with no backend or off rank 0."""

    def __init__(self, backends: tuple[str, ...], output_dir: Path, args: Mapping[str, Any], enabled: bool) -> None:
        self.tensorboard = self.wandb = None
        self._wandb_steps: set[str] = set()  # prefixes whose `<prefix>/step` axis W&B already knows
        if not enabled:
            return
        config = json.dumps(dict(args), indent=2, default=str)
        if "tensorboard" in backends:
            from torch.utils.tensorboard import SummaryWriter

            self.tensorboard = SummaryWriter(str(output_dir / "tensorboard"))
            self.tensorboard.add_text("args", f"```\n{config}\n```", 0)
        if "wandb" in backends:
            import wandb

            self.wandb = wandb.init(dir=str(output_dir), config=dict(args), name=Path(output_dir).name)

    def scalars(self, prefix: str, values: Mapping[str, float], step: int) -> None:
        """`<prefix>/<name>` = value at `step` (non-numbers are left out)."""
        numbers = {f"{prefix}/{name}": float(v) for name, v in values.items() if isinstance(v, (int, float))}
        if self.tensorboard is not None:
            for tag, value in numbers.items():
                self.tensorboard.add_scalar(tag, value, step)
        if self.wandb is not None:
            if prefix not in self._wandb_steps:
                # train scalars count optimizer steps and eval scalars epochs: each family gets its own x axis
                # instead of W&B's call counter, which interleaves the two
                self.wandb.define_metric(f"{prefix}/step")
                self.wandb.define_metric(f"{prefix}/*", step_metric=f"{prefix}/step")
                self._wandb_steps.add(prefix)
            self.wandb.log({**numbers, f"{prefix}/step": step})

    def train_scalars(self, step: int, values: Mapping[str, float]) -> None:
        """`train/<name>` at global `step` (the training loop's `StepConfig.on_log`)."""
        self.scalars("train", values, step)

    def flush(self) -> None:
        """Write pending events (every epoch end)."""
        if self.tensorboard is not None:
            self.tensorboard.flush()

    def close(self) -> None:
        """Flush and close every backend (end of run, pre-emption and errors too)."""
        if self.tensorboard is not None:
            self.tensorboard.close()
        if self.wandb is not None:
            self.wandb.finish()
