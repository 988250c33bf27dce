"""Device selection shared by merging, evaluation and the agents."""

from __future__ import annotations

import torch

from .errors import AgentInputError


def resolve_device(device: str) -> torch.device:
    """cpu, cuda, cuda:N or auto (CUDA when visible)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise AgentInputError(f"--device {device!r} is not a device; use cpu, cuda or auto") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise AgentInputError("--device cuda was asked for but no CUDA device is visible; use --device cpu or auto")
    if dev.type not in ("cpu", "cuda"):
        raise AgentInputError(f"--device {device!r} is not supported; use cpu, cuda or auto")
    return dev
