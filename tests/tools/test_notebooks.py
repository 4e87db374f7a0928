"""`course notebooks refresh` and the strict-nbval checks, on small notebooks made here."""

import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from course_lib.tools.notebooks import (
    NotebookRefreshError,
    find_notebooks,
    png_digests,
    refresh_notebook,
    sanity_problems,
)
from course_lib.tools.provenance import staleness

SANITIZE = Path(__file__).resolve().parents[2] / "nbval_sanitize.cfg"


def write_notebook(path: Path, *cells) -> Path:
    notebook = new_notebook(cells=list(cells))
    notebook.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nbformat.write(notebook, path)
    return path


def tagged(source: str, *tags: str):
    cell = new_code_cell(source)
    cell.metadata["tags"] = list(tags)
    return cell


SEEDED_PRINT = "import numpy as np\nnp.random.seed(0)\nprint(np.random.rand(2).round(6))"
SEEDED_PLOT = (
    "%matplotlib inline\nimport matplotlib.pyplot as plt\nimport numpy as np\n"
    "np.random.seed(0)\nfig, ax = plt.subplots(figsize=(2, 2))\n_ = ax.plot(np.random.rand(5))\nplt.show()"
)


def run_nbval(path: Path) -> subprocess.CompletedProcess:
    """Strict nbval on one notebook, as `make test` runs it (with the stale-image plugin)."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-p",
            "course_lib.tools.nbval_plugin",
            "--nbval",
            "--nbval-current-env",
            "--nbval-sanitize-with",
            str(SANITIZE),
            str(path),
        ],
        capture_output=True,
        text=True,
        cwd=path.parent,
        timeout=300,
    )


def test_refresh_stores_outputs_and_strips_volatile_metadata(tmp_path):
    path = write_notebook(
        tmp_path / "nb.ipynb",
        new_markdown_cell("# t"),
        new_code_cell(SEEDED_PRINT),
        new_code_cell("x = 1"),
    )
    on_disk = nbformat.read(path, as_version=4)
    on_disk.metadata["widgets"] = {"state": {"random": 1}}
    on_disk.cells[1].metadata["execution"] = {"iopub.status.busy": "2026-01-01"}
    nbformat.write(on_disk, path)
    progress = []

    result = refresh_notebook(path, on_cell_done=lambda done, total: progress.append((done, total)))

    stored = nbformat.read(path, as_version=4)
    assert [c.get("execution_count") for c in stored.cells] == [None, 1, 2]
    assert stored.cells[1].outputs[0]["text"] == "[0.548814 0.715189]\n"
    assert "widgets" not in stored.metadata
    assert "execution" not in stored.cells[1].metadata
    assert "version" not in stored.metadata["language_info"]
    assert progress == [(1, 2), (2, 2)]
    assert result.code_cells_run == 2 and result.seconds > 0
    assert sanity_problems(stored) == []


def test_an_error_is_refused_and_the_file_is_left_untouched(tmp_path):
    path = write_notebook(
        tmp_path / "nb.ipynb", new_code_cell("print('before')"), new_code_cell("1 / 0")
    )
    before = path.read_bytes()
    with pytest.raises(NotebookRefreshError, match="cell 1 raised ZeroDivisionError.*not written"):
        refresh_notebook(path)
    assert path.read_bytes() == before


def test_a_cell_tagged_raises_exception_may_raise_and_skipped_cells_do_not_run(tmp_path):
    path = write_notebook(
        tmp_path / "nb.ipynb",
        tagged("raise ValueError('the bug to hunt')", "raises-exception"),
        tagged(
            "import urllib.request; urllib.request.urlopen('https://example.org')", "nbval-skip"
        ),
        new_code_cell("print('after')"),
    )
    refresh_notebook(path)
    stored = nbformat.read(path, as_version=4)
    assert stored.cells[0].outputs[0]["ename"] == "ValueError"
    assert stored.cells[1].get("execution_count") is None and stored.cells[1].outputs == []
    assert stored.cells[2].outputs[0]["text"] == "after\n"
    assert sanity_problems(stored) == []


def test_sanity_problems_name_unrun_cells_and_unexpected_errors():
    notebook = new_notebook(cells=[new_code_cell("x = 1"), new_code_cell("1/0", execution_count=2)])
    notebook.cells[1].outputs = [
        nbformat.v4.new_output(
            "error", ename="ZeroDivisionError", evalue="division by zero", traceback=[]
        )
    ]
    problems = sanity_problems(notebook)
    assert problems[0] == "cell 0 was never executed"
    assert problems[1].startswith("cell 1 raised ZeroDivisionError: division by zero")


def test_a_trailing_semicolon_is_refused_before_anything_runs(tmp_path):
    path = write_notebook(tmp_path / "nb.ipynb", new_code_cell("x = [1, 2];"))
    with pytest.raises(NotebookRefreshError, match=r"cell 0 ends with ';'.*nbval #194"):
        refresh_notebook(path)


def test_a_cell_that_runs_too_long_is_stopped(tmp_path):
    path = write_notebook(tmp_path / "nb.ipynb", new_code_cell("import time; time.sleep(60)"))
    with pytest.raises(NotebookRefreshError, match="longer than 2 s"):
        refresh_notebook(path, cell_timeout=2)


def test_a_dead_kernel_is_reported(tmp_path):
    path = write_notebook(tmp_path / "nb.ipynb", new_code_cell("import os; os._exit(1)"))
    with pytest.raises(NotebookRefreshError, match="kernel died"):
        refresh_notebook(path)


def test_find_notebooks_expands_folders_and_skips_checkpoints(tmp_path):
    (tmp_path / ".ipynb_checkpoints").mkdir()
    for name in ("b.ipynb", "a.ipynb", ".ipynb_checkpoints/a-checkpoint.ipynb"):
        write_notebook(tmp_path / name)
    assert [p.name for p in find_notebooks([tmp_path])] == ["a.ipynb", "b.ipynb"]
    with pytest.raises(FileNotFoundError, match="neither a notebook nor a folder"):
        find_notebooks([tmp_path / "missing.ipynb"])


def test_png_digests_decode_base64_in_one_string_or_split_in_lines():
    one_pixel = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgYGD4DwABBAEAwS2OUAAAAABJRU5ErkJggg=="
    whole = [{"output_type": "display_data", "data": {"image/png": one_pixel}}]
    split = [
        {
            "output_type": "display_data",
            "data": {"image/png": [one_pixel[:20] + "\n", one_pixel[20:]]},
        }
    ]
    assert png_digests(whole) == png_digests(split)
    assert len(png_digests(whole)[0]) == 64
    assert png_digests([{"output_type": "stream", "text": "hi"}]) == []


def test_a_stale_printed_number_fails_strict_nbval_and_a_refresh_mends_it(tmp_path):
    path = write_notebook(tmp_path / "nb.ipynb", new_code_cell(SEEDED_PRINT))
    refresh_notebook(path)
    assert run_nbval(path).returncode == 0

    path.write_text(path.read_text().replace("np.random.seed(0)", "np.random.seed(1)"))
    stale = run_nbval(path)
    assert stale.returncode != 0
    assert "1 failed" in stale.stdout

    refresh_notebook(path)
    assert run_nbval(path).returncode == 0


def test_a_stale_image_fails_even_when_no_text_changed(tmp_path):
    path = write_notebook(tmp_path / "nb.ipynb", new_code_cell(SEEDED_PLOT))
    refresh_notebook(path)
    fresh = run_nbval(path)
    assert fresh.returncode == 0, fresh.stdout  # rendering is deterministic: same PNG twice

    path.write_text(path.read_text().replace("np.random.seed(0)", "np.random.seed(1)"))
    stale = run_nbval(path)
    assert stale.returncode != 0
    assert "Stale image" in stale.stdout and "make notebooks" in stale.stdout


def test_output_drawn_into_a_widget_is_stored_as_nbval_sees_it(tmp_path):
    """Figures and prints inside ipywidgets.Output must match between refresh and nbval."""
    source = (
        "%matplotlib inline\nimport ipywidgets as widgets\nfrom IPython.display import display\n"
        "from course_lib import descent_controls, descent_figure\n"
        "controls = descent_controls()\nview = widgets.Output()\n"
        "def redraw(change=None):\n    with view:\n        view.clear_output(wait=True)\n"
        "        display(descent_figure(**controls.values()))\n        print('lr', controls['lr'].value)\n"
        "controls.observe(redraw)\nredraw()\ndisplay(widgets.VBox([controls.box, view]))"
    )
    path = write_notebook(tmp_path / "nb.ipynb", new_code_cell(source))
    refresh_notebook(path)
    outputs = json.loads(path.read_text())["cells"][0]["outputs"]
    assert [sorted(o.get("data", {"text": 0})) for o in outputs] == [
        ["image/png", "text/plain"],
        ["text"],
        ["application/vnd.jupyter.widget-view+json", "text/plain"],
    ]
    result = run_nbval(path)
    assert result.returncode == 0, result.stdout


def test_refresh_records_the_library_files_the_kernel_read_and_leaves_no_names_behind(tmp_path):
    path = write_notebook(
        tmp_path / "nb.ipynb",
        new_code_cell("from course_lib import seed_everything\nseed_everything(0)"),
        new_code_cell("print('os' in globals(), '_course_log_reads' in globals())"),
    )
    refresh_notebook(path)
    stored = nbformat.read(path, as_version=4)
    assert stored.cells[1].outputs[0]["text"] == "False False\n"
    library = stored.metadata["course"]["provenance"]["library"]
    assert {"course_lib/__init__.py", "course_lib/reproducibility.py"} <= set(library)
    assert "course_lib/transfer.py" not in library  # not imported, so not a dependency
    assert stored.metadata["course"]["machine"]["torch cpu capability"]
    assert staleness(stored) == []


def pretend_refreshed_elsewhere(path: Path) -> None:
    notebook = nbformat.read(path, as_version=4)
    notebook.metadata["course"]["machine"]["torch cpu capability"] = "ANOTHER CPU"
    nbformat.write(notebook, path)


def test_on_another_machine_numbers_are_compared_with_tolerance_and_words_exactly(tmp_path):
    path = write_notebook(tmp_path / "nb.ipynb", new_code_cell(SEEDED_PRINT))
    refresh_notebook(path)
    path.write_text(path.read_text().replace("[0.548814 0.715189]", "[0.55 0.7]"))
    exact = run_nbval(path)
    assert exact.returncode != 0 and "compared exactly" in exact.stdout

    pretend_refreshed_elsewhere(path)
    tolerant = run_nbval(path)
    assert tolerant.returncode == 0, tolerant.stdout
    assert "1 of 1 notebooks compared with tolerance" in tolerant.stdout
    assert "torch cpu capability: ANOTHER CPU at refresh" in tolerant.stdout

    path.write_text(path.read_text().replace("[0.55 0.7]", "[0.55 7.0]"))
    far = run_nbval(path)
    assert far.returncode != 0
    assert "number #2" in far.stdout and "more than 50% apart" in far.stdout


def test_on_another_machine_images_must_keep_their_size_and_most_of_their_ink(tmp_path):
    path = write_notebook(tmp_path / "nb.ipynb", new_code_cell(SEEDED_PLOT))
    refresh_notebook(path)
    pretend_refreshed_elsewhere(path)
    assert run_nbval(path).returncode == 0

    path.write_text(path.read_text().replace("figsize=(2, 2)", "figsize=(3, 2)"))
    resized = run_nbval(path)
    assert resized.returncode != 0
    assert "the image is" in resized.stdout and "pixels now" in resized.stdout
