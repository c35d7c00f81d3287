"""Checkpoints that never corrupt a run: atomic writes, plain-data contents, `weights_only` loading.

A checkpoint is a dict of tensors and plain Python values (args as a dict, RNG states as tensors/lists),
so `torch.load(..., weights_only=True)` reads it and a pickled payload is refused.
"""
from __future__ import annotations

import os
import pickle
import random
import re
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

FORMAT_VERSION = 1
# Keys every training checkpoint holds (what `--resume` needs), and the ones it may hold besides.
RESUME_KEYS = frozenset({"format_version", "model", "loss", "optimizer", "optimizers_extra", "scaler", "rng", "epoch",
                         "step", "args"})
OPTIONAL_KEYS = frozenset({
    "mid_epoch",  # written inside an epoch: iteration, steps_per_epoch, world_size, batch_size, per-rank RNG
    "scheduler",  # timm scheduler state, written by earlier versions; unused (the lr follows from the position)
})
NUMBERED_CHECKPOINT = re.compile(r"checkpoint_(\d+)\.pth")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; the message names the file and what is wrong."""


class NonFiniteModel(RuntimeError):
    """The weights or the embeddings hold NaN/Inf (a diverged run): the model is neither evaluated nor saved."""


def first_non_finite(modules: dict[str, torch.nn.Module]) -> str | None:
    """Name (`<prefix>.<parameter>`) of the first parameter holding NaN/Inf, None when all are finite.

    Only parameters: some buffers (the losses' log-domain state) hold -inf on purpose.
    """
    named = [(f"{prefix}.{name}", param) for prefix, module in modules.items()
             for name, param in module.named_parameters()]
    if not named:
        return None
    finite = torch.stack([torch.isfinite(param.detach()).all() for _, param in named]).tolist()  # one host sync
    return next((name for (name, _), ok in zip(named, finite) if not ok), None)


def refuse_non_finite(modules: dict[str, torch.nn.Module], source: Path | str) -> None:
    """CheckpointError when weights loaded from `source` hold NaN/Inf (a checkpoint of a diverged run)."""
    name = first_non_finite(modules)
    if name is not None:
        raise CheckpointError(f"{source}: non-finite weights (first: {name} holds NaN/Inf); it was written by a "
                              f"diverged run, use an earlier checkpoint")


def save_atomic(obj: dict[str, Any], path: Path) -> None:
    """Write `obj` to `path` so that `path` is either the old complete file or the new complete file.

    A write error (disk full, file size limit, quota, permissions) becomes a CheckpointError naming the
    file; the previous file is left as it was and the temporary file is removed. torch's zip writer reports
    a failed write as a RuntimeError, not an OSError, so both are caught.
    """
    path = Path(path)
    tmp_name = None
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except (OSError, RuntimeError) as error:
        _discard(tmp_name)
        reason = error.strerror if isinstance(error, OSError) and error.strerror else _first_line(error)
        raise CheckpointError(f"disk full or cannot write checkpoint {path}: {reason}; the checkpoint files "
                              f"already there are unchanged") from None
    except BaseException:
        _discard(tmp_name)
        raise
    _fsync_dir(path.parent)


def _first_line(error: BaseException) -> str:
    """The first non-empty line of an exception's message without torch's `[enforce fail at …]` prefix, or
    its type name when the message is empty."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = re.sub(r"^\[enforce fail at [^\]]*\]\s*\.?\s*", "", lines[0]) if lines else ""
    return text or type(error).__name__


def _discard(tmp_name: str | None) -> None:
    if tmp_name is not None:
        Path(tmp_name).unlink(missing_ok=True)


def link_atomic(source: Path, target: Path) -> None:
    """Make `target` name the same complete file as `source` (hard link, copy where links fail)."""
    tmp = target.with_name(f".{target.name}.link.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(source, tmp)
    except OSError:
        save_atomic(torch.load(source, map_location="cpu", weights_only=True), target)
        return
    os.replace(tmp, target)
    _fsync_dir(target.parent)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load_checkpoint(path: str | os.PathLike, required: Iterable[str] = ()) -> dict[str, Any]:
    """Read a checkpoint with `weights_only=True`; a one-line CheckpointError naming the file for anything
    else (not found, empty, text, truncated, a zip of something else, pickled objects), including a file
    that lacks one of the `required` top-level keys."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"cannot read checkpoint {path}: the file is empty (0 bytes)")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise CheckpointError(f"refusing to load {path}: it holds objects that are not plain data, or is not a "
                              f"checkpoint (weights_only loading failed: {_first_line(error)})") from None
    except Exception as error:  # torch.load of a file that is not a checkpoint can raise nearly anything
        raise CheckpointError(f"cannot read checkpoint {path}: {_first_line(error)} (not a complete checkpoint "
                              f"file written by torch.save)") from None
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"{path} holds a {type(checkpoint).__name__}, not a checkpoint dict")
    missing = sorted(set(required) - set(checkpoint))
    if missing:
        raise CheckpointError(f"{path} lacks {', '.join(missing)} (is it a training checkpoint of this project?)")
    return checkpoint


def check_resume_keys(checkpoint: dict[str, Any], path: str | os.PathLike, required: frozenset[str] = RESUME_KEYS,
                      optional: frozenset[str] = OPTIONAL_KEYS,
                      hint: str = "to start from its weights only, use --checkpoint instead of --resume") -> None:
    """Strict key check for `--resume`: every `required` key present, nothing outside `required` and `optional`
    (defaults: clip.py's training checkpoints); `hint` ends the error message."""
    missing = sorted(required - set(checkpoint))
    unexpected = sorted(set(checkpoint) - required - optional)
    if missing or unexpected:
        details = "; ".join(f"{name}: {', '.join(keys)}" for name, keys in (("missing", missing),
                                                                           ("unexpected", unexpected)) if keys)
        raise CheckpointError(f"{path} cannot be resumed from ({details}); {hint}")
    if checkpoint["format_version"] > FORMAT_VERSION:
        raise CheckpointError(f"{path} has format version {checkpoint['format_version']}, newer than this code "
                              f"({FORMAT_VERSION})")


def prune_numbered(directory: Path, keep: int) -> list[Path]:
    """Delete all but the `keep` newest `checkpoint_<epoch>.pth` in `directory` (keep = 0: delete none).

    The file that `checkpoint_last.pth` names (a hard link to a numbered file) is never deleted. Returns
    the deleted paths.
    """
    if keep <= 0:
        return []
    last = directory / "checkpoint_last.pth"
    numbered = sorted((int(match.group(1)), path) for path in directory.iterdir()
                      if (match := NUMBERED_CHECKPOINT.fullmatch(path.name)))
    deleted = []
    for _, path in numbered[:-keep]:
        if last.exists() and os.path.samefile(path, last):
            continue
        path.unlink()
        deleted.append(path)
    return deleted


def remove_stale_temporaries(directory: Path) -> list[Path]:
    """Delete `.checkpoint_*.tmp` files that a process killed while saving left behind; returns them."""
    stale = [path for path in directory.glob(".checkpoint_*.tmp") if path.is_file()]
    for path in stale:
        path.unlink()
    return stale


def load_state_strict(module: torch.nn.Module, state: dict[str, torch.Tensor], what: str, source: Path | str) -> None:
    """load_state_dict that fails with the lists of missing/unexpected/mismatched keys."""
    if not isinstance(state, dict) or not all(isinstance(value, torch.Tensor) for value in state.values()):
        raise CheckpointError(f"{source}: the {what} is not a mapping of names to tensors (not a checkpoint of "
                              f"this project?)")
    own = module.state_dict()
    mismatched = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in state.items()
                  if k in own and v.shape != own[k].shape]
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected or mismatched:
        details = "; ".join(f"{name}: {', '.join(keys[:8])}{' …' if len(keys) > 8 else ''}"
                            for name, keys in (("missing", missing), ("unexpected", unexpected),
                                               ("shape mismatch", mismatched)) if keys)
        raise CheckpointError(f"{source}: the {what} does not match this architecture ({details})")
    module.load_state_dict(state)


def capture_rng_state() -> dict[str, Any]:
    """RNG states of torch (CPU and CUDA), NumPy and Python as plain data."""
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Put back the RNG states `capture_rng_state` returned."""
    torch.set_rng_state(state["torch"])
    np_state = state["numpy"]
    np.random.set_state(("MT19937", np_state["keys"].numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["cached_gaussian"]))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@contextmanager
def preserved_rng_state() -> Iterator[None]:
    """Run the block with every RNG (torch CPU and CUDA, NumPy, Python) put back as it was afterwards, so that
    side work such as evaluation draws nothing from the training run's random streams."""
    state = capture_rng_state()
    try:
        yield
    finally:
        restore_rng_state(state)
