"""``course assign``: generate exercises/ from solutions/, the one hand-edited source.

In a code cell of a solution notebook, the learner's part sits between two marker lines::

    def gd_step(w, grad, lr):
        \"\"\"Return w - lr * grad.\"\"\"
        # BEGIN SOLUTION
        return w - lr * grad
        # END SOLUTION

In the exercise, the region becomes ``# YOUR CODE HERE`` and ``raise NotImplementedError``
at the marker's indentation.

A debug exercise hands the learner broken code to fix instead of a stub. Its region has a
second part, after ``# EXERCISE``, written as comments so the solution notebook runs the fixed
code; the exercise gets those lines uncommented::

    def train(model, data):
        # BEGIN SOLUTION
        model.train()
        # EXERCISE
        # model.eval()
        # END SOLUTION

Outputs and execution counts are cleared, and the notebook is tagged with its name so the
grader knows which exercises it holds.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import nbformat

from course_lib.tools.notebooks import strip_volatile_metadata

BEGIN, END = "# BEGIN SOLUTION", "# END SOLUTION"
_MARKER = re.compile(r"^(?P<indent>\s*)# (?P<kind>BEGIN SOLUTION|END SOLUTION|EXERCISE)\s*$")
METADATA_KEY = "course"


class MarkerError(ValueError):
    """Solution markers are unbalanced or nested; the message names the notebook and cell."""


def strip_solutions(source: str, where: str = "cell") -> str:
    """Replace every BEGIN/END SOLUTION region of ``source`` with the exercise's version.

    That is the stub, or, when the region has an ``# EXERCISE`` part, that part uncommented.
    """
    output, indent, given = [], None, None
    for number, line in enumerate(source.splitlines(), start=1):
        marker = _MARKER.match(line)
        kind = marker["kind"] if marker else None
        if kind == "BEGIN SOLUTION":
            if indent is not None:
                raise MarkerError(
                    f"{where}, line {number}: BEGIN SOLUTION inside another solution region"
                )
            indent, given = marker["indent"], None
        elif kind == "EXERCISE":
            if indent is None or given is not None:
                raise MarkerError(f"{where}, line {number}: EXERCISE outside a solution region")
            given = []
        elif kind == "END SOLUTION":
            if indent is None:
                raise MarkerError(f"{where}, line {number}: END SOLUTION without a BEGIN SOLUTION")
            output += _exercise_part(given, indent, where, number)
            indent = None
        elif indent is None:
            output.append(line)
        elif given is not None:
            given.append(line)
    if indent is not None:
        raise MarkerError(f"{where}: BEGIN SOLUTION is never closed by END SOLUTION")
    return "\n".join(output)


def _exercise_part(given: list[str] | None, indent: str, where: str, number: int) -> list[str]:
    """The stub, or the EXERCISE lines with their ``# `` removed (at the marker's indentation)."""
    if given is None:
        return [f"{indent}# YOUR CODE HERE", f"{indent}raise NotImplementedError"]
    lines = []
    for line in given:
        if line.strip() in ("", "#"):
            lines.append("")
        elif line.startswith(f"{indent}# "):
            lines.append(indent + line[len(indent) + 2 :])
        else:
            raise MarkerError(
                f"{where}, before line {number}: every EXERCISE line is a comment ('# ' at the "
                f"marker's indentation), got {line.strip()[:40]!r}"
            )
    return lines


def exercise_notebook(solution: nbformat.NotebookNode, name: str) -> nbformat.NotebookNode:
    """The exercise version of a solution notebook: regions stubbed, outputs cleared, tagged."""
    exercise = nbformat.from_dict(solution)  # a deep copy
    for index, cell in enumerate(exercise.cells):
        if cell.cell_type == "code":
            cell.source = strip_solutions(cell.source, where=f"{name}, cell {index}")
            cell.outputs = []
            cell.execution_count = None
    strip_volatile_metadata(exercise)
    exercise.metadata[METADATA_KEY] = {"exercise_notebook": name}
    return exercise


def _same_content(path: Path, expected: nbformat.NotebookNode) -> bool:
    """Same notebook, ignoring how the JSON is laid out (indentation, key order)."""
    try:
        current = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return current == json.loads(nbformat.writes(expected))


@dataclass(frozen=True)
class Assignment:
    solution: Path
    exercise: Path
    up_to_date: bool


def assign(solutions_dir: Path, exercises_dir: Path, *, write: bool = True) -> list[Assignment]:
    """Generate ``exercises_dir/NN_name.ipynb`` for each ``solutions_dir/NN_name.ipynb``.

    With ``write=False`` nothing is written; the result says which exercises are stale.
    An exercise notebook without a matching solution is stale too (``write`` removes it).
    """
    results = []
    for solution_path in sorted(Path(solutions_dir).glob("[0-9][0-9]_*.ipynb")):
        name = solution_path.stem
        expected = exercise_notebook(nbformat.read(solution_path, as_version=4), name)
        exercise_path = Path(exercises_dir) / solution_path.name
        up_to_date = _same_content(exercise_path, expected)
        if write and not up_to_date:
            exercise_path.parent.mkdir(parents=True, exist_ok=True)
            nbformat.write(expected, exercise_path)
        results.append(Assignment(solution_path, exercise_path, up_to_date))
    solution_names = {result.exercise.name for result in results}
    for orphan in sorted(Path(exercises_dir).glob("*.ipynb")):
        if orphan.name not in solution_names:  # its solution is gone: so must it be
            results.append(Assignment(Path(solutions_dir) / orphan.name, orphan, False))
            if write:
                orphan.unlink()
    return results
