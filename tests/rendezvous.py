"""Rendezvous of test process groups through a file: no TCP port is picked, so parallel runs cannot race for one."""
from __future__ import annotations

import uuid
from pathlib import Path


def file_rendezvous(directory: str | Path) -> str:
    """A fresh `file://` init_method in `directory` (torch.distributed's FileStore; the file must not exist yet)."""
    return f"file://{Path(directory).resolve() / f'rendezvous-{uuid.uuid4().hex}'}"
