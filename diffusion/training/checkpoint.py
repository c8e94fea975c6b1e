"""Resumable checkpoints: one file per training folder, replaced atomically."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

CHECKPOINT = "checkpoint.pt"


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write `state` to `path` through a temporary file: a kill mid-write never leaves a torn checkpoint."""
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict[str, Any] | None:
    """The state saved at `path` (tensors on the CPU, no pickled code), or None when there is none."""
    return torch.load(path, map_location="cpu", weights_only=True) if path.exists() else None
