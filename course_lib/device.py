"""Choosing where tensors live: the best accelerator present, or what COURSE_DEVICE says."""

from __future__ import annotations

import os

import torch

DEVICE_ENV_VAR = "COURSE_DEVICE"
_KINDS = ("cpu", "cuda", "mps")


def pick_device() -> torch.device:
    """Return the device the course should use: ``cuda`` > ``mps`` > ``cpu``.

    The environment variable ``COURSE_DEVICE`` overrides the choice, for example
    ``COURSE_DEVICE=cpu`` on a machine with a GPU (the tests do this), or
    ``COURSE_DEVICE=cuda:1`` for the second GPU.

    Raises:
        ValueError: ``COURSE_DEVICE`` is not a device name torch understands.
        RuntimeError: ``COURSE_DEVICE`` names a device this machine does not have.
    """
    requested = os.environ.get(DEVICE_ENV_VAR, "").strip()
    if requested:
        return _requested_device(requested)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if _mps_available():
        return torch.device("mps")
    return torch.device("cpu")


def available_devices() -> list[str]:
    """Names of the devices this machine offers, best first (``cpu`` is always last)."""
    names = (
        [f"cuda:{i}" for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    )
    if _mps_available():
        names.append("mps")
    return names + ["cpu"]


def _requested_device(requested: str) -> torch.device:
    try:
        device = torch.device(requested)
    except RuntimeError:
        device = None
    if device is None or device.type not in _KINDS:
        raise ValueError(
            f"{DEVICE_ENV_VAR}={requested!r} is not a device the course knows; "
            f"use one of: cpu, cuda, cuda:N, mps (or unset it to pick automatically)"
        )
    if device.type == "cuda" and not _cuda_index_exists(device):
        raise RuntimeError(
            f"{DEVICE_ENV_VAR}={requested!r}, but torch sees no such CUDA device "
            f"(available: {', '.join(available_devices())}). Unset {DEVICE_ENV_VAR} or set it to cpu."
        )
    if device.type == "mps" and not _mps_available():
        raise RuntimeError(
            f"{DEVICE_ENV_VAR}=mps, but Apple's Metal backend is not available here "
            f"(available: {', '.join(available_devices())}). Unset {DEVICE_ENV_VAR} or set it to cpu."
        )
    return device


def _cuda_index_exists(device: torch.device) -> bool:
    if not torch.cuda.is_available():
        return False
    return (device.index or 0) < torch.cuda.device_count()


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())
