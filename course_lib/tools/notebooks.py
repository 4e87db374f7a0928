"""Executing the course notebooks and storing their outputs.

Stored outputs are the course's promise that a notebook runs and says what it says. They are
written only here (``course notebooks refresh``, ``make notebooks``), from a clean
top-to-bottom run in a fresh kernel, and only when that run is sound:

* no cell raised, except cells tagged ``raises-exception`` (a bug hunt);
* every code cell ran, except cells tagged ``nbval-skip`` (they need a GPU, the internet or
  a learner's own files, which tests do not have);
* no cell ends with ``;``: under nbval the semicolon does not hide output (nbval #194), so
  stored and tested outputs would disagree. Write ``_ = ...`` or ``plt.show()``.

Volatile metadata (per-cell timings, widget state, the Python patch version) is stripped so a
refresh on another day or machine changes only what the code prints.

Each refreshed notebook records its provenance (``course_lib.tools.provenance``): digests of its code
cells, of the ``course_lib`` files its kernel read, of the lock and of its outputs, and a
fingerprint of the machine. The tests use them to catch a stale or hand-edited notebook without
running it, and to decide whether this machine can reproduce its outputs exactly.

Kernels run with one CPU thread (``KERNEL_THREADS``), when refreshing and under nbval alike
(the nbval plugin sets the same variables). Two reasons: float sums come out in a different
order with a different thread count, so 100 epochs of training end a few tenths of a point
apart and stored outputs would not match; and ``make test`` runs two kernels at once on two
cores, where two threads each made small-tensor training cells 5x slower or more.
"""

from __future__ import annotations

import base64
import hashlib
import os
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

from course_lib.files import write_atomically
from course_lib.tools import provenance

SKIP_TAG = "nbval-skip"
RAISES_TAG = "raises-exception"
IGNORE_OUTPUT_TAG = "nbval-ignore-output"
NOTEBOOK_BUDGET_SECONDS = 60
_VOLATILE_CELL_METADATA = ("execution", "ExecuteTime", "collapsed", "scrolled")
KERNEL_THREADS = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
_LIBRARY = Path(__file__).resolve().parents[1]  # course_lib/
_READS_RECORDER = Path(__file__).resolve().with_name("_kernel_reads.py")
_KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}


class NotebookRefreshError(RuntimeError):
    """A notebook could not be refreshed; nothing was written. The message says why."""


@dataclass(frozen=True)
class RefreshResult:
    path: Path
    seconds: float
    code_cells_run: int

    @property
    def over_budget(self) -> bool:
        return self.seconds > NOTEBOOK_BUDGET_SECONDS


def find_notebooks(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Expand files and folders into a sorted list of ``.ipynb`` files (checkpoints skipped)."""
    found: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found += [p for p in path.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts]
        elif path.suffix == ".ipynb" and path.is_file():
            found.append(path)
        else:
            raise FileNotFoundError(f"{path} is neither a notebook nor a folder of notebooks")
    return sorted(found)


def refresh_notebook(
    path: str | os.PathLike,
    *,
    cell_timeout: int = 120,
    on_cell_done: Callable[[int, int], None] | None = None,
) -> RefreshResult:
    """Execute ``path`` top to bottom in a fresh kernel and store its outputs in place.

    The kernel starts in the notebook's folder. ``on_cell_done(done, total)`` is called
    after each code cell (for a progress bar).

    Raises:
        NotebookRefreshError: a cell raised, timed out or killed the kernel, a code cell
            did not run, or a cell ends with ``;``. The file on disk is left untouched.
    """
    path = Path(path)
    notebook = nbformat.read(path, as_version=4)
    _refuse_trailing_semicolons(notebook, path)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="course-reads-") as folder:
        reads_log = Path(folder) / "reads.txt"
        _execute(notebook, path, cell_timeout, on_cell_done, reads_log)
        library_files = _library_files_read(reads_log)
    seconds = time.perf_counter() - started
    problems = sanity_problems(notebook)
    if problems:
        raise NotebookRefreshError(f"{path}: not written, because:\n  " + "\n  ".join(problems))
    strip_volatile_metadata(notebook)
    # The digests must describe the notebook as it will be read back from disk.
    notebook = nbformat.reads(nbformat.writes(notebook), as_version=4)
    provenance.record_provenance(notebook, library_files)
    provenance.record_machine(notebook, provenance.machine_fingerprint())
    write_atomically(path, nbformat.writes(notebook) + "\n")
    return RefreshResult(path, seconds, len(_cells_to_run(notebook)))


def sanity_problems(notebook: nbformat.NotebookNode) -> list[str]:
    """What makes a stored notebook untrustworthy: unrun cells and unexpected errors.

    Returns one sentence per problem (an empty list means sound). Tests call this on
    every stored notebook too.
    """
    problems = []
    for index, cell in _code_cells(notebook):
        tags = cell.metadata.get("tags", [])
        if SKIP_TAG in tags:
            continue
        if cell.get("execution_count") is None:
            problems.append(f"cell {index} was never executed")
        errors = [out for out in cell.get("outputs", []) if out.get("output_type") == "error"]
        if errors and RAISES_TAG not in tags:
            problems.append(
                f"cell {index} raised {errors[0].get('ename')}: {errors[0].get('evalue')} "
                f"(tag the cell '{RAISES_TAG}' if that is the point of it)"
            )
    return problems


def strip_volatile_metadata(notebook: nbformat.NotebookNode) -> None:
    """Remove what changes from run to run without the code changing."""
    notebook.metadata.pop("widgets", None)  # widget state: model ids are random
    notebook.metadata["kernelspec"] = dict(_KERNELSPEC)
    language_info = notebook.metadata.get("language_info", {})
    language_info.pop("version", None)  # 3.11.7 vs 3.11.9 is not a change to the course
    for cell in notebook.cells:
        for key in _VOLATILE_CELL_METADATA:
            cell.metadata.pop(key, None)


def png_digests(outputs: Iterable[dict]) -> list[str]:
    """SHA-256 of every PNG image in a cell's outputs, in order.

    Stored notebooks carry their PNGs; tests re-derive them by running the notebook and
    compare digests, because nbval itself does not compare images.
    """
    digests = []
    for output in outputs:
        encoded = output.get("data", {}).get("image/png")
        if encoded is not None:
            if isinstance(encoded, list):  # nbformat may split long strings into lines
                encoded = "".join(encoded)
            digests.append(hashlib.sha256(base64.b64decode(encoded)).hexdigest())
    return digests


# --- internals ----------------------------------------------------------------------------


def _code_cells(notebook: nbformat.NotebookNode):
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type == "code" and cell.source.strip():
            yield index, cell


def _first_error_cell(notebook: nbformat.NotebookNode) -> int | str:
    for index, cell in _code_cells(notebook):
        if any(out.get("output_type") == "error" for out in cell.get("outputs", [])):
            return index
    return "?"


def _cells_to_run(notebook: nbformat.NotebookNode) -> list:
    return [
        cell for _, cell in _code_cells(notebook) if SKIP_TAG not in cell.metadata.get("tags", [])
    ]


def _refuse_trailing_semicolons(notebook: nbformat.NotebookNode, path: Path) -> None:
    for index, cell in _code_cells(notebook):
        if IGNORE_OUTPUT_TAG in cell.metadata.get("tags", []):
            continue
        if cell.source.rstrip().endswith(";"):
            raise NotebookRefreshError(
                f"{path}: cell {index} ends with ';', which hides output in JupyterLab but not "
                "under nbval (nbval #194); write `_ = ...` or end the cell with plt.show()"
            )


def _execute(notebook, path: Path, cell_timeout: int, on_cell_done, reads_log: Path) -> None:
    total = len(_cells_to_run(notebook))
    done = 0

    def count_cell(cell, cell_index, execute_reply=None):
        nonlocal done
        done += 1
        if on_cell_done is not None:
            on_cell_done(done, total)

    client = _NbvalFaithfulClient(
        notebook,
        timeout=cell_timeout,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent.resolve())}},
        skip_cells_with_tag=SKIP_TAG,
        record_timing=False,
        store_widget_state=False,
        on_cell_executed=count_cell,
        extra_arguments=[f"--IPKernelApp.exec_files=['{_READS_RECORDER}']"],
    )
    reads = {"COURSE_READS_LOG": str(reads_log), "COURSE_READS_ROOT": str(_LIBRARY)}
    try:
        client.execute(env={**os.environ, **KERNEL_THREADS, **reads})
    except CellTimeoutError as exc:
        raise NotebookRefreshError(
            f"{path}: a cell ran longer than {cell_timeout} s; not written. {_last_line(exc)}"
        ) from None
    except DeadKernelError:
        raise NotebookRefreshError(
            f"{path}: the kernel died (out of memory?); not written"
        ) from None
    except CellExecutionError as exc:
        where = _first_error_cell(notebook)
        raise NotebookRefreshError(
            f"{path}: cell {where} raised {exc.ename}: {exc.evalue}; not written "
            f"(tag the cell '{RAISES_TAG}' if raising is its point)"
        ) from None


def _library_files_read(reads_log: Path) -> set[Path]:
    """The ``course_lib`` files the kernel read (bytecode stands for its module's source)."""
    if not reads_log.exists():
        return set()
    lines = reads_log.read_text(encoding="utf-8").splitlines()
    files = {provenance.source_of_read(line) for line in lines if line}
    return {file for file in files if file.is_file()}


class _NbvalFaithfulClient(NotebookClient):
    """Records outputs exactly as nbval will see them when it tests the notebook.

    nbclient normally diverts what a cell displays inside an ``ipywidgets.Output`` into the
    widget's state; nbval has no widget support and sees those displays as the cell's own
    outputs. With no widget handlers registered, nbclient records them that way too, so
    stored and tested outputs agree (and a figure drawn into a widget is still visible
    when the notebook is read on a web page).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.widget_registry = {}


def _last_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[-1] if lines else ""
