"""Seeding: make a run repeatable, so a printed number means the same thing every time."""

from __future__ import annotations

import os
import random

import numpy as np
import torch

_MAX_SEED = 2**32 - 1  # numpy's legacy seeding accepts 0 .. 2**32 - 1


def seed_everything(seed: int, *, deterministic: bool = True) -> None:
    """Seed Python's ``random``, NumPy and torch (CPU and every GPU) with one integer.

    With ``deterministic=True`` (the default) it also asks torch for deterministic
    algorithms where that is cheap: cuDNN's autotuner is switched off and
    ``torch.use_deterministic_algorithms(True, warn_only=True)`` makes torch warn, not
    fail, when an operation has no deterministic version. On a CPU this costs nothing.

    Two runs with the same seed, code, library versions and thread count give the same
    numbers. Across machines, or with another number of threads, the last digits of
    floating-point sums can still differ.

    Raises:
        TypeError: ``seed`` is not an integer.
        ValueError: ``seed`` is outside ``0 .. 2**32 - 1``.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an integer, got {type(seed).__name__} {seed!r}")
    if not 0 <= seed <= _MAX_SEED:
        raise ValueError(f"seed must be between 0 and 2**32 - 1, got {seed}")
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
    if deterministic:
        _prefer_deterministic_algorithms()


def _prefer_deterministic_algorithms() -> None:
    # cuBLAS needs this set before its first use to be deterministic; harmless elsewhere.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    torch.use_deterministic_algorithms(True, warn_only=True)
