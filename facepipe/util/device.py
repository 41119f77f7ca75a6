"""Choosing the compute device and thread count."""
from __future__ import annotations

import os

import torch

from facepipe.util.errors import FacepipeError


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


def amp_dtype(device: torch.device) -> torch.dtype | None:
    """The autocast dtype for training on `device`, or None to stay in fp32.

    CUDA: fp16 (with a GradScaler). CPU: bf16, but only where the CPU has native bf16 instructions
    (AVX512-BF16 or AMX): there oneDNN's bf16 convolutions make a teacher step ~1.9x faster (2.65x with
    channels_last, measured on this project's 2-core development machine); elsewhere bf16 is emulated and slower.
    """
    if device.type == "cuda":
        return torch.float16
    if device.type == "cpu" and os.environ.get("FACEPIPE_CPU_BF16", "1") != "0":
        try:
            if torch.ops.mkldnn._is_mkldnn_bf16_supported() and torch.cpu._is_avx512_bf16_supported():
                return torch.bfloat16
        except (AttributeError, RuntimeError):
            pass
    return None


def channels_last(t):
    """Module or 4-d tensor in NHWC: oneDNN and cuDNN convolutions run faster in it (~1.3x here)."""
    if isinstance(t, torch.nn.Module):
        return t.to(memory_format=torch.channels_last)
    return t.contiguous(memory_format=torch.channels_last) if t.dim() == 4 else t
