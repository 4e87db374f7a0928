"""A pytest plugin for the course's strict nbval runs (registered by the root conftest.py).

nbval stays the runner: it executes every notebook cell and compares its outputs with the
stored ones. This plugin decides *how* they are compared, notebook by notebook:

* **Exactly**, when this machine's fingerprint matches the one the refresh recorded
  (``course_lib.tools.provenance.machine_fingerprint``: CPU flags, torch's vector code path,
  library builds). Text must be equal after ``nbval_sanitize.cfg``, and each PNG byte for
  byte (nbval itself skips images; this plugin compares their SHA-256).
* **With tolerance** everywhere else, because another CPU computes other last bits and
  training makes them visible (``course_lib.tools.output_comparison``): the same kinds of output,
  text equal once numbers are compared with a tolerance, images of the same size and close
  in content. The asserts in the notebooks, which carry their claims, run either way, and
  staleness is caught exactly on every machine by ``tests/test_freshness.py``.

Set ``COURSE_NBVAL_COMPARE=exact`` or ``tolerant`` to force one mode. The plugin also makes
notebooks under test run on the CPU (``COURSE_DEVICE=cpu``) unless the variable is already
set, and runs kernels with one thread, as ``course notebooks refresh`` does.
"""

from __future__ import annotations

import functools
import os
import types
from pathlib import Path

import nbformat
import pytest

from course_lib.tools import output_comparison, provenance
from course_lib.tools.notebooks import KERNEL_THREADS, find_notebooks, png_digests

_MODE_VARIABLE = "COURSE_NBVAL_COMPARE"


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault("COURSE_DEVICE", "cpu")  # kernels inherit it when they start
    os.environ.update(KERNEL_THREADS)  # the thread count the stored outputs were computed with


def pytest_report_header(config: pytest.Config) -> list[str] | None:
    if not getattr(config.option, "nbval", False):
        return None
    notebooks = _notebooks_among(config.args)
    differences = {path: _differences(nbformat.read(path, as_version=4)) for path in notebooks}
    tolerant = [path for path in notebooks if differences[path]]
    if not tolerant:
        return [f"course: {len(notebooks)} notebooks compared exactly (this machine matches)"]
    reasons = sorted({reason for path in tolerant for reason in differences[path]})
    return [
        f"course: {len(tolerant)} of {len(notebooks)} notebooks compared with tolerance, "
        "because this machine differs from the one that refreshed them:",
        *(f"    {reason}" for reason in reasons[:8]),
    ]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if not _is_nbval_cell(item):
            continue
        item.course_differences = _differences(item.parent.nb)  # nbval has read the notebook
        if item.course_differences:
            item.compare_outputs = types.MethodType(_compare_with_tolerance, item)


@pytest.hookimpl(trylast=True)
def pytest_runtest_call(item: pytest.Item) -> None:
    if not (_is_nbval_cell(item) and item.options.get("check")):
        return
    if item.course_differences:
        return  # images were compared, with tolerance, by _compare_with_tolerance
    stored = png_digests(item.cell.get("outputs", []))
    fresh = png_digests(getattr(item, "test_outputs", []))
    if stored != fresh:
        pytest.fail(_stale_image_message(stored, fresh), pytrace=False)


def _compare_with_tolerance(item, test, ref, skip_compare=None) -> bool:
    """Replaces nbval's IPyNbCell.compare_outputs on a machine that cannot match exactly."""
    problems = output_comparison.compare_outputs(ref, test, item.sanitize)
    item.comparison_traceback = [
        "Outputs compared with tolerance, because this machine differs from the refresh "
        "machine (" + "; ".join(item.course_differences[:3]) + "):",
        *(f"  {problem}" for problem in problems),
    ]
    return not problems


def _differences(notebook: nbformat.NotebookNode) -> tuple[str, ...]:
    """Why the notebook's outputs cannot be compared exactly here (() if they can)."""
    mode = os.environ.get(_MODE_VARIABLE, "")
    if mode == "exact":
        return ()
    if mode == "tolerant":
        return (f"{_MODE_VARIABLE}=tolerant",)
    stored = notebook.metadata.get(provenance.METADATA_KEY, {}).get("machine")
    return tuple(provenance.machine_differences(stored, _this_machine()))


@functools.cache
def _this_machine() -> dict[str, str]:
    return provenance.machine_fingerprint()


def _notebooks_among(args: list[str]) -> list[Path]:
    paths = [arg.split("::")[0] for arg in args]
    wanted = [path for path in paths if path.endswith(".ipynb") or Path(path).is_dir()]
    try:
        return find_notebooks(wanted)
    except FileNotFoundError:
        return []


def _is_nbval_cell(item: pytest.Item) -> bool:
    try:
        from nbval.plugin import IPyNbCell
    except ImportError:  # nbval not installed: nothing to check
        return False
    return isinstance(item, IPyNbCell)


def _stale_image_message(stored: list[str], fresh: list[str]) -> str:
    if len(stored) != len(fresh):
        change = f"the cell drew {len(fresh)} image(s), the stored notebook has {len(stored)}"
    else:
        changed = [i for i, (a, b) in enumerate(zip(stored, fresh, strict=True)) if a != b]
        change = "image(s) " + ", ".join(
            f"#{i + 1} (stored sha256 {stored[i][:12]}, now {fresh[i][:12]})" for i in changed
        )
        change += " differ"
    return (
        f"Stale image: {change}. The plot no longer matches the stored output; "
        "re-run `make notebooks` (or `course notebooks refresh PATH`) and commit the result."
    )
