"""Shared plumbing of every loss: fp32 math, the distributed layout and per-sample state (docs/losses.md §11).

`ContrastiveLoss.forward` disables autocast, promotes the features to fp32 (fp64 stays fp64, which
the tests use), all-gathers them and hands a `Batch` to `_compute`. Each rank computes only its b local
anchor rows against the B global candidates; the per-rank loss is a mean over local anchors, so DDP's
gradient averaging yields the single-process gradient of the global batch.

Two distributed modes (`dist_mode`, identical in a single process):
* `autograd`: the gather's backward sums the candidate gradients over ranks (a reduce-scatter, or an
  all-reduce on gloo, of B×d feature gradients).
* `fastclip`: the gather carries no gradient; the loss adds FastCLIP's candidate part (`candidates.py`)
  computed from the row terms' per-anchor scalars, which travel in the state all-gather, so the backward
  performs no collective. Terms of the whole global batch (regularisers) use `Batch.replicated`.

`StatefulLoss` adds the per-sample state: registered float64 1-D buffers of length `num_samples`, read at
the local anchors' ids and written, after an all-gather of (ids, new rows), into every replica with the
deterministic last-occurrence rule; rows with non-finite values are skipped and counted. The GCL loop
built on it is `core.GCLLoss`.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property

import torch
from torch import Tensor, nn

from . import collectives
from .candidates import CandidateView, RowTerm, candidate_loss, pack
from .estimator import STATE_DTYPE, STATE_INITS, Direction, Normaliser, gcl_direction, reset_mask, tiled_direction
from .schedules import gamma_at
from .state import check_ids, write_rows
from .tiled import Pairs

DIST_MODES = ("autograd", "fastclip")


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
    all_img: Tensor    # [B, d] gathered image features (autograd: grad flows back summed over ranks)
    all_txt: Tensor    # [B, d]
    pos_col: Tensor    # [b] global column of each local anchor's positive: rank·b + slot
    world: int
    split: bool = False  # fastclip mode with W > 1: gathered features detached, candidate part needed
    tile: int = 0        # `--loss_tile`: blocks of the b×B matrices (0: formed whole); see tiled.py

    @property
    def size(self) -> int:
        """Global batch size B."""
        return self.all_img.shape[0]

    @cached_property
    def similarities(self) -> tuple[Tensor, Tensor]:
        """(e_loc·Ẑᵀ [b, B], z_loc·Êᵀ [b, B]); kept, because the candidate part reuses their values transposed."""
        return self.img @ self.all_txt.T, self.txt @ self.all_img.T

    @cached_property
    def positives(self) -> Tensor:
        """[b] S_ii = ⟨e_i, z_i⟩ of the local pairs."""
        return (self.img * self.txt).sum(dim=1)

    @cached_property
    def differences(self) -> tuple[Tensor, Tensor]:
        """h^I [b, B] (image anchors vs texts) and h^T [b, B] (text anchors vs images), S_ij − S_ii."""
        pos = self.positives.unsqueeze(1)
        sim_img, sim_txt = self.similarities
        return sim_img - pos, sim_txt - pos

    def pairs(self, side: str, tau: Tensor, mask_positive: bool = True, log_cap: float | None = None) -> Pairs:
        """The side's local anchors against the global candidates, for the tiled reductions (`tiled.py`)."""
        anchors, cands = (self.img, self.all_txt) if side == "img" else (self.txt, self.all_img)
        return Pairs(anchors, cands, self.positives, self.pos_col, tau, mask_positive, log_cap)

    def candidate_loss(self, terms: Sequence[RowTerm], gathered: Tensor) -> Tensor | float:
        """FastCLIP's candidate part for `terms` given their gathered [B, 3·T] scalars (0 unless split)."""
        if not self.split:
            return 0.0
        sim_img, sim_txt = self.similarities if not self.tile else (None, None)
        anchor_pos = (self.all_img * self.all_txt).sum(dim=1)
        # image anchors' candidates are the local texts: their block is z_loc·Êᵀ, and vice versa
        views = {"img": CandidateView(self.all_img, self.txt, sim_txt),
                 "txt": CandidateView(self.all_txt, self.img, sim_img)}
        return candidate_loss(terms, gathered, views, anchor_pos, self.pos_col, self.tile)

    def replicated(self, term: Callable[[Tensor, Tensor], Tensor]) -> Tensor:
        """`term(global image features, global text features)`, a term every rank computes identically.

        autograd: the gather's backward sums the W identical gradients, DDP's average restores ∂term.
        fastclip: only the own rows carry the gradient, scaled by W (the value is unchanged), which gives
        the same averaged gradient without a collective in the backward.
        """
        if not self.split:
            return term(self.all_img, self.all_txt)
        own = term(self.all_img.index_copy(0, self.pos_col, self.img),
                   self.all_txt.index_copy(0, self.pos_col, self.txt))
        return own + (self.world - 1) * (own - own.detach())


def _compute_dtype(*tensors: Tensor) -> torch.dtype:
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


class ContrastiveLoss(nn.Module):
    """Base class: `loss_fn(image_features, text_features, ids) -> LossOutput`."""

    tileable = False  # computes its b×B reductions through `Batch.pairs` / `tiled.py` when `loss_tile` > 0

    def __init__(self, dist_mode: str = "autograd") -> None:
        super().__init__()
        if dist_mode not in DIST_MODES:
            raise ValueError(f"dist_mode must be one of {DIST_MODES}, got {dist_mode!r}")
        self.dist_mode = dist_mode
        self.loss_tile = 0
        self.epoch = 0
        self.num_epochs = 1

    def set_loss_tile(self, tile: int) -> None:
        """Compute the loss in [tile, tile] blocks of the b×B matrices (0: whole), for the losses that can (`tiled.py`)."""
        if tile < 0:
            raise ValueError(f"loss_tile must be >= 0, got {tile}")
        if tile and not self.tileable:
            raise ValueError(f"--loss_tile is not supported by {type(self).__name__}")
        self.loss_tile = int(tile)

    def set_epoch(self, epoch: int, num_epochs: int) -> None:
        """Called by the engine before every epoch (0-based)."""
        if epoch < 0 or num_epochs < 1:
            raise ValueError(f"invalid epoch {epoch} of {num_epochs}")
        self.epoch, self.num_epochs = int(epoch), int(num_epochs)

    def param_groups(self) -> list[dict]:
        """Optimiser groups of the loss's parameters (none by default). Key "optimizer": "main" (the model's
        optimiser and lr schedule; an optional "lr" replaces the base lr) or "own" (a separate Adam whose lr
        `own_lr` sets before every step)."""
        return []

    def own_lr(self, base_lr: float, epoch: int) -> float:
        """Learning rate of the "own" groups during `epoch`, from their initial lr (constant by default)."""
        return base_lr

    def fraction_at_tau_min(self) -> float | None:
        """Share of the visited per-sample temperatures at their lower bound; None without per-sample τ."""
        return None

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
        split = self.dist_mode == "fastclip" and world > 1
        gather = collectives.all_gather_no_grad if split else collectives.all_gather_with_grad
        all_img, all_txt = gather(img), gather(txt)
        if all_img.shape[0] < 2:
            raise ValueError("contrastive losses need a global batch of at least 2 pairs")
        b = img.shape[0]
        pos_col = torch.arange(rank * b, (rank + 1) * b, device=img.device)
        return Batch(img, txt, ids, all_img, all_txt, pos_col, world, split, self.loss_tile)

    @staticmethod
    def candidate_part(batch: Batch, terms: Sequence[RowTerm]) -> Tensor | float:
        """Stateless losses: all-gather the row terms' scalars and return the candidate part (0 unless split)."""
        if not batch.split:
            return 0.0
        return batch.candidate_loss(terms, collectives.all_gather_no_grad(pack(terms)))

    def _compute(self, batch: Batch) -> LossOutput:
        raise NotImplementedError


class StatefulLoss(ContrastiveLoss):
    """A loss with per-sample state keyed by pair id and a γ-averaged normaliser estimate.

    The buffers are float64 (a few numbers per sample); a checkpoint with float32 buffers (older runs)
    loads into them, `load_state_dict` casting each value.
    """

    def __init__(self, num_samples: int, fields: dict[str, float], sogclr_gamma: float,
                 gamma_schedule: str = "constant", gamma_decay_epochs: int | None = None,
                 state_init: str = "first_visit", gamma_one_at_epoch0: bool = False,
                 dist_mode: str = "autograd") -> None:
        super().__init__(dist_mode)
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
            self.register_buffer(name, torch.full((self.num_samples,), float(init), dtype=STATE_DTYPE))
        self.register_buffer("nonfinite_total", torch.zeros((), dtype=torch.long))
        gamma_at(0, self.sogclr_gamma, gamma_schedule, 1)  # validate early

    @property
    def gamma(self) -> float:
        """γ of the current epoch (docs/losses.md §2, γ schedules)."""
        decay = self.gamma_decay_epochs if self.gamma_decay_epochs is not None else max(1, self.num_epochs // 2)
        return gamma_at(self.epoch, self.sogclr_gamma, self.gamma_schedule, decay, self.gamma_one_at_epoch0)

    def _checked_ids(self, ids: Tensor, device: torch.device) -> Tensor:
        return check_ids(ids, self.num_samples).to(device)

    def read(self, name: str, ids: Tensor) -> Tensor:
        """State `name` at `ids`, float64."""
        return getattr(self, name)[ids].to(STATE_DTYPE)

    def direction(self, h: Tensor | Pairs, batch: Batch, tau: Tensor, log_u_name: str, normaliser: Normaliser,
                  gamma: float, log_cap: float | None = None) -> Direction:
        """Run the shared estimator for one direction with the stored ℓ of `log_u_name`.

        `h`: the [b, B] differences, or the side's `Pairs` (whose τ and cap are used) to run it in blocks of
        `batch.tile`.
        """
        log_u_old = self.read(log_u_name, batch.ids)
        reset = reset_mask(log_u_old, self.state_init, self.epoch)
        if isinstance(h, Pairs):
            return tiled_direction(h, log_u_old, normaliser, gamma, reset, batch.tile)
        return gcl_direction(h, batch.pos_col, tau, log_u_old, normaliser, gamma, reset, log_cap)

    def write(self, batch: Batch, values: dict[str, Tensor],
              terms: Sequence[RowTerm] = ()) -> tuple[Tensor, Tensor | float]:
        """Write the local anchors' new rows into every replica; return (skipped rows, candidate part).

        In fastclip mode the row terms' scalars (with the updated ℓ) ride along in the rows' all-gather,
        and the candidate part (0 otherwise) is computed from them.
        """
        names = list(values)
        rows = torch.stack([values[n].detach() for n in names], dim=1)
        if batch.split:
            rows = torch.cat([rows, pack(terms).to(rows.dtype)], dim=1)
        all_ids = collectives.all_gather_no_grad(batch.ids)
        all_rows = collectives.all_gather_no_grad(rows)
        skipped = write_rows([getattr(self, n) for n in names], all_ids, all_rows[:, :len(names)])
        self.nonfinite_total += skipped
        return skipped, batch.candidate_loss(terms, all_rows[:, len(names):])
