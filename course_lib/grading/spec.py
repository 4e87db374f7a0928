"""What an exercise is: an id, points, the function a learner writes, and test cases.

A case has two halves, so that no code of the learner's touches the comparison:

- a :class:`Probe` runs next to the learner's code (the notebook's kernel when grading) and
  reports what the learner's function did, as plain data (``course_lib.grading.probing``);
- a *judge* runs in the grader's own process, computes the expected answer and compares.

Most judges compare with a reference answer and also with the answers of known *mistakes*, so
feedback can name the mistake ("bias correction missing: your first step is 10x too small")
instead of only saying "wrong". Feedback escalates: a failed check first shows a *nudge* (where
to look), the next failed check of the same exercise the *hint* (what is wrong and which way to
go). Neither ever contains the solution's code.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from course_lib.grading.probing import Opaque, call


@dataclass(frozen=True)
class Verdict:
    passed: bool
    expected: str = ""
    got: str = ""
    hint: str = ""  # pointed: names the mistake and the way out, never the code
    nudge: str = ""  # shown first: where to look; the exercise's own nudge when empty


@dataclass(frozen=True)
class Probe:
    """``function(learner_object, *arguments)``, run next to the learner's code.

    ``function`` is a top-level function of its module (the grader sends the module's source
    to the kernel) and returns plain data; ``arguments`` are plain data too (numbers, strings,
    lists, dicts, tensors). ``prepare(*arguments)``, a top-level function too, builds what the
    case needs (a trained model, a data set) before the learner's time limit starts.
    """

    function: Callable[..., Any]
    arguments: tuple = ()
    prepare: Callable[..., Any] | None = None  # run first, outside the time limit

    def __post_init__(self):
        for function in (self.function, self.prepare):
            if function is not None and function.__qualname__ != function.__name__:
                raise ValueError(
                    f"a probe must be a top-level function, not {function.__qualname__}"
                )

    @staticmethod
    def key_of(function: Callable[..., Any] | None) -> str:
        """How the grader names a probe function to the kernel: ``"module:function"``."""
        return f"{function.__module__}:{function.__name__}" if function else ""


@dataclass(frozen=True)
class Case:
    """One test: ``judge(probe's report)`` returns a Verdict, in the grader's process."""

    description: str
    probe: Probe
    judge: Callable[[Any], Verdict]


@dataclass(frozen=True)
class Mistake:
    """A likely wrong answer, produced by ``wrong(*inputs)``, and the hint written for it."""

    wrong: Callable[..., Any]
    hint: str
    nudge: str = ""


@dataclass(frozen=True)
class Exercise:
    """An exercise: ``make_case(params)`` builds a Case from parameters (public or hidden).

    ``nudge`` is the first feedback on a failed case that has no nudge of its own; ``praise``
    says what a learner who passes got right, and ``next_step`` one thing to try next.
    """

    id: str
    title: str
    function_name: str
    points: float
    make_case: Callable[[dict], Case]
    public_params: Sequence[dict]
    nudge: str = ""
    praise: str = ""
    next_step: str = ""
    kind: str = (
        ""  # "derive", "debug" or "experiment" (see CONVENTIONS: each chapter has all three)
    )
    minutes: int = 0  # what the exercise takes a learner, about

    def public_cases(self) -> list[Case]:
        return [self.make_case(params) for params in self.public_params]


def describe(value: Any) -> str:
    """A short, readable rendering of a value for feedback (tensors rounded, long ones cut)."""
    if isinstance(value, torch.Tensor):
        flat = value.detach().flatten()
        shown = ", ".join(f"{x:.4g}" for x in flat[:6].tolist())
        more = ", ..." if flat.numel() > 6 else ""
        return f"tensor([{shown}{more}]) of shape {tuple(value.shape)}"
    if isinstance(value, tuple | list):
        return "(" + ", ".join(describe(item) for item in value) + ")"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, Opaque):
        return repr(value)
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def close(got: Any, expected: Any, tolerance: float = 1e-5) -> bool:
    """True when ``got`` matches ``expected``: same structure, numbers within ``tolerance``."""
    if isinstance(expected, torch.Tensor):
        return (
            isinstance(got, torch.Tensor)
            and got.shape == expected.shape
            and torch.allclose(
                got.detach().double(), expected.double(), atol=tolerance, rtol=tolerance
            )
        )
    if isinstance(expected, tuple | list):
        return (
            isinstance(got, tuple | list)
            and len(got) == len(expected)
            and all(close(g, e, tolerance) for g, e in zip(got, expected, strict=True))
        )
    if isinstance(expected, float | int):
        return (
            isinstance(got, float | int | torch.Tensor)
            and (not isinstance(got, torch.Tensor) or got.numel() == 1)
            and abs(float(got) - expected) <= tolerance * (1 + abs(expected))
        )
    return got == expected


def compare_with_reference(
    description: str,
    inputs: tuple,
    reference: Callable[..., Any],
    mistakes: Sequence[Mistake] = (),
    *,
    tolerance: float = 1e-5,
    shape_hint: str = "",
    in_place_hint: str = "",
) -> Case:
    """A case: the learner's function is called on ``inputs``; its answer is compared here.

    The answer is compared with ``reference(*inputs)`` and, when wrong, with each mistake's
    answer, to name the mistake. With ``in_place_hint``, modifying a tensor argument in place
    fails the case with that hint.
    """

    def judge(report: dict) -> Verdict:
        got = report["value"]
        if in_place_hint and report["modified"]:
            return Verdict(
                False, "the inputs left unchanged", "an input modified in place", in_place_hint
            )
        expected = reference(*_copies(inputs))
        if close(got, expected, tolerance):
            return Verdict(True)
        for mistake in mistakes:
            if close(got, _answer_of(mistake, inputs), tolerance):
                return Verdict(
                    False, describe(expected), describe(got), mistake.hint, mistake.nudge
                )
        hint = shape_hint if _shape_differs(got, expected) else ""
        return Verdict(False, describe(expected), describe(got), hint)

    return Case(description, Probe(call, inputs), judge)


def _answer_of(mistake: Mistake, inputs: tuple) -> Any:
    """What the mistake would return; None when the mistaken code would itself fail."""
    try:
        return mistake.wrong(*_copies(inputs))
    except Exception:
        return None


def _copies(inputs: tuple) -> tuple:
    return tuple(x.clone() if isinstance(x, torch.Tensor) else x for x in inputs)


def _shape_differs(got: Any, expected: Any) -> bool:
    if isinstance(expected, torch.Tensor):
        return not isinstance(got, torch.Tensor) or got.shape != expected.shape
    if isinstance(expected, tuple | list):
        return not isinstance(got, tuple | list) or len(got) != len(expected)
    return False
