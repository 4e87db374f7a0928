"""2-D test functions for watching optimizers move: known minima, sensible plot bounds.

Every landscape is a torch-differentiable function of a point ``(x, y)``: call it on a
tensor whose last dimension is 2 (any leading shape), or on two tensors ``x, y``.

    >>> bowl = quadratic_bowl(condition_number=10)
    >>> bowl(torch.tensor([1.0, 1.0]))        # tensor(5.5000)
    >>> bowl.gradient(torch.tensor([1.0, 1.0]))
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

__all__ = [
    "Landscape",
    "quadratic_bowl",
    "rosenbrock",
    "beale",
    "himmelblau",
    "saddle",
    "six_hump_camel",
    "LANDSCAPES",
]

Point = tuple[float, float]


@dataclass(frozen=True)
class Landscape:
    """A 2-D loss surface f(x, y) with its minima and a window to plot it in."""

    name: str
    formula: str
    function: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    minima: tuple[Point, ...]
    x_range: tuple[float, float]
    y_range: tuple[float, float]
    start: Point
    log_scale: bool = False  # contour levels on a log scale (for steep valleys)
    # a gradient-descent learning rate that descends steadily from ``start`` without diverging
    suggested_lr: float = 0.05

    def __call__(self, point: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """f at ``point`` (shape ``(..., 2)``), or at ``(point, y)`` given as two tensors."""
        if y is not None:
            return self.function(point, y)
        return self.function(point[..., 0], point[..., 1])

    def gradient(self, point: torch.Tensor) -> torch.Tensor:
        """The gradient of f at ``point`` (shape ``(2,)``), by autograd."""
        point = point.detach().clone().requires_grad_(True)
        self(point).backward()
        return point.grad

    @property
    def min_value(self) -> float:
        """The lowest value of f over its known minima."""
        return min(float(self(torch.tensor(m, dtype=torch.float64))) for m in self.minima)

    def grid(self, resolution: int = 200) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``X, Y, Z`` arrays of shape ``(resolution, resolution)`` for a contour plot."""
        xs = torch.linspace(*self.x_range, resolution, dtype=torch.float64)
        ys = torch.linspace(*self.y_range, resolution, dtype=torch.float64)
        X, Y = torch.meshgrid(xs, ys, indexing="xy")
        return X.numpy(), Y.numpy(), self.function(X, Y).numpy()


def quadratic_bowl(condition_number: float = 10.0, angle_degrees: float = 0.0) -> Landscape:
    r"""f = ½(u² + κ v²), with (u, v) the point rotated by ``angle_degrees``.

    Its Hessian has eigenvalues 1 and κ (the condition number): the larger κ, the narrower
    the valley and the more plain gradient descent zig-zags across it.
    """
    if condition_number < 1:
        raise ValueError(f"condition_number must be >= 1, got {condition_number}")
    kappa = float(condition_number)
    cos, sin = math.cos(math.radians(angle_degrees)), math.sin(math.radians(angle_degrees))

    def bowl(x, y):
        u, v = cos * x + sin * y, -sin * x + cos * y
        return 0.5 * (u**2 + kappa * v**2)

    return Landscape(
        name=f"quadratic bowl (κ = {kappa:g})",
        formula="½(x² + κy²)"
        if angle_degrees == 0
        else f"½(u² + κv²), valley axes turned {angle_degrees:g}°",
        function=bowl,
        minima=((0.0, 0.0),),
        x_range=(-5.0, 5.0),
        y_range=(-3.0, 3.0),
        start=(-4.5, 2.0),
    )


def rosenbrock(a: float = 1.0, b: float = 100.0) -> Landscape:
    """f = (a − x)² + b (y − x²)²: a curved, flat-bottomed valley; minimum at (a, a²)."""
    return Landscape(
        name="Rosenbrock",
        formula="(1 − x)² + 100(y − x²)²",
        function=lambda x, y: (a - x) ** 2 + b * (y - x**2) ** 2,
        minima=((a, a * a),),
        x_range=(-2.0, 2.0),
        y_range=(-1.0, 3.0),
        start=(-1.2, 1.0),
        log_scale=True,
        suggested_lr=0.0015,  # below 2/L at the minimum, where L is about 1000
    )


def beale() -> Landscape:
    """f = (1.5 − x + xy)² + (2.25 − x + xy²)² + (2.625 − x + xy³)²: minimum at (3, 0.5)."""
    return Landscape(
        name="Beale",
        formula="(1.5 − x + xy)² + (2.25 − x + xy²)² + (2.625 − x + xy³)²",
        function=lambda x, y: (
            (1.5 - x + x * y) ** 2 + (2.25 - x + x * y**2) ** 2 + (2.625 - x + x * y**3) ** 2
        ),
        minima=((3.0, 0.5),),
        x_range=(-4.5, 4.5),
        y_range=(-4.5, 4.5),
        start=(1.0, 1.5),
        log_scale=True,
        suggested_lr=0.01,
    )


def himmelblau() -> Landscape:
    """f = (x² + y − 11)² + (x + y² − 7)²: four minima, all with f = 0."""
    return Landscape(
        name="Himmelblau",
        formula="(x² + y − 11)² + (x + y² − 7)²",
        function=lambda x, y: (x**2 + y - 11) ** 2 + (x + y**2 - 7) ** 2,
        minima=(
            (3.0, 2.0),
            (-2.805118, 3.131312),
            (-3.779310, -3.283186),
            (3.584428, -1.848126),
        ),
        x_range=(-5.0, 5.0),
        y_range=(-5.0, 5.0),
        start=(0.0, 0.0),
        log_scale=True,
        suggested_lr=0.01,
    )


def saddle() -> Landscape:
    """f = x² + y⁴/4 − y²/2: a saddle point at (0, 0) between two minima at (0, ±1).

    Started on the line y = 0, gradient descent walks into the saddle and stops there (the
    gradient is zero); a tiny offset in y lets it escape, slowly, because the surface is
    almost flat near the saddle.
    """
    return Landscape(
        name="saddle",
        formula="x² + y⁴/4 − y²/2",
        function=lambda x, y: x**2 + 0.25 * y**4 - 0.5 * y**2,
        minima=((0.0, 1.0), (0.0, -1.0)),
        x_range=(-2.0, 2.0),
        y_range=(-1.6, 1.6),
        start=(1.5, 1e-3),
        suggested_lr=0.1,
    )


def six_hump_camel() -> Landscape:
    """A non-convex function with six minima of different depths (two global).

    f = (4 − 2.1x² + x⁴/3) x² + xy + (4y² − 4) y². Where gradient descent ends depends on
    where it starts: a local minimum is a real outcome here.
    """
    return Landscape(
        name="six-hump camel",
        formula="(4 − 2.1x² + x⁴/3)x² + xy + (4y² − 4)y²",
        function=lambda x, y: (4 - 2.1 * x**2 + x**4 / 3) * x**2 + x * y + (4 * y**2 - 4) * y**2,
        minima=(
            (0.0898, -0.7126),
            (-0.0898, 0.7126),
            (-1.7036, 0.7961),
            (1.7036, -0.7961),
            (-1.6071, -0.5687),
            (1.6071, 0.5687),
        ),
        x_range=(-2.0, 2.0),
        y_range=(-1.1, 1.1),
        start=(-1.5, -0.2),
        suggested_lr=0.02,
    )


LANDSCAPES: dict[str, Callable[[], Landscape]] = {
    "quadratic bowl": quadratic_bowl,
    "Rosenbrock": rosenbrock,
    "Beale": beale,
    "Himmelblau": himmelblau,
    "saddle": saddle,
    "six-hump camel": six_hump_camel,
}
