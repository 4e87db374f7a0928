"""Invariants of the notebooks as stored in git (no kernel needed).

nbval only compares cells that have an execution count and skips images; these tests
close those gaps: every code cell was executed in one top-to-bottom run, and nothing that
would break the course's conventions was committed.
"""

import ast
import importlib
import re
from pathlib import Path

import nbformat
import pytest

import course_lib
from course_lib.tools.chapters import CHAPTERS
from course_lib.tools.notebooks import IGNORE_OUTPUT_TAG, SKIP_TAG, sanity_problems

ROOT = Path(__file__).resolve().parents[1]
STORED_WITH_OUTPUTS = sorted([*ROOT.glob("notebooks/*.ipynb"), *ROOT.glob("solutions/*.ipynb")])
EXERCISES = sorted(ROOT.glob("exercises/*.ipynb"))
NAME = re.compile(r"^\d\d_[a-z0-9_]+\.ipynb$")


def ids(paths):
    return [str(p.relative_to(ROOT)) for p in paths]


def read(path: Path):
    return nbformat.read(path, as_version=4)


def code_cells(notebook):
    return [c for c in notebook.cells if c.cell_type == "code" and c.source.strip()]


def test_there_are_notebooks_to_check():
    assert (ROOT / "notebooks" / "00_start_here.ipynb") in STORED_WITH_OUTPUTS


@pytest.mark.parametrize("path", STORED_WITH_OUTPUTS, ids=ids(STORED_WITH_OUTPUTS))
class TestStoredWithOutputs:
    def test_every_code_cell_ran_without_unexpected_errors(self, path):
        assert sanity_problems(read(path)) == [], "refresh it: make notebooks"

    def test_cells_ran_once_top_to_bottom_in_a_fresh_kernel(self, path):
        counts = [
            c.execution_count
            for c in code_cells(read(path))
            if SKIP_TAG not in c.metadata.get("tags", [])
        ]
        assert counts == list(range(1, len(counts) + 1)), "refresh it: make notebooks"

    def test_no_volatile_metadata_was_committed(self, path):
        notebook = read(path)
        assert "widgets" not in notebook.metadata
        assert all("execution" not in cell.metadata for cell in notebook.cells)

    def test_no_cell_relies_on_a_trailing_semicolon(self, path):
        for cell in code_cells(read(path)):
            if IGNORE_OUTPUT_TAG not in cell.metadata.get("tags", []):
                assert not cell.source.rstrip().endswith(";"), cell.source

    def test_first_cell_gives_title_goals_time_and_prerequisites(self, path):
        first = read(path).cells[0]
        assert first.cell_type == "markdown" and first.source.startswith("# ")
        for part in ("you will be able to", "Time:", "Prerequisites:"):
            assert part in first.source, f"the first cell should state '{part}'"

    def test_file_name_is_numbered(self, path):
        assert NAME.match(path.name), path.name

    def test_only_public_course_lib_names_are_imported(self, path):
        for module, name in course_lib_imports(read(path)):
            assert not module.split(".")[-1].startswith("_"), f"private module {module}"
            public = getattr(importlib.import_module(module), "__all__", None)
            assert not name.startswith("_") and (public is None or name in public), (
                f"{name} is not a public name of {module}"
            )


def course_lib_imports(notebook):
    for cell in code_cells(notebook):
        python = "\n".join(
            line for line in cell.source.splitlines() if not line.lstrip().startswith(("%", "!"))
        )
        for node in ast.walk(ast.parse(python)):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("course_lib"):
                for alias in node.names:
                    yield node.module, alias.name


def test_chapter_notebooks_are_the_ones_the_chapter_map_lists():
    listed = {chapter.filename for chapter in CHAPTERS}
    present = {path.name for path in ROOT.glob("notebooks/*.ipynb")}
    assert present <= listed, f"add these to course_lib.tools.chapters.CHAPTERS: {present - listed}"


def test_public_names_of_course_lib_all_resolve():
    for name in course_lib.__all__:
        assert getattr(course_lib, name) is not None


def test_exercises_are_stored_without_outputs_or_solutions():
    for path in EXERCISES:
        for cell in code_cells(read(path)):
            assert cell.outputs == [] and cell.execution_count is None, path
            assert "BEGIN SOLUTION" not in cell.source, path


@pytest.mark.parametrize("path", sorted(ROOT.glob("notebooks/*.ipynb")), ids=lambda p: p.name)
def test_a_chapter_with_exercises_points_to_them_at_the_end(path):
    exercises = ROOT / "exercises" / path.name
    if not exercises.exists():
        pytest.skip("no exercise notebook for this chapter")
    closing = "".join(cell.source for cell in read(path).cells[-3:])
    assert f"exercises/{path.name}" in closing, f"end {path.name} with a link to {exercises.name}"
