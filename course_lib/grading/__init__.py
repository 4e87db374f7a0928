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

__all__ = ["check", "forget_attempts", "list_exercises"]


_failed_checks: dict[str, int] = {}  # per exercise, in this kernel: feedback escalates with them


def check(exercise_id: str, learner_object: Any) -> None:
    """Run the public tests of ``exercise_id`` on ``learner_object`` and print the report.

    The first failed check of an exercise shows a nudge for each failed case; later ones show
    the pointed hint.
    """
    exercise = find_exercise(exercise_id)
    result = run_exercise(exercise, learner_object, exercise.public_cases())
    attempt = _failed_checks.get(exercise_id, 0) + 1
    print(report(result, exercise, attempt))
    if result.status not in ("passed", "not attempted", "missing"):
        _failed_checks[exercise_id] = attempt


def forget_attempts() -> None:
    """Start every exercise's feedback again at the nudge."""
    _failed_checks.clear()


def list_exercises() -> list[str]:
    """The ids of every exercise in the course."""
    return list(EXERCISES)
