"""Chapter 0's first widget: gradient descent on a parabola, a preview of chapter 1.

The loss is ``f(w) = (w - 3)^2``, with its minimum at ``w* = 3`` and gradient
``f'(w) = 2 (w - 3)``. One gradient-descent step is

    w_{t+1} = w_t - lr * f'(w_t)

so the offset from the minimum, ``w - 3``, is multiplied by ``(1 - 2 lr)`` at every step, and
the distance ``|w - 3|`` by ``|1 - 2 lr|``: it shrinks for ``0 < lr < 1``, flips sign
(oscillates) for ``0.5 < lr < 1``, and grows (diverges) for ``lr > 1``. The 2 is the curvature
``f''(w)``: on a curve of curvature c the factor is ``1 - lr c``.
"""

from __future__ import annotations

import ipywidgets as widgets
import numpy as np
from matplotlib.figure import Figure

from course_lib.widgets import Controls

MINIMUM = 3.0


def parabola_loss(w: np.ndarray | float) -> np.ndarray | float:
    """f(w) = (w - 3)^2."""
    return (np.asarray(w) - MINIMUM) ** 2


def parabola_gradient(w: float) -> float:
    """f'(w) = 2 (w - 3)."""
    return 2.0 * (w - MINIMUM)


def descend_parabola(lr: float, steps: int, start: float) -> np.ndarray:
    """Run ``steps`` gradient-descent steps from ``start``; return all ``steps + 1`` points."""
    if lr <= 0:
        raise ValueError(f"lr must be positive, got {lr}")
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    path = [float(start)]
    for _ in range(steps):
        w = path[-1]
        path.append(w - lr * parabola_gradient(w))
    return np.array(path)


def describe_descent(lr: float) -> str:
    """One sentence on what this learning rate does on the parabola, from ``1 - 2 lr``."""
    factor = 1.0 - 2.0 * lr
    offset = f"lr = {lr:g}: the offset w - 3 is multiplied by {factor:+.2f} at every step"
    if abs(factor) < 1e-12:
        return (
            f"lr = {lr:g}: the offset w - 3 is multiplied by 0, so one step lands on the minimum."
        )
    if abs(abs(factor) - 1.0) < 1e-12:
        return f"{offset}, so the distance never shrinks: w bounces between two points forever."
    if abs(factor) > 1:
        return f"{offset}, so the distance grows by {abs(factor):.2f}x: gradient descent diverges."
    shape = "zig-zagging across the minimum" if factor < 0 else "from one side"
    return (
        f"{offset}, so the distance shrinks by {abs(factor):.2f}x, {shape}: "
        "gradient descent converges."
    )


def descent_figure(lr: float, steps: int, start: float) -> Figure:
    """Two panels: the path on the loss curve, and the loss per step (log scale)."""
    path = descend_parabola(lr, steps, start)
    losses = parabola_loss(path)
    figure = Figure(figsize=(9, 3.4), layout="constrained")
    on_curve, per_step = figure.subplots(1, 2)

    span = max(6.0, float(np.max(np.abs(path[np.isfinite(path)] - MINIMUM))) * 1.1)
    w = np.linspace(MINIMUM - span, MINIMUM + span, 400)
    on_curve.plot(w, parabola_loss(w), color="0.6", label="loss f(w) = (w - 3)²")
    on_curve.plot(path, losses, "o-", color="tab:red", markersize=4, label="gradient-descent path")
    on_curve.plot([start], [parabola_loss(start)], "s", color="black", label="start")
    on_curve.axvline(MINIMUM, color="tab:green", linestyle=":", label="minimum w* = 3")
    on_curve.set(xlabel="parameter w", ylabel="loss f(w)", title=f"Path with lr = {lr:g}")
    on_curve.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)

    # A loss of exactly 0 (lr = 0.5 lands on the minimum) has no place on a log axis: those
    # steps are left out, and the title says so.
    steps_axis = np.arange(len(losses))
    positive = losses > 0
    per_step.semilogy(steps_axis[positive], losses[positive], "o-", markersize=3)
    title = "Loss per step" + ("" if positive.all() else " (0 from then on: not drawn)")
    per_step.set(xlabel="step", ylabel="loss (log scale)", title=title)
    per_step.grid(True, which="both", alpha=0.3)
    return figure


def descent_controls(lr: float = 0.1, steps: int = 10, start: float = -2.0) -> Controls:
    """Sliders for :func:`descent_figure`: learning rate, number of steps, start point."""
    style = {"description_width": "110px"}
    layout = widgets.Layout(width="420px")
    return Controls(
        lr=widgets.FloatSlider(
            value=lr,
            min=0.01,
            max=1.1,
            step=0.01,
            description="learning rate",
            style=style,
            layout=layout,
        ),
        steps=widgets.IntSlider(
            value=steps, min=1, max=40, description="steps", style=style, layout=layout
        ),
        start=widgets.FloatSlider(
            value=start,
            min=-6.0,
            max=12.0,
            step=0.5,
            description="start w₀",
            style=style,
            layout=layout,
        ),
    )
