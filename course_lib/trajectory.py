"""Run an optimizer on a 2-D landscape and keep its path: the data behind every contour plot."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from course_lib.landscapes import Landscape
from course_lib.optim.conjugate_gradient import ConjugateGradient

__all__ = ["EvaluationCounter", "Trajectory", "optimizer_step", "run_on_landscape"]

CLOSURE_OPTIMIZERS = (ConjugateGradient, torch.optim.LBFGS)


def optimizer_step(optimizer: torch.optim.Optimizer, closure: Callable[[], torch.Tensor]) -> None:
    """One step of any optimizer, given a closure that computes the loss and its gradients.

    Closure-based optimizers (ConjugateGradient, LBFGS) call the closure themselves, as often
    as their line search needs; the others need it called once, before ``step()``.
    """
    if isinstance(optimizer, CLOSURE_OPTIMIZERS):
        optimizer.step(closure)
    else:
        closure()
        optimizer.step()


class EvaluationCounter:
    """Wraps a closure and counts its calls; each call is one function-and-gradient evaluation."""

    def __init__(self, closure: Callable[[], torch.Tensor]) -> None:
        self.closure = closure
        self.count = 0

    def __call__(self) -> torch.Tensor:
        self.count += 1
        return self.closure()


@dataclass(frozen=True)
class Trajectory:
    """Where an optimizer went: ``points`` (steps + 1, 2), ``losses`` (steps + 1,), evaluations."""

    points: np.ndarray
    losses: np.ndarray
    evaluations: int
    diverged: bool

    @property
    def final_point(self) -> np.ndarray:
        return self.points[-1]

    @property
    def final_loss(self) -> float:
        return float(self.losses[-1])

    def steps_to(self, loss: float) -> int | None:
        """The first step at which the loss is <= ``loss``; None if it never gets there."""
        reached = np.nonzero(self.losses <= loss)[0]
        return int(reached[0]) if reached.size else None


def run_on_landscape(
    landscape: Landscape,
    optimizer_class: type[torch.optim.Optimizer],
    *,
    steps: int = 100,
    start: tuple[float, float] | None = None,
    divergence_limit: float = 1e12,
    **hyperparameters,
) -> Trajectory:
    """Minimize ``landscape`` from ``start`` (default: the landscape's) for ``steps`` steps.

    Works for step-by-step optimizers (SGD, Adam, ...) and for closure-based ones
    (ConjugateGradient, LBFGS), where one step is one iteration (``max_iter=1``). Stops
    early, with ``diverged=True``, when the loss leaves ``[-limit, limit]`` or is not finite.
    Computes in float64, so what you see is the method, not rounding.
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    point = torch.tensor(start or landscape.start, dtype=torch.float64, requires_grad=True)
    closure_based = issubclass(optimizer_class, CLOSURE_OPTIMIZERS)
    if closure_based:
        hyperparameters = {"max_iter": 1, **hyperparameters}
    optimizer = optimizer_class([point], **hyperparameters)

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = landscape(point)
        loss.backward()
        return loss

    counter = EvaluationCounter(closure)
    points, losses = [point.detach().clone().numpy()], [float(landscape(point.detach()))]
    diverged = False
    for _ in range(steps):
        optimizer_step(optimizer, counter)
        loss = float(landscape(point.detach()))
        points.append(point.detach().clone().numpy())
        losses.append(loss)
        if not math.isfinite(loss) or abs(loss) > divergence_limit:
            diverged = True
            break
    return Trajectory(np.array(points), np.array(losses), counter.count, diverged)
