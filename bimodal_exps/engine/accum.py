"""`--accum_freq K`: exact gradient accumulation by gradient caching (Gao et al., "Scaling Deep Contrastive
Learning Batch Size under Memory Limited Setup", 2021).

One optimiser step sees K micro-batches of `--batch_size_train` rows (the loader yields them as one batch
of K·b rows, split here). The step (1) encodes every micro-batch without a graph, (2) computes the loss
once on the whole effective batch with the features as leaves, so the per-sample state, τ and every
loss parameter are updated exactly as for one big batch, and (3) re-encodes each micro-batch with a graph,
replaying the RNG state of its first pass (dropout agrees), and back-propagates its cached feature
gradients. DDP synchronises only on the last micro-batch (`no_sync`); the loss parameters' cached
gradients join that last backward, so DDP averages them too.

For towers without batch-dependent layers (LayerNorm, or BatchNorm in eval/frozen mode) this equals a batch
of K·b. BatchNorm in train mode normalises each micro-batch with its own statistics, and the running
statistics are updated twice per micro-batch (both passes), as in every gradient-cache implementation.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
from torch import Tensor

from engine.checkpoint import capture_rng_state, restore_rng_state
from engine.runtime import autocast
from models.gcl.base import LossOutput


def _inner(task: torch.nn.Module) -> torch.nn.Module:
    """The ContrastiveTask inside a DDP wrapper (or the task itself)."""
    return getattr(task, "module", task)


def cached_forward(task: torch.nn.Module, images: Tensor, tokens: dict[str, Tensor], ids: Tensor, chunks: int,
                   device: torch.device, amp_dtype: torch.dtype | None) -> tuple[LossOutput, Callable[[Tensor], None]]:
    """Phases 1-2: the loss of the whole batch from graph-free features; returns it and `backward(scaled_loss)`,
    which runs phase 3 (call it at most once, after the loss was checked finite)."""
    inner = _inner(task)
    if getattr(inner.loss_fn, "w_simcse", 0.0) > 0:
        raise ValueError("--accum_freq does not support --w_simcse (its second text forward is not cached)")
    parts = [(im, {k: v[rows] for k, v in tokens.items()})
             for rows, im in zip(torch.arange(images.shape[0], device=images.device).chunk(chunks),
                                 images.chunk(chunks))]
    states, image_features, text_features = [], [], []
    for im, tok in parts:
        states.append(capture_rng_state())
        with torch.no_grad(), autocast(device, amp_dtype):
            e, z = inner.model(im, tok)
        image_features.append(e)
        text_features.append(z)
    leaves = [torch.cat(f).requires_grad_() for f in (image_features, text_features)]
    with autocast(device, amp_dtype):
        out = inner.loss_fn(*leaves, ids)
    after = capture_rng_state()
    loss_params = [p for p in inner.loss_fn.parameters() if p.requires_grad]

    def backward(scaled_loss: Tensor) -> None:
        grads = torch.autograd.grad(scaled_loss, [*leaves, *loss_params], allow_unused=True)
        # None: a uni-directional objective's teacher tower gets no gradient (as without accumulation, so the
        # optimiser skips its parameters rather than decaying them)
        grad_img, grad_txt = (g.chunk(chunks) if g is not None else [None] * chunks for g in grads[:2])
        param_grads = [(p, g) for p, g in zip(loss_params, grads[2:]) if g is not None]
        for k, (im, tok) in enumerate(parts):
            last = k == len(parts) - 1
            restore_rng_state(states[k])
            sync = contextlib.nullcontext() if last or not hasattr(task, "no_sync") else task.no_sync()
            with sync:
                with autocast(device, amp_dtype):
                    surrogate = task(im, tok, None, feature_grads=(grad_img[k], grad_txt[k],
                                                                   param_grads if last else []))
                surrogate.backward()
        restore_rng_state(after)

    return out, backward
