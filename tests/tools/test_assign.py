"""One source: exercises/ is generated from solutions/, and always in sync with it."""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from course_lib.tools.assign import MarkerError, assign, strip_solutions

ROOT = Path(__file__).resolve().parents[2]
EXERCISES = sorted((ROOT / "exercises").glob("*.ipynb"))


def test_region_becomes_a_stub_at_the_marker_indentation():
    source = 'def f(x):\n    """Doc."""\n    # BEGIN SOLUTION\n    y = x + 1\n    return y\n    # END SOLUTION\n\nprint(f)'
    assert strip_solutions(source) == (
        'def f(x):\n    """Doc."""\n    # YOUR CODE HERE\n    raise NotImplementedError\n\nprint(f)'
    )


def test_a_debug_region_hands_out_the_broken_code_uncommented():
    source = (
        "def train(model):\n    # BEGIN SOLUTION\n    model.train()\n    # EXERCISE\n"
        "    # model.eval()\n    #\n    # return model\n    # END SOLUTION\n"
    )
    assert strip_solutions(source) == "def train(model):\n    model.eval()\n\n    return model"


@pytest.mark.parametrize(
    "source, problem",
    [
        ("# BEGIN SOLUTION\nx = 1", "never closed"),
        ("x = 1\n# END SOLUTION", "without a BEGIN"),
        ("# BEGIN SOLUTION\n# BEGIN SOLUTION\n# END SOLUTION", "inside another"),
        ("x = 1\n# EXERCISE\n", "EXERCISE outside"),
        ("# BEGIN SOLUTION\nx = 1\n# EXERCISE\nx = 2\n# END SOLUTION", "every EXERCISE line"),
    ],
)
def test_unbalanced_markers_are_refused_with_the_place(source, problem):
    with pytest.raises(MarkerError, match=problem):
        strip_solutions(source, where="01_x, cell 3")


def test_exercises_are_exactly_what_course_assign_generates():
    stale = [
        str(r.exercise)
        for r in assign(ROOT / "solutions", ROOT / "exercises", write=False)
        if not r.up_to_date
    ]
    assert stale == [], "exercises/ differs from solutions/: run `make assign` (course assign)"


def test_assign_writes_stubs_clears_outputs_and_tags_the_notebook(tmp_path):
    results = assign(ROOT / "solutions", tmp_path)
    assert results and all(not r.up_to_date for r in results)  # written fresh
    for result in results:
        notebook = nbformat.read(result.exercise, as_version=4)
        assert notebook.metadata["course"]["exercise_notebook"] == result.exercise.stem
        text = result.exercise.read_text()
        assert "BEGIN SOLUTION" not in text and "# YOUR CODE HERE" in text
        assert all(not c.get("outputs") for c in notebook.cells if c.cell_type == "code")
    assert all(r.up_to_date for r in assign(ROOT / "solutions", tmp_path, write=False))


def test_a_stale_or_orphan_exercise_is_detected(tmp_path):
    assign(ROOT / "solutions", tmp_path)
    (tmp_path / "99_orphan.ipynb").write_text("{}")
    first = sorted(tmp_path.glob("0*.ipynb"))[0]
    first.write_text(first.read_text().replace("YOUR CODE HERE", "edited by hand"))
    stale = {
        r.exercise.name
        for r in assign(ROOT / "solutions", tmp_path, write=False)
        if not r.up_to_date
    }
    assert stale == {first.name, "99_orphan.ipynb"}


@pytest.mark.parametrize("path", EXERCISES, ids=[p.name for p in EXERCISES])
def test_untouched_exercise_runs_top_to_bottom_and_says_not_attempted(path):
    """Stubs say "not attempted"; a debug exercise's handed-out code runs and fails its checks."""
    from course_lib.grading.exercise_index import NOTEBOOK_EXERCISES

    notebook = nbformat.read(path, as_version=4)
    NotebookClient(
        notebook,
        kernel_name="python3",
        timeout=120,
        resources={"metadata": {"path": str(path.parent)}},
    ).execute()
    printed = "".join(
        out.get("text", "") for cell in notebook.cells for out in cell.get("outputs", [])
    )
    assert not [o for c in notebook.cells for o in c.get("outputs", []) if o.output_type == "error"]
    exercises = NOTEBOOK_EXERCISES[path.stem]
    debug = sum(exercise.kind == "debug" for exercise in exercises)
    checks = sum(cell.source.startswith("check(") for cell in notebook.cells)
    assert checks == len(exercises) >= 2
    assert printed.count("not attempted yet") == checks - debug
    assert printed.count("cases failed") == debug
