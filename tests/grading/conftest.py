"""Fixtures of the grading tests."""

import pytest

from course_lib.grading.exercise_index import find_exercise
from course_lib.grading.runner import report, run_exercise


@pytest.fixture
def feedback():
    """``feedback(exercise_id, function, attempt=2)``: the report check() would print.

    ``attempt=2`` (the default) shows the pointed hints, ``attempt=1`` the first nudges.
    """

    def run(exercise_id, function, attempt=2):
        exercise = find_exercise(exercise_id)
        result = run_exercise(exercise, function, exercise.public_cases())
        return report(result, exercise, attempt)

    return run
