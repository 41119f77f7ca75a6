"""Choosing the compute device and thread count."""
from __future__ import annotations

import os

import torch

from facepipe.errors import FacepipeError


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise FacepipeError("--device cuda was asked for but no CUDA GPU is visible to torch; use --device cpu.")
    try:
        return torch.device(name)
    except RuntimeError:
        raise FacepipeError(f"unknown device {name!r}; use cpu, cuda or cuda:N.") from None


def set_threads(n: int = 0) -> int:
    """Use `n` threads (0 = every core this process may run on)."""
    if n <= 0:
        try:
            n = len(os.sched_getaffinity(0))
        except AttributeError:
            n = os.cpu_count() or 1
    torch.set_num_threads(n)
    return n
