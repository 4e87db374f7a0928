"""What every chapter's exercises promise a learner (issue #18), checked on the real content.

- each chapter has a derive, a debug and an experiment exercise;
- feedback escalates (a nudge, then a hint), a pass says what was right and what to try next;
- no hint or nudge contains a line of the solution's code;
- the exercise notebook says how long it takes, and that time adds up.
"""

import ast
import inspect
import re
from pathlib import Path

import nbformat
import pytest

from course_lib.grading.exercise_index import NOTEBOOK_EXERCISES
from course_lib.tools.assign import BEGIN, END

ROOT = Path(__file__).resolve().parents[2]
KINDS = {"derive", "debug", "experiment"}


def solution_lines(name: str) -> list[str]:
    """Every line of code between the solution markers of a solution notebook, normalised."""
    notebook = nbformat.read(ROOT / "solutions" / f"{name}.ipynb", as_version=4)
    lines, inside = [], False
    for cell in notebook.cells:
        for line in cell.source.splitlines():
            stripped = line.strip()
            if stripped in (BEGIN, END):
                inside = stripped == BEGIN
            elif stripped == "# EXERCISE":
                inside = False  # the broken code handed out is no secret
            elif inside and not stripped.startswith("#"):
                lines.append(" ".join(stripped.split()))
    return lines


def is_code_worth_hiding(line: str) -> bool:
    """A line a learner could paste: long enough, and with an operator or a call in it."""
    return len(line) >= 14 and bool(re.search(r"[()=+*/\[\]-]", line))


def string_constants(module) -> list[str]:
    tree = ast.parse(inspect.getsource(module))
    return [
        " ".join(node.value.split())
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    ]


@pytest.mark.parametrize("name", sorted(NOTEBOOK_EXERCISES))
def test_each_chapter_has_a_derive_a_debug_and_an_experiment_exercise(name):
    kinds = {exercise.kind for exercise in NOTEBOOK_EXERCISES[name]}
    assert kinds >= KINDS, f"{name} lacks {sorted(KINDS - kinds)} exercises"


@pytest.mark.parametrize("name", sorted(NOTEBOOK_EXERCISES))
def test_every_exercise_nudges_praises_and_suggests_a_next_step(name):
    for exercise in NOTEBOOK_EXERCISES[name]:
        missing = [
            field
            for field in ("nudge", "praise", "next_step", "minutes")
            if not getattr(exercise, field)
        ]
        assert not missing, f"{exercise.id} has no {missing}"


@pytest.mark.parametrize("name", sorted(NOTEBOOK_EXERCISES))
def test_no_hint_contains_a_line_of_the_solution(name):
    modules = {inspect.getmodule(e.make_case) for e in NOTEBOOK_EXERCISES[name]}
    texts = [text for module in modules for text in string_constants(module)]
    leaks = [
        (line, text[:80])
        for line in solution_lines(name)
        if is_code_worth_hiding(line)
        for text in texts
        if line in text
    ]
    assert not leaks, f"feedback in {name} gives the solution away: {leaks[:3]}"


@pytest.mark.parametrize("name", sorted(NOTEBOOK_EXERCISES))
def test_the_exercise_notebook_says_how_long_and_it_adds_up(name):
    notebook = nbformat.read(ROOT / "exercises" / f"{name}.ipynb", as_version=4)
    stated = re.search(r"\*\*Time:\*\* about (\d+) minutes", notebook.cells[0].source)
    assert stated, (
        f"exercises/{name}.ipynb: the first cell does not say '**Time:** about N minutes'"
    )
    exercises = NOTEBOOK_EXERCISES[name]
    assert int(stated[1]) == sum(exercise.minutes for exercise in exercises)
    headings = [
        cell.source
        for cell in notebook.cells
        if cell.cell_type == "markdown" and cell.source.startswith("## Exercise")
    ]
    per_exercise = [int(m[1]) for h in headings if (m := re.search(r"about (\d+) minutes", h))]
    assert per_exercise == [exercise.minutes for exercise in exercises]
