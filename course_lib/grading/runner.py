"""Running an exercise's cases against a learner's object, and reporting the result.

Used in two places:

- ``check()`` in a learner's notebook runs the public cases' probes and judges in the notebook
  (:func:`run_exercise`) and prints :func:`report`;
- the batch grader runs the probes of public and hidden cases in the submission's kernel
  (``probing.grade_in_kernel``), gets their reports back as data, and judges them in its own
  process (:func:`judge_exercise`).

Both paths send the probe's report through the same encoding, so a learner sees in the notebook
exactly the feedback the grader would give.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from course_lib.grading.probing import decode, encode, run_probe
from course_lib.grading.spec import Case, Exercise, Verdict, describe


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
    nudge: str = ""


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
    """Probe and judge ``cases`` here, in this process (what ``check()`` does)."""
    if learner_object is None:
        outcomes = [{"status": "missing"} for _ in cases]
    else:
        outcomes = [probe_here(case, learner_object, time_limit) for case in cases]
    return judge_exercise(exercise, cases, outcomes)


def probe_here(case: Case, learner_object: Any, time_limit: float) -> dict:
    """Run a case's probe in this process; the outcome crosses JSON as it would from a kernel."""
    arguments = decode(json.loads(json.dumps(encode(case.probe.arguments))))
    outcome = run_probe(
        case.probe.function, learner_object, arguments, time_limit, case.probe.prepare
    )
    return json.loads(json.dumps(outcome))


def judge_exercise(exercise: Exercise, cases: list[Case], outcomes: list[dict]) -> ExerciseResult:
    """Judge each case's outcome (plain data); points in proportion to the cases passed."""
    if len(outcomes) != len(cases):
        raise ValueError(f"{len(outcomes)} outcomes for {len(cases)} cases")
    results = [_judge_case(case, outcome) for case, outcome in zip(cases, outcomes, strict=True)]
    head = (exercise.id, exercise.title, exercise.points)
    if results and all(result.status == Status.MISSING for result in results):
        return ExerciseResult(*head, 0.0, Status.MISSING)
    if results and all(result.status == Status.NOT_ATTEMPTED for result in results):
        return ExerciseResult(*head, 0.0, Status.NOT_ATTEMPTED, results)
    passed = sum(result.status == Status.PASSED for result in results)
    earned = round(exercise.points * passed / len(results), 2) if results else 0.0
    status = (
        Status.PASSED if passed == len(results) else (Status.PARTIAL if passed else Status.FAILED)
    )
    return ExerciseResult(*head, earned, status, results)


def _judge_case(case: Case, outcome: dict) -> CaseResult:
    status = outcome.get("status") if isinstance(outcome, dict) else None
    if status == "missing":
        return CaseResult(case.description, Status.MISSING)
    if status == "not attempted":
        return CaseResult(case.description, Status.NOT_ATTEMPTED)
    if status == "timeout":
        return CaseResult(
            case.description,
            Status.TIMEOUT,
            hint=f"your code ran longer than {CASE_TIME_LIMIT_SECONDS:g} s (an endless loop?)",
        )
    if status == "error":
        return CaseResult(
            case.description,
            Status.ERROR,
            got=str(outcome.get("error", ""))[:300],
            hint=str(outcome.get("where", ""))[:300],
        )
    if status != "value":
        return CaseResult(
            case.description, Status.ERROR, got="no answer came back from the notebook"
        )
    verdict = _verdict(case, outcome.get("value"))
    return CaseResult(
        case.description,
        Status.PASSED if verdict.passed else Status.FAILED,
        verdict.expected,
        verdict.got,
        verdict.hint,
        verdict.nudge,
    )


def _verdict(case: Case, encoded: Any) -> Verdict:
    """The judge's verdict; an answer the judge cannot read fails the case, it does not crash."""
    try:
        value = decode(encoded)
    except Exception:
        return Verdict(False, "an answer the checks can read", "something else")
    try:
        return case.judge(value)
    except Exception as exc:  # e.g. a list where the judge expected a dict
        return Verdict(
            False,
            "an answer of the expected kind",
            describe(value)[:200],
            f"the checks could not read your answer ({type(exc).__name__})",
        )


def report(result: ExerciseResult, exercise: Exercise | None = None, attempt: int = 2) -> str:
    """The short text ``check()`` prints; ``attempt`` counts the failed checks of this exercise.

    Feedback escalates. The first failed check shows each failed case with its nudge (where to
    look); later ones show the pointed hint (what is wrong, which way to go). A debug exercise
    starts one step earlier: its first failed check names only the checks that fail (the
    symptoms), the second adds expected and got with the nudges, the third the hints.
    """
    head = f"{result.exercise_id} · {result.title}:"
    if result.status == Status.NOT_ATTEMPTED:
        return f"{head} not attempted yet (the function still raises NotImplementedError)."
    if result.status == Status.MISSING:
        return f"{head} missing (no function of that name was defined)."
    total, passed = len(result.cases), sum(c.status == Status.PASSED for c in result.cases)
    if passed == total:
        return _praise(head, result.cases, exercise)
    level = attempt - 1 if exercise is not None and exercise.kind == "debug" else attempt
    failed = [case for case in result.cases if case.status != Status.PASSED]
    lines = [f"{head} {total - passed} of {total} cases failed."]
    for case in failed:
        lines.append(f"  ✗ {case.description}: {case.status}")
        if level >= 1 or case.status in (Status.ERROR, Status.TIMEOUT):
            lines += _expected_and_got(case)
            label, text = _feedback_for(case, exercise, level)
            if text:
                lines.append(f"      {label + ':':<9} {text}")
    if level < 1 and exercise is not None and exercise.nudge:
        lines.append(f"  nudge: {exercise.nudge}")
    if any(
        _feedback_for(c, exercise, level + 1) != _feedback_for(c, exercise, level) for c in failed
    ):
        lines.append("  (check again after a change: a failed check then says more)")
    return "\n".join(lines)


def _expected_and_got(case: CaseResult) -> list[str]:
    lines = []
    if case.expected:
        lines.append(f"      expected: {case.expected}")
    if case.got:
        lines.append(f"      got:      {case.got}")
    return lines


def _feedback_for(case: CaseResult, exercise: Exercise | None, level: int) -> tuple[str, str]:
    """(label, text) at this level: nothing, then the nudge, then the pointed hint.

    Errors and timeouts always say where. A case without a pointed hint keeps its nudge, and
    says so: it is never relabelled as a hint.
    """
    if case.status in (Status.ERROR, Status.TIMEOUT):
        return "hint", case.hint
    if level < 1:
        return "", ""
    nudge = case.nudge or (exercise.nudge if exercise else "")
    if level == 1 and nudge:
        return "nudge", nudge
    if case.hint:
        return "hint", case.hint
    return ("nudge", nudge) if nudge else ("", "")


def _praise(head: str, cases: list[CaseResult], exercise: Exercise | None) -> str:
    """A pass: what the learner got right, measured results (an experiment's score), what next."""
    text = f"{head} passed ({len(cases)}/{len(cases)} cases)."
    for case in cases:
        if case.got:
            needed = f" (needed: {case.expected})" if case.expected else ""
            text += f"\n  ✓ {case.description}: {case.got}{needed}"
    if exercise and exercise.praise:
        text += f"\n  ✓ {exercise.praise}"
    if exercise and exercise.next_step:
        text += f"\n  Next: {exercise.next_step}"
    return text
