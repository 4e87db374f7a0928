"""A pytest plugin for the course's strict nbval runs (registered by the root conftest.py).

nbval compares text outputs but skips images, so a notebook whose plot changed while its
printed numbers did not would pass with a stale picture. After nbval has run a checked
cell, this plugin compares the SHA-256 of each PNG the cell just produced with the PNGs
stored by ``course notebooks refresh``, and fails the cell when they differ.

It also makes notebooks under test run on the CPU (``COURSE_DEVICE=cpu``) unless the
variable is already set, so stored outputs do not depend on a GPU being present, and runs
kernels with one thread, as ``course notebooks refresh`` does (see ``course_lib.notebooks``).
"""

from __future__ import annotations

import os

import pytest

from course_lib.notebooks import KERNEL_THREADS, png_digests


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault("COURSE_DEVICE", "cpu")  # kernels inherit it when they start
    os.environ.update(KERNEL_THREADS)  # the thread count the stored outputs were computed with


@pytest.hookimpl(trylast=True)
def pytest_runtest_call(item: pytest.Item) -> None:
    if not _is_checked_nbval_cell(item):
        return
    stored = png_digests(item.cell.get("outputs", []))
    fresh = png_digests(getattr(item, "test_outputs", []))
    if stored != fresh:
        pytest.fail(_stale_image_message(stored, fresh), pytrace=False)


def _is_checked_nbval_cell(item: pytest.Item) -> bool:
    try:
        from nbval.plugin import IPyNbCell
    except ImportError:  # nbval not installed: nothing to check
        return False
    return isinstance(item, IPyNbCell) and bool(item.options.get("check"))


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
