"""What an exercise is: an id, points, the function a learner writes, and test cases.

A case calls the learner's object and returns a :class:`Verdict`. Most cases compare with a
reference answer and also with the answers of known *mistakes*, so feedback can name the
mistake ("bias correction missing: your first step is 10x too small") instead of only
saying "wrong".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class Verdict:
    passed: bool
    expected: str = ""
    got: str = ""
    hint: str = ""


@dataclass(frozen=True)
class Case:
    """One test: ``check(learner_object)`` returns a Verdict (it may raise; the runner catches)."""

    description: str
    check: Callable[[Any], Verdict]


@dataclass(frozen=True)
class Mistake:
    """A likely wrong answer, produced by ``wrong(*inputs)``, and the hint written for it."""

    wrong: Callable[..., Any]
    hint: str


@dataclass(frozen=True)
class Exercise:
    """An exercise: ``make_case(params)`` builds a Case from parameters (public or hidden)."""

    id: str
    title: str
    function_name: str
    points: float
    make_case: Callable[[dict], Case]
    public_params: Sequence[dict]
    general_hint: str = ""

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
        return isinstance(got, float | int | torch.Tensor) and abs(
            float(got) - expected
        ) <= tolerance * (1 + abs(expected))
    return got == expected


def compare_with_reference(
    inputs: tuple,
    reference: Callable[..., Any],
    mistakes: Sequence[Mistake] = (),
    *,
    tolerance: float = 1e-5,
    shape_hint: str = "",
) -> Callable[[Callable[..., Any]], Verdict]:
    """A case check: call the learner's function on copies of ``inputs``, compare with ``reference``."""

    def check(function: Callable[..., Any]) -> Verdict:
        expected = reference(*_copies(inputs))
        got = function(*_copies(inputs))
        if close(got, expected, tolerance):
            return Verdict(True)
        for mistake in mistakes:
            if close(got, _answer_of(mistake, inputs), tolerance):
                return Verdict(False, describe(expected), describe(got), mistake.hint)
        hint = shape_hint if _shape_differs(got, expected) else ""
        return Verdict(False, describe(expected), describe(got), hint)

    return check


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
