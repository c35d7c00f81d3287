"""Shared plumbing of every loss: fp32 math, the distributed layout (D4) and per-sample state (D3).

`ContrastiveLoss.forward` disables autocast, promotes the features to fp32 (fp64 stays fp64, which
the tests use), all-gathers them with the summing backward and hands a `Batch` to `_compute`.
Each rank computes only its b local anchor rows against the B global candidates; the per-rank loss
is a mean over local anchors, so DDP's gradient averaging yields the single-process gradient of the
global batch (losses spec §9).

`GCLLoss` adds the per-sample state: registered 1-D buffers of length `num_samples`, read at the
local anchors' ids and written, after an all-gather of (ids, new rows), into every replica with the
deterministic last-occurrence rule; rows with non-finite values are skipped and counted.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from . import collectives
from .estimator import STATE_INITS, Direction, Normaliser, gcl_direction, reset_mask
from .schedules import gamma_at
from .state import check_ids, write_rows


@dataclass
class LossOutput:
    """`loss`: scalar to backpropagate. `stats`: detached 0-dim tensors for logging."""

    loss: Tensor
    stats: dict[str, Tensor]


@dataclass
class Batch:
    """Local features and ids of this rank plus the gathered global candidates."""

    img: Tensor        # [b, d] local image features (compute dtype, with grad)
    txt: Tensor        # [b, d] local text features
    ids: Tensor        # [b] int64 pair ids
    all_img: Tensor    # [B, d] gathered image features (grad flows back summed over ranks)
    all_txt: Tensor    # [B, d]
    pos_col: Tensor    # [b] global column of each local anchor's positive: rank·b + slot
    world: int

    @property
    def size(self) -> int:
        """Global batch size B."""
        return self.all_img.shape[0]

    def differences(self) -> tuple[Tensor, Tensor]:
        """h^I [b, B] (image anchors vs texts) and h^T [b, B] (text anchors vs images), S_ij − S_ii."""
        pos = (self.img * self.txt).sum(dim=1, keepdim=True)
        return self.img @ self.all_txt.T - pos, self.txt @ self.all_img.T - pos


def _compute_dtype(*tensors: Tensor) -> torch.dtype:
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


class ContrastiveLoss(nn.Module):
    """Base class: `loss_fn(image_features, text_features, ids) -> LossOutput`."""

    def __init__(self) -> None:
        super().__init__()
        self.epoch = 0
        self.num_epochs = 1

    def set_epoch(self, epoch: int, num_epochs: int) -> None:
        """Called by the engine before every epoch (0-based)."""
        if epoch < 0 or num_epochs < 1:
            raise ValueError(f"invalid epoch {epoch} of {num_epochs}")
        self.epoch, self.num_epochs = int(epoch), int(num_epochs)

    def param_groups(self) -> list[dict]:
        """Optimiser groups of the loss's own parameters (none by default)."""
        return []

    def forward(self, image_features: Tensor, text_features: Tensor, ids: Tensor) -> LossOutput:
        if image_features.dim() != 2 or image_features.shape != text_features.shape:
            raise ValueError(f"expected two [b, d] feature tensors of equal shape, got "
                             f"{tuple(image_features.shape)} and {tuple(text_features.shape)}")
        if ids.shape[0] != image_features.shape[0]:
            raise ValueError(f"{ids.shape[0]} ids for {image_features.shape[0]} feature rows")
        with torch.autocast(device_type=image_features.device.type, enabled=False):
            return self._compute(self._batch(image_features, text_features, ids))

    def _checked_ids(self, ids: Tensor, device: torch.device) -> Tensor:
        return ids.to(device)

    def _batch(self, image_features: Tensor, text_features: Tensor, ids: Tensor) -> Batch:
        dtype = _compute_dtype(image_features, text_features)
        img, txt = image_features.to(dtype), text_features.to(dtype)
        ids = self._checked_ids(ids, img.device)
        rank, world = collectives.rank_and_world()
        all_img, all_txt = collectives.all_gather_with_grad(img), collectives.all_gather_with_grad(txt)
        if all_img.shape[0] < 2:
            raise ValueError("contrastive losses need a global batch of at least 2 pairs")
        b = img.shape[0]
        pos_col = torch.arange(rank * b, (rank + 1) * b, device=img.device)
        return Batch(img, txt, ids, all_img, all_txt, pos_col, world)

    def _compute(self, batch: Batch) -> LossOutput:
        raise NotImplementedError


class GCLLoss(ContrastiveLoss):
    """A loss with per-sample state keyed by pair id and a γ-averaged normaliser estimate."""

    def __init__(self, num_samples: int, fields: dict[str, float], sogclr_gamma: float,
                 gamma_schedule: str = "constant", gamma_decay_epochs: int | None = None,
                 state_init: str = "first_visit", gamma_one_at_epoch0: bool = False) -> None:
        super().__init__()
        if num_samples < 1:
            raise ValueError(f"num_samples must be positive, got {num_samples}")
        if gamma_decay_epochs is not None and gamma_decay_epochs < 1:
            raise ValueError(f"gamma_decay_epochs must be positive, got {gamma_decay_epochs}")
        if state_init not in STATE_INITS:
            raise ValueError(f"state_init must be one of {STATE_INITS}, got {state_init!r}")
        self.num_samples = int(num_samples)
        self.sogclr_gamma = float(sogclr_gamma)
        self.gamma_schedule = gamma_schedule
        self.gamma_decay_epochs = gamma_decay_epochs
        self.state_init = state_init
        self.gamma_one_at_epoch0 = gamma_one_at_epoch0
        for name, init in fields.items():
            self.register_buffer(name, torch.full((self.num_samples,), float(init)))
        self.register_buffer("nonfinite_total", torch.zeros((), dtype=torch.long))
        gamma_at(0, self.sogclr_gamma, gamma_schedule, 1)  # validate early

    @property
    def gamma(self) -> float:
        """γ of the current epoch (FastCLIP schedule, losses spec §6.4)."""
        decay = self.gamma_decay_epochs if self.gamma_decay_epochs is not None else max(1, self.num_epochs // 2)
        return gamma_at(self.epoch, self.sogclr_gamma, self.gamma_schedule, decay, self.gamma_one_at_epoch0)

    def _checked_ids(self, ids: Tensor, device: torch.device) -> Tensor:
        return check_ids(ids, self.num_samples).to(device)

    def read(self, name: str, ids: Tensor, dtype: torch.dtype) -> Tensor:
        """State `name` at `ids` in the compute dtype."""
        return getattr(self, name)[ids].to(dtype)

    def direction(self, h: Tensor, batch: Batch, tau: Tensor, log_u_name: str, normaliser: Normaliser,
                  gamma: float, log_cap: float | None = None) -> Direction:
        """Run the shared estimator for one direction with the stored ℓ of `log_u_name`."""
        log_u_old = self.read(log_u_name, batch.ids, h.dtype)
        reset = reset_mask(log_u_old, self.state_init, self.epoch)
        return gcl_direction(h, batch.pos_col, tau, log_u_old, normaliser, gamma, reset, log_cap)

    def write(self, ids: Tensor, values: dict[str, Tensor]) -> Tensor:
        """Write new rows of the local anchors into every replica; return the skipped-row count."""
        names = list(values)
        rows = torch.stack([values[n].detach() for n in names], dim=1)
        all_ids = collectives.all_gather_no_grad(ids)
        all_rows = collectives.all_gather_no_grad(rows)
        skipped = write_rows([getattr(self, n) for n in names], all_ids, all_rows)
        self.nonfinite_total += skipped
        return skipped
