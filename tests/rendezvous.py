"""Rendezvous of test process groups through a file: no TCP port is picked, so parallel runs cannot race for one."""
from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch.distributed as dist


def file_rendezvous(directory: str | Path) -> str:
    """A fresh `file://` init_method in `directory` (torch.distributed's FileStore; the file must not exist yet)."""
    return f"file://{Path(directory).resolve() / f'rendezvous-{uuid.uuid4().hex}'}"


@contextmanager
def gloo_group(rank: int, world: int, init_method: str) -> Iterator[None]:
    """This process in a gloo group of `world` ranks for the block (none for a single process), always torn down."""
    if world > 1:
        dist.init_process_group("gloo", init_method=init_method, rank=rank, world_size=world)
    try:
        yield
    finally:
        if world > 1:
            dist.destroy_process_group()
