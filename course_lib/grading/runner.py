"""Running an exercise's cases against a learner's object, and reporting the result.

Used in two places: ``check()`` in a learner's notebook (public cases, printed report), and
the batch grader, which runs public and hidden cases inside the submission's own kernel.
"""

from __future__ import annotations

import contextlib
import json
import signal
import sysconfig
import traceback
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from course_lib.grading.spec import Case, Exercise


class Status(str, Enum):
    """How a test case, or a whole exercise, went. Compares equal to its text ("passed")."""

    PASSED = "passed"
    PARTIAL = "partial"  # an exercise with some of its cases passed
    FAILED = "failed"
    ERROR = "error"  # the learner's code raised
    TIMEOUT = "timeout"
    NOT_ATTEMPTED = "not attempted"  # the function still raises NotImplementedError
    MISSING = "missing"  # no such function in the submission

    def __str__(self) -> str:
        return self.value


CASE_TIME_LIMIT_SECONDS = 10.0  # per test case, in check() and in the grader


@dataclass
class CaseResult:
    description: str
    status: Status
    expected: str = ""
    got: str = ""
    hint: str = ""


@dataclass
class ExerciseResult:
    exercise_id: str
    title: str
    points: float
    earned: float
    status: Status
    cases: list[CaseResult] = field(default_factory=list)


def run_exercise(
    exercise: Exercise,
    learner_object: Any,
    cases: list[Case],
    time_limit: float = CASE_TIME_LIMIT_SECONDS,
) -> ExerciseResult:
    """Run ``cases`` against ``learner_object``; points in proportion to the cases passed."""
    if learner_object is None:
        return ExerciseResult(exercise.id, exercise.title, exercise.points, 0.0, Status.MISSING)
    results = [_run_case(case, learner_object, time_limit) for case in cases]
    if results and all(result.status == Status.NOT_ATTEMPTED for result in results):
        return ExerciseResult(
            exercise.id, exercise.title, exercise.points, 0.0, Status.NOT_ATTEMPTED, results
        )
    passed = sum(result.status == Status.PASSED for result in results)
    earned = round(exercise.points * passed / len(results), 2) if results else 0.0
    status = (
        Status.PASSED if passed == len(results) else (Status.PARTIAL if passed else Status.FAILED)
    )
    return ExerciseResult(exercise.id, exercise.title, exercise.points, earned, status, results)


def _run_case(case: Case, learner_object: Any, time_limit: float) -> CaseResult:
    try:
        with _time_limit(time_limit):
            verdict = case.check(learner_object)
    except NotImplementedError:
        return CaseResult(case.description, Status.NOT_ATTEMPTED)
    except _CaseTimeout:
        return CaseResult(
            case.description,
            Status.TIMEOUT,
            hint=f"your code ran longer than {time_limit:g} s (an endless loop?)",
        )
    except Exception as exc:  # the learner's code raised: report it, do not crash
        return CaseResult(
            case.description, Status.ERROR, got=f"{type(exc).__name__}: {exc}", hint=_where(exc)
        )
    status = Status.PASSED if verdict.passed else Status.FAILED
    return CaseResult(case.description, status, verdict.expected, verdict.got, verdict.hint)


def report(result: ExerciseResult, general_hint: str = "") -> str:
    """The short text ``check()`` prints."""
    head = f"{result.exercise_id} · {result.title}:"
    if result.status == Status.NOT_ATTEMPTED:
        return f"{head} not attempted yet (the function still raises NotImplementedError)."
    if result.status == Status.MISSING:
        return f"{head} missing (no function of that name was defined)."
    total, passed = len(result.cases), sum(c.status == Status.PASSED for c in result.cases)
    if passed == total:
        return f"{head} passed ({passed}/{total} cases)."
    lines = [f"{head} {total - passed} of {total} cases failed."]
    for case in result.cases:
        if case.status == Status.PASSED:
            continue
        lines.append(f"  ✗ {case.description}: {case.status}")
        if case.expected:
            lines.append(f"      expected: {case.expected}")
        if case.got:
            lines.append(f"      got:      {case.got}")
        hint = case.hint or general_hint
        if hint:
            lines.append(f"      hint:     {hint}")
    return "\n".join(lines)


def grade_namespace(
    namespace: dict, exercises: list[Exercise], hidden: dict[str, list[dict]], results_path: str
) -> None:
    """Grader side, run inside a submission's kernel: write every result as JSON to ``results_path``.

    A file, not printed output: it arrives even when the kernel's output stream is busy or lost.
    """
    results = []
    for exercise in exercises:
        cases = exercise.public_cases() + [
            exercise.make_case(p) for p in hidden.get(exercise.id, [])
        ]
        learner_object = namespace.get(exercise.function_name)
        results.append(asdict(run_exercise(exercise, learner_object, cases)))
    Path(results_path).write_text(json.dumps(results), encoding="utf-8")


class _CaseTimeout(Exception):
    pass


@contextlib.contextmanager
def _time_limit(seconds: float):
    """Raise _CaseTimeout after ``seconds`` (POSIX main thread only; elsewhere no limit)."""
    try:
        previous = signal.signal(signal.SIGALRM, _raise_timeout)
    except (ValueError, AttributeError):  # not the main thread, or no SIGALRM (Windows)
        yield
        return
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _raise_timeout(signum, frame):
    raise _CaseTimeout


def _where(exc: BaseException) -> str:
    """Point at the learner's line: the last frame outside installed packages and the stdlib."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if _is_learner_code(f.filename)]
    if not frames:
        return "raised inside a library call made by your code"
    frame = frames[-1]
    where = f"raised at line {frame.lineno} of your code"
    return f"{where}: {frame.line}" if frame.line else where


def _is_learner_code(filename: str) -> bool:
    library_roots = {
        sysconfig.get_paths()[key] for key in ("stdlib", "platstdlib", "purelib", "platlib")
    }
    course_lib_root = str(Path(__file__).resolve().parents[1])
    return (
        not filename.startswith((*library_roots, course_lib_root))
        and "site-packages" not in filename
    )
