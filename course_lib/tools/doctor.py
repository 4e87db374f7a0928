"""``course doctor``: is this environment ready for the course, and if not, how to fix it.

Every check returns a :class:`Check` (status, what it saw, how to fix it) instead of
raising, so one broken package never hides the report on the others.

    >>> report = check_environment()
    >>> report.ok            # False when something the course needs is broken
    >>> print(report)        # the table ``course doctor`` prints
"""

from __future__ import annotations

import importlib.metadata as metadata
import os
import platform
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

DISTRIBUTION = "finetune-course"


class Status(str, Enum):
    """A check's verdict, as the report prints it."""

    OK = "ok"
    WARN = "warn"  # works, with a caveat the detail explains
    FAIL = "FAIL"  # the course cannot run until this is fixed

    def __str__(self) -> str:
        return self.value


SETUP_FIX = "run `make venv` in the course folder (or `pip install -r requirements.lock`)"


@dataclass(frozen=True)
class Check:
    """One line of the doctor's report."""

    name: str
    status: Status
    detail: str
    fix: str = ""


@dataclass
class Report:
    """All checks; ``ok`` is False when any check failed (warnings do not count)."""

    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(check.status != Status.FAIL for check in self.checks)

    @property
    def problems(self) -> list[Check]:
        return [check for check in self.checks if check.status != Status.OK]

    def __getitem__(self, name: str) -> Check:
        for check in self.checks:
            if check.name == name:
                return check
        raise KeyError(f"no check named {name!r}; the checks are: {[c.name for c in self.checks]}")

    def __str__(self) -> str:
        width = max(len(check.name) for check in self.checks)
        lines = [
            f"{check.status:>4}  {check.name:<{width}}  {check.detail}" for check in self.checks
        ]
        if self.problems:
            lines += ["", "To fix:"]
            lines += [f"  - {check.name}: {check.fix}" for check in self.problems if check.fix]
        verdict = "ready for the course" if self.ok else "NOT ready: fix the FAIL lines above"
        lines += ["", f"Environment {verdict}."]
        return "\n".join(lines)


def check_environment() -> Report:
    """Run every check and return the report (never raises)."""
    return Report([_run_safely(name, check) for name, check in _CHECKS])


def _run_safely(name: str, check: Callable[[], Check]) -> Check:
    try:
        return check()
    except Exception as exc:  # a check must never crash the doctor
        return Check(
            name, Status.FAIL, f"the check itself failed: {type(exc).__name__}: {exc}", SETUP_FIX
        )


# --- the checks, in the order they are printed ---------------------------------------------


def _python() -> Check:
    version = platform.python_version()
    where = sys.executable
    if sys.version_info < (3, 10):  # noqa: UP036 (a checkout can be run with any python3)
        return Check(
            "python", Status.FAIL, f"{version} at {where}", "the course needs Python 3.10 or newer"
        )
    return Check("python", Status.OK, f"{version} at {where}")


def _torch() -> Check:
    try:
        import torch
    except Exception as exc:
        return Check("torch", Status.FAIL, f"cannot be imported ({_first_line(exc)})", SETUP_FIX)
    return Check("torch", Status.OK, f"{torch.__version__}{_build_note(torch)}")


def _torchvision() -> Check:
    try:
        import torchvision
        from torchvision.ops import nms
    except Exception as exc:
        return Check("torchvision", Status.FAIL, _torchvision_problem(exc), SETUP_FIX)
    import torch

    try:  # the C++ operators load lazily: call one to be sure
        nms(torch.zeros(1, 4), torch.ones(1), 0.5)
    except Exception as exc:
        return Check("torchvision", Status.FAIL, _torchvision_problem(exc), SETUP_FIX)
    return Check("torchvision", Status.OK, torchvision.__version__)


def _torchvision_problem(exc: Exception) -> str:
    message = str(exc)
    if "torchvision::" in message and "does not exist" in message:
        torch_version = _installed_version("torch") or "?"
        vision_version = _installed_version("torchvision") or "?"
        return (
            f"torchvision {vision_version} cannot load its C++ operators: it was built for "
            f"another torch than the installed torch {torch_version}; install the matching "
            "pair from requirements.lock"
        )
    return f"cannot be imported ({_first_line(exc)})"


def _major_version(package: str, title: str, major: int) -> Callable[[], Check]:
    """A check that ``package`` is installed at major version ``major``."""

    def check() -> Check:
        version = _installed_version(package)
        if version is None:
            return Check(package, Status.FAIL, "not installed", SETUP_FIX)
        if Version(version).major != major:
            needed = f"{version}, the course needs {title} {major}"
            return Check(package, Status.FAIL, needed, SETUP_FIX)
        return Check(package, Status.OK, version)

    return check


_jupyterlab = _major_version("jupyterlab", "JupyterLab", 4)
_ipywidgets = _major_version("ipywidgets", "ipywidgets", 8)


def _widgets_render() -> Check:
    """Widgets render in JupyterLab when its frontend extension matches ipywidgets 8."""
    name = "widgets in JupyterLab"
    lab_widgets = _installed_version("jupyterlab_widgets")
    if lab_widgets is None:
        return Check(
            name, Status.FAIL, "the frontend extension jupyterlab_widgets is missing", SETUP_FIX
        )
    if Version(lab_widgets).major != 3:
        return Check(
            name,
            Status.FAIL,
            f"jupyterlab_widgets {lab_widgets} does not match ipywidgets 8 (needs 3.x): "
            "widgets would show 'Error displaying widget'",
            SETUP_FIX,
        )
    extension = _find_labextension("@jupyter-widgets/jupyterlab-manager")
    if extension is None:
        return Check(
            name,
            Status.FAIL,
            "jupyterlab_widgets is installed but its labextension files are not where "
            "JupyterLab looks (share/jupyter/labextensions)",
            "reinstall it: `pip install --force-reinstall --no-deps jupyterlab_widgets`",
        )
    return Check(
        name,
        Status.OK,
        f"yes (jupyterlab_widgets {lab_widgets}, extension in {extension.parent.parent})",
    )


def _kernel() -> Check:
    """The 'python3' kernel JupyterLab starts must be this environment's Python."""
    name = "notebook kernel"
    try:
        from jupyter_client.kernelspec import KernelSpecManager

        argv = KernelSpecManager().get_kernel_spec("python3").argv
    except Exception as exc:
        return Check(name, Status.FAIL, f"no 'python3' kernel ({_first_line(exc)})", SETUP_FIX)
    executable = shutil.which(argv[0]) or argv[0]
    if _same_file(executable, sys.executable):
        return Check(name, Status.OK, f"python3 runs {sys.executable}")
    return Check(
        name,
        Status.WARN,
        f"the 'python3' kernel would start {executable}, not this environment's Python",
        "start JupyterLab with `make lab`, which puts the course's venv first on PATH",
    )


def _device() -> Check:
    import torch

    from course_lib.device import DEVICE_ENV_VAR, pick_device

    try:
        device = pick_device()
    except (ValueError, RuntimeError) as exc:
        return Check("device", Status.FAIL, str(exc), f"unset {DEVICE_ENV_VAR} or set it to cpu")
    override = f" (from {DEVICE_ENV_VAR})" if os.environ.get(DEVICE_ENV_VAR) else ""
    count = torch.get_num_threads()
    plural = "s" if count != 1 else ""
    threads = f"torch uses {count} thread{plural} on {os.cpu_count()} CPU cores"
    return Check("device", Status.OK, f"{device}{override}, {threads}")


def _requirements() -> Check:
    """Every runtime dependency declared by the course is installed, in its range."""
    name = "course dependencies"
    try:
        declared = metadata.requires(DISTRIBUTION) or []
    except metadata.PackageNotFoundError:
        return Check(name, Status.FAIL, "the course package is not installed", "run `make venv`")
    wrong, checked = [], 0
    for line in declared:
        requirement = Requirement(line)
        if requirement.marker and not requirement.marker.evaluate({"extra": ""}):
            continue  # an optional extra (dev tools), or another platform's dependency
        checked += 1
        version = _installed_version(requirement.name)
        if version is None:
            wrong.append(f"{requirement.name} missing")
        elif not requirement.specifier.contains(version, prereleases=True):
            wrong.append(f"{requirement.name} {version} (needs {requirement.specifier})")
    if wrong:
        return Check(name, Status.FAIL, "; ".join(wrong), SETUP_FIX)
    return Check(name, Status.OK, f"all {checked} runtime dependencies installed, in range")


def _offline_data() -> Check:
    """The course's real data set ships inside scikit-learn: no download needed."""
    try:
        from sklearn.datasets import load_digits

        images = load_digits().images
    except Exception as exc:
        return Check(
            "offline data",
            Status.FAIL,
            f"scikit-learn's digits cannot load ({_first_line(exc)})",
            SETUP_FIX,
        )
    return Check("offline data", Status.OK, f"scikit-learn digits: {len(images)} images")


_CHECKS: list[tuple[str, Callable[[], Check]]] = [
    ("python", _python),
    ("torch", _torch),
    ("torchvision", _torchvision),
    ("jupyterlab", _jupyterlab),
    ("ipywidgets", _ipywidgets),
    ("widgets in JupyterLab", _widgets_render),
    ("notebook kernel", _kernel),
    ("device", _device),
    ("course dependencies", _requirements),
    ("offline data", _offline_data),
]


# --- small helpers ------------------------------------------------------------------------


def _installed_version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _build_note(torch_module) -> str:
    cuda = getattr(torch_module.version, "cuda", None)
    return f" (built with CUDA {cuda})" if cuda else " (CPU-only build)"


def _find_labextension(package: str) -> Path | None:
    from jupyter_core.paths import jupyter_path

    for data_dir in jupyter_path("labextensions"):
        manifest = Path(data_dir, package, "package.json")
        if manifest.is_file():
            return manifest
    return None


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
