"""Graded exercises: instant feedback in the notebook, and the batch grader.

In an exercise notebook::

    from course_lib.grading import check
    check("ch1.gd_step", gd_step)

runs the exercise's public tests at once and prints a short report. Hidden tests exist only
in the grader's data, never in a notebook.

The engine is here (``spec``: what an exercise is; ``runner``: running its cases and writing
the report; ``batch``: ``course grade`` over a folder of submissions; ``exercise_index``: which
notebook holds which exercise). The exercises themselves are content, one module per chapter,
in ``course_lib.grading.exercises``.
"""

from __future__ import annotations

from typing import Any

from course_lib.grading.exercise_index import EXERCISES, find_exercise
from course_lib.grading.runner import report, run_exercise

__all__ = ["check", "list_exercises"]


def check(exercise_id: str, learner_object: Any) -> None:
    """Run the public tests of ``exercise_id`` on ``learner_object`` and print the report."""
    exercise = find_exercise(exercise_id)
    result = run_exercise(exercise, learner_object, exercise.public_cases())
    print(report(result, exercise.general_hint))


def list_exercises() -> list[str]:
    """The ids of every exercise in the course."""
    return list(EXERCISES)
