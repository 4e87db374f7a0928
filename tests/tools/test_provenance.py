"""Provenance: what a notebook's stored outputs were computed from, checked without a kernel."""

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from course_lib.tools.provenance import (
    machine_differences,
    machine_fingerprint,
    record_provenance,
    source_of_read,
    staleness,
)


@pytest.fixture
def project(tmp_path):
    """A tiny repository: a library module, a data file, a lock and a refreshed notebook."""
    (tmp_path / "course_lib" / "data").mkdir(parents=True)
    (tmp_path / "course_lib" / "train.py").write_text("EPOCHS = 10\n")
    (tmp_path / "course_lib" / "data" / "digits.json").write_text("[1, 2]\n")
    (tmp_path / "requirements.lock").write_text("torch==2.14.1\n")
    notebook = new_notebook(
        cells=[
            new_markdown_cell("# A chapter"),
            new_code_cell("from course_lib.train import EPOCHS", execution_count=1),
            new_code_cell("print(EPOCHS)", execution_count=2),
        ]
    )
    notebook.cells[2].outputs = [new_output("stream", name="stdout", text="10\n")]
    reads = [
        tmp_path / "course_lib" / "__pycache__" / "train.cpython-311.pyc",
        tmp_path / "course_lib" / "data" / "digits.json",
    ]
    record_provenance(notebook, reads, tmp_path)
    return tmp_path, notebook


def test_a_notebook_just_refreshed_is_fresh(project):
    root, notebook = project
    assert staleness(notebook, root) == []
    assert sorted(notebook.metadata["course"]["provenance"]["library"]) == [
        "course_lib/data/digits.json",
        "course_lib/train.py",
    ]


def test_a_changed_library_constant_names_the_file(project):
    root, notebook = project
    (root / "course_lib" / "train.py").write_text("EPOCHS = 20\n")
    assert staleness(notebook, root) == ["course_lib/train.py changed"]


def test_changed_data_a_removed_file_and_a_new_lock_are_named(project):
    root, notebook = project
    (root / "course_lib" / "data" / "digits.json").write_text("[1, 2, 3]\n")
    (root / "course_lib" / "train.py").unlink()
    (root / "requirements.lock").write_text("torch==2.15.0\n")
    assert staleness(notebook, root) == [
        "course_lib/data/digits.json changed",
        "course_lib/train.py, which it read, no longer exists",
        "requirements.lock changed",
    ]


def test_edited_code_names_the_cell_as_nbval_does(project):
    root, notebook = project
    notebook.cells[2].source = "print(EPOCHS * 2)"
    assert staleness(notebook, root) == ["the code of Cell 1 changed"]


def test_a_new_tag_counts_as_a_code_change(project):
    root, notebook = project
    notebook.cells[2].metadata["tags"] = ["nbval-ignore-output"]
    assert staleness(notebook, root) == ["the code of Cell 1 changed"]


def test_an_output_edited_by_hand_is_caught(project):
    root, notebook = project
    notebook.cells[2].outputs[0]["text"] = "11\n"
    assert staleness(notebook, root) == [
        "the stored outputs of Cell 1 are not the ones the refresh wrote (edited by hand?)"
    ]


def test_prose_may_change_without_a_refresh_but_added_code_may_not(project):
    root, notebook = project
    notebook.cells.insert(1, new_markdown_cell("More words."))
    assert staleness(notebook, root) == []
    notebook.cells.append(new_code_cell("EPOCHS"))
    assert staleness(notebook, root) == ["code cells were added or removed (2 at refresh, 3 now)"]


def test_a_notebook_never_refreshed_says_so(project):
    root, _ = project
    assert "no provenance record" in staleness(new_notebook(), root)[0]


def test_provenance_survives_writing_and_reading_the_file(project, tmp_path):
    root, notebook = project
    nbformat.write(notebook, tmp_path / "nb.ipynb")
    assert staleness(nbformat.read(tmp_path / "nb.ipynb", as_version=4), root) == []


def test_bytecode_stands_for_its_source(tmp_path):
    pyc = tmp_path / "pkg" / "__pycache__" / "train.cpython-311.pyc"
    assert source_of_read(pyc) == tmp_path / "pkg" / "train.py"
    assert source_of_read(tmp_path / "w.safetensors") == tmp_path / "w.safetensors"


def test_the_fingerprint_sees_torch_code_path_and_its_steering_variables(monkeypatch):
    monkeypatch.delenv("MKL_CBWR", raising=False)
    here = machine_fingerprint()
    assert here["torch cpu capability"] and here["cpu flags"] and here["torch"]
    monkeypatch.setenv("MKL_CBWR", "AVX2")
    elsewhere = machine_fingerprint()
    assert machine_differences(here, elsewhere) == ["MKL_CBWR: - at refresh, AVX2 here"]
    assert machine_differences(here, here) == []
    assert machine_differences(None, here) == ["the notebook records no refresh machine"]
