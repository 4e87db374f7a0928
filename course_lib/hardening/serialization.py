"""Safe loading: weights are data, and a pickle file is a program.

``torch.save`` writes a pickle. Unpickling runs whatever functions the file names, so loading
a checkpoint from someone else with ``torch.load(path, weights_only=False)`` lets the file run
code on your machine. ``weights_only=True`` (the default since torch 2.6) only rebuilds
tensors and plain containers; CVE-2025-32434 showed that before 2.6 even that could be
bypassed, which is why the course pins torch >= 2.6. safetensors goes further: the format
holds a JSON header and raw tensor bytes, nothing to execute.
"""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path

import torch

__all__ = [
    "IntegrityError",
    "save_weights",
    "load_weights",
    "safe_torch_load",
    "write_pickle_payload",
]


class IntegrityError(ValueError):
    """A model file was refused: changed, damaged, wrongly keyed, or not what it claims to be."""


def save_weights(
    state_dict: dict[str, torch.Tensor],
    path: str | os.PathLike,
    metadata: dict[str, str] | None = None,
) -> None:
    """Write tensors as safetensors (no code inside, loads without unpickling)."""
    from safetensors.torch import save_file

    save_file({k: v.detach().contiguous() for k, v in state_dict.items()}, str(path), metadata)


def load_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a safetensors file; anything else raises IntegrityError."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    try:
        return load(Path(path).read_bytes())
    except (SafetensorError, ValueError) as error:
        raise IntegrityError(f"{path} is not a valid safetensors file: {error}") from None


def safe_torch_load(path: str | os.PathLike) -> dict:
    """``torch.load`` with ``weights_only=True`` only: a file that needs code to load is refused."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise IntegrityError(
            f"refused {Path(path).name}: it asks to run code while loading ({_what_it_calls(error)}). "
            "Never load it with weights_only=False unless you trust whoever made it."
        ) from None


def _what_it_calls(error: pickle.UnpicklingError) -> str:
    """The function torch refused to call, from its (long) message: "it calls getattr"."""
    found = re.search(r"Unsupported global: GLOBAL (\S+)", str(error))
    return f"it calls {found.group(1)}" if found else "torch refused it with weights_only=True"


class _TouchOnLoad:
    """Unpickling this object calls ``Path(marker).touch()``: harmless, and visible."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def write_pickle_payload(path: str | os.PathLike, marker: str | os.PathLike) -> None:
    """A checkpoint that looks normal but creates the file ``marker`` when unpickled.

    A stand-in for real malware: it only creates an empty file, so it is safe to run. Use a
    temporary folder for both paths.
    """
    torch.save({"fc.weight": torch.zeros(2, 2), "note": _TouchOnLoad(Path(marker))}, path)
