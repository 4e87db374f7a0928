"""Fixtures of the grading tests."""

import json
from pathlib import Path

import pytest

from course_lib.grading.batch import _probe_payload
from course_lib.grading.exercise_index import find_exercise
from course_lib.grading.probing import grade_in_kernel
from course_lib.grading.runner import judge_exercise, report, run_exercise


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


@pytest.fixture
def grade_as_the_grader(tmp_path, monkeypatch):
    """``grade_as_the_grader(exercise, cases, function)``: graded as the batch grader does.

    The probes run from their modules' source in fresh namespaces, their outcomes cross JSON,
    and the judges decide here (no kernel: the function is passed in directly).
    """

    def grade(exercise, cases, function):
        monkeypatch.chdir(tmp_path)
        payload = _probe_payload([(exercise, cases)], tmp_path)
        grade_in_kernel({exercise.function_name: function}, payload)
        outcomes = json.loads(Path(payload["results_path"]).read_text(encoding="utf-8"))
        return judge_exercise(exercise, cases, outcomes)

    return grade
