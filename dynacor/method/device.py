"""Device and thread choice."""

from __future__ import annotations

import os

import torch


def pick_device(name: str = "auto") -> torch.device:
    """``auto``: CUDA, then Apple MPS, then CPU. An explicit name is used as given."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for, but no CUDA device is available")
    return torch.device(name)


def set_threads(num_threads: int = 0) -> int:
    """Use ``num_threads`` CPU threads (0: one per available core, at most 8); returns the number."""
    if num_threads <= 0:
        try:
            cores = len(os.sched_getaffinity(0))
        except AttributeError:
            cores = os.cpu_count() or 1
        num_threads = max(1, min(8, cores))
    if torch.get_num_threads() != num_threads:
        torch.set_num_threads(num_threads)
    return num_threads
