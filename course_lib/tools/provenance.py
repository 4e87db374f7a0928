"""What a notebook's stored outputs were computed from, and on what kind of machine.

``course notebooks refresh`` records two things in each notebook's metadata, under
``metadata["course"]``:

* ``provenance``: digests of everything the stored outputs depend on: each code cell
  (source and tags), each ``course_lib`` file the kernel read while the notebook ran (modules,
  data, weights), ``requirements.lock``, and the stored outputs themselves. :func:`staleness`
  recomputes them without a kernel, so a notebook whose code, library or lock changed since
  its refresh, or whose outputs were edited by hand, is caught in seconds on any machine.
* ``machine``: a fingerprint of the numerics the outputs were computed with (CPU flags, the
  vector code path torch picked, library versions and the variables that steer them). The
  nbval plugin compares outputs exactly on a machine with the same fingerprint, and with a
  tolerance everywhere else (see ``course_lib.tools.output_comparison``).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
from collections.abc import Iterable
from importlib import metadata as package_metadata
from pathlib import Path

import nbformat

METADATA_KEY = "course"
REFRESH_HINT = "make notebooks"
# Variables that change which code path (and so which last bits) the numerics take. The thread
# counts are not among them: refresh and tests both set them (notebooks.KERNEL_THREADS).
_NUMERIC_VARIABLES = (
    "ATEN_CPU_CAPABILITY",
    "MKL_CBWR",
    "MKL_ENABLE_INSTRUCTIONS",
    "ONEDNN_MAX_CPU_ISA",
    "DNNL_MAX_CPU_ISA",
    "OPENBLAS_CORETYPE",
    "NPY_DISABLE_CPU_FEATURES",
)
_NUMERIC_PACKAGES = ("torch", "numpy", "scipy", "scikit-learn", "matplotlib", "onnxruntime")
_SHORT = 16  # hex digits kept per digest: 64 bits, ample for telling versions apart


def repository_root() -> Path:
    """The folder that holds ``course_lib/`` and ``requirements.lock``."""
    return Path(__file__).resolve().parents[2]


# --- provenance ----------------------------------------------------------------------------


def record_provenance(
    notebook: nbformat.NotebookNode, library_files: Iterable[Path], root: Path | None = None
) -> None:
    """Store in ``notebook.metadata`` the digests of what its outputs were computed from.

    ``library_files`` are the files under ``course_lib/`` that the kernel read; call this
    after the outputs are final (volatile metadata stripped), just before writing.
    """
    root = root or repository_root()
    files = sorted({_relative(Path(f), root) for f in library_files})
    notebook.metadata.setdefault(METADATA_KEY, {})["provenance"] = {
        "code": code_digests(notebook),
        "outputs": output_digests(notebook),
        "library": {name: file_digest(root / name) for name in files},
        "lock": file_digest(root / "requirements.lock"),
    }


def staleness(notebook: nbformat.NotebookNode, root: Path | None = None) -> list[str]:
    """Why the stored outputs no longer match what they were computed from; [] when fresh.

    Needs no kernel: it compares the digests recorded at refresh with the notebook's code
    cells and outputs, the library files the kernel read, and the lock, as they are now.
    """
    root = root or repository_root()
    recorded = notebook.metadata.get(METADATA_KEY, {}).get("provenance")
    if recorded is None:
        return ["it has no provenance record, so it was not written by the refresh command"]
    code_now = code_digests(notebook)
    reasons = _changed_cells(recorded["code"], code_now, "code")
    if len(recorded["code"]) == len(code_now):
        reasons += _changed_cells(recorded["outputs"], output_digests(notebook), "outputs")
    for name, digest in recorded["library"].items():
        if not (root / name).is_file():
            reasons.append(f"{name}, which it read, no longer exists")
        elif file_digest(root / name) != digest:
            reasons.append(f"{name} changed")
    if file_digest(root / "requirements.lock") != recorded["lock"]:
        reasons.append("requirements.lock changed")
    return reasons


def code_digests(notebook: nbformat.NotebookNode) -> list[str]:
    """A digest of each code cell's source and tags, in order (markdown cells do not count)."""
    return [
        _digest({"source": cell.source, "tags": sorted(cell.metadata.get("tags", []))})
        for _, cell in _code_cells(notebook)
    ]


def output_digests(notebook: nbformat.NotebookNode) -> list[str]:
    """A digest of each code cell's execution count and outputs, in order."""
    return [
        _digest({"count": cell.get("execution_count"), "outputs": cell.outputs})
        for _, cell in _code_cells(notebook)
    ]


def file_digest(path: Path) -> str | None:
    """Short SHA-256 of a file's bytes, or None when there is no such file."""
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()[:_SHORT]
    except FileNotFoundError:
        return None


def source_of_read(path: str | os.PathLike) -> Path:
    """The file a kernel's read stands for: a module's source for its cached bytecode."""
    path = Path(path)
    if path.parent.name == "__pycache__" and path.suffix == ".pyc":
        return path.parent.parent / (path.name.split(".")[0] + ".py")
    return path


# --- machine fingerprint ---------------------------------------------------------------------


def machine_fingerprint() -> dict[str, str]:
    """What decides the last bits of this machine's float results, as readable strings.

    Two machines with the same fingerprint produce byte-identical notebook outputs. Virtual
    machines often report a generic CPU model, so the CPU's feature flags and the vector code
    path torch actually picked count too, as do the variables that steer torch, MKL, oneDNN
    and OpenBLAS, and the versions of the numerical packages.
    """
    import torch  # here, not at module level: the staleness test needs no torch

    fingerprint = {
        "platform": f"{platform.system()} {platform.machine()}",
        "python": f"{sys.version_info.major}.{sys.version_info.minor}",
        "cpu": _cpu_model(),
        "cpu flags": _digest(sorted(_cpu_flags())),
        "torch cpu capability": torch.backends.cpu.get_cpu_capability(),
        "torch build": _digest(torch.__config__.show()),
    }
    for name in _NUMERIC_PACKAGES:
        fingerprint[name] = _installed_version(name)
    for name in _NUMERIC_VARIABLES:
        fingerprint[name] = os.environ.get(name, "")
    return fingerprint


def record_machine(notebook: nbformat.NotebookNode, fingerprint: dict[str, str]) -> None:
    notebook.metadata.setdefault(METADATA_KEY, {})["machine"] = dict(fingerprint)


def machine_differences(stored: dict[str, str] | None, current: dict[str, str]) -> list[str]:
    """How ``current`` differs from the fingerprint stored at refresh ([] when it matches)."""
    if not stored:
        return ["the notebook records no refresh machine"]
    keys = sorted(set(stored) | set(current))
    return [
        f"{key}: {stored.get(key) or '-'} at refresh, {current.get(key) or '-'} here"
        for key in keys
        if stored.get(key) != current.get(key)
    ]


# --- internals ---------------------------------------------------------------------------------


def _code_cells(notebook: nbformat.NotebookNode):
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type == "code":
            yield index, cell


def _digest(value) -> str:
    text = json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:_SHORT]


def _changed_cells(recorded: list[str], now: list[str], what: str) -> list[str]:
    """Cells are named as nbval names them: "Cell N" is the N-th code cell, counted from 0."""
    if len(recorded) != len(now):
        return [f"code cells were added or removed ({len(recorded)} at refresh, {len(now)} now)"]
    changed = [str(i) for i, (old, new) in enumerate(zip(recorded, now, strict=True)) if old != new]
    if not changed:
        return []
    cells = ("Cell " if len(changed) == 1 else "Cells ") + ", ".join(changed)
    if what == "code":
        return [f"the code of {cells} changed"]
    return [f"the stored outputs of {cells} are not the ones the refresh wrote (edited by hand?)"]


def _relative(path: Path, root: Path) -> str:
    return source_of_read(path).resolve().relative_to(root.resolve()).as_posix()


def _cpu_model() -> str:
    for line in _cpuinfo_lines():
        if line.startswith(("model name", "Model", "CPU part")):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _cpu_flags() -> set[str]:
    for line in _cpuinfo_lines():
        if line.startswith(("flags", "Features")):
            return set(line.split(":", 1)[1].split())
    if sys.platform == "darwin":
        return set(_sysctl("machdep.cpu.features").split()) | {_sysctl("machdep.cpu.brand_string")}
    return set()


def _cpuinfo_lines() -> list[str]:
    try:
        return Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []


def _sysctl(name: str) -> str:
    import subprocess

    try:
        done = subprocess.run(["sysctl", "-n", name], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.strip()


def _installed_version(name: str) -> str:
    try:
        return package_metadata.version(name)
    except package_metadata.PackageNotFoundError:
        return "not installed"
