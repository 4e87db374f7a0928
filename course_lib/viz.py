"""Figures the chapters share: contour plots with optimizer paths, loss curves.

Every function returns a ``matplotlib.figure.Figure`` built without pyplot, so widget
redraws do not pile up open figures; show one with ``display(figure)``.
"""

from __future__ import annotations

import numpy as np
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

from course_lib.landscapes import Landscape
from course_lib.trajectory import Trajectory

__all__ = [
    "confusion_matrix_figure",
    "draw_landscape",
    "draw_path",
    "draw_loss_curve",
    "paths_figure",
    "paths_grid_figure",
    "loss_curves_figure",
]

COLORS = (
    "tab:red",
    "tab:blue",
    "tab:green",
    "tab:orange",
    "tab:purple",
    "tab:brown",
    "tab:pink",
    "tab:olive",
    "tab:cyan",
    "black",
)


def draw_landscape(axes, landscape: Landscape, resolution: int = 160) -> None:
    """Filled contours of ``landscape`` on ``axes``, with its minima marked."""
    X, Y, Z = landscape.grid(resolution)
    if landscape.log_scale:
        shifted = Z - Z.min() + 1e-3
        levels = np.logspace(np.log10(shifted.min()), np.log10(shifted.max()), 25)
        axes.contourf(X, Y, shifted, levels=levels, norm=LogNorm(), cmap="viridis", alpha=0.85)
    else:
        axes.contourf(X, Y, Z, levels=25, cmap="viridis", alpha=0.85)
    minima = np.array(landscape.minima)
    axes.plot(
        minima[:, 0],
        minima[:, 1],
        "*",
        color="white",
        markersize=12,
        markeredgecolor="black",
        label="minimum",
    )
    axes.set(xlim=landscape.x_range, ylim=landscape.y_range, xlabel="x", ylabel="y")
    axes.set_aspect("equal")  # so that gradients cross the contours at right angles, as they do


def draw_path(axes, trajectory: Trajectory, label: str, color: str) -> None:
    """An optimizer's path: dots for steps, clipped to the plot window."""
    points = trajectory.points
    axes.plot(
        points[:, 0], points[:, 1], "o-", color=color, markersize=2.5, linewidth=1.2, label=label
    )
    axes.plot(points[0, 0], points[0, 1], "s", color=color, markersize=6, markeredgecolor="black")


def paths_figure(
    landscape: Landscape, trajectories: dict[str, Trajectory], title: str | None = None
) -> Figure:
    """Contour plot with each optimizer's path (left) and its loss per step (right)."""
    figure = Figure(figsize=(10, 4), layout="constrained")
    surface, curves = figure.subplots(1, 2, width_ratios=(1.15, 1))
    draw_landscape(surface, landscape)
    for (label, trajectory), color in zip(trajectories.items(), COLORS, strict=False):
        draw_path(surface, trajectory, label, color)
        draw_loss_curve(curves, trajectory, label, color, landscape.min_value)
    surface.set_title(title or f"{landscape.name}: f = {landscape.formula}", fontsize=10)
    surface.legend(loc="upper right", fontsize=7)
    curves.set(
        xlabel="step",
        ylabel="f − f(minimum)  (log scale)",
        yscale="log",
        title="Distance to the minimum value",
    )
    curves.grid(True, which="both", alpha=0.3)
    curves.legend(fontsize=7)
    return figure


def draw_loss_curve(
    axes, trajectory: Trajectory, label: str, color: str, floor: float = 0.0
) -> None:
    gap = np.maximum(trajectory.losses - floor, 1e-16)
    axes.plot(
        np.arange(len(gap)),
        gap,
        color=color,
        label=label + (" (diverged)" if trajectory.diverged else ""),
    )


def loss_curves_figure(
    curves: dict[str, list[float]],
    *,
    xlabel: str,
    ylabel: str,
    title: str,
    target: float | None = None,
) -> Figure:
    """One line per named curve, log-scaled y; an optional dashed target line."""
    figure = Figure(figsize=(7, 4), layout="constrained")
    axes = figure.subplots()
    for (label, values), color in zip(curves.items(), COLORS, strict=False):
        axes.plot(np.arange(1, len(values) + 1), values, color=color, label=label)
    if target is not None:
        axes.axhline(target, color="0.3", linestyle="--", linewidth=1, label=f"target {target:g}")
    axes.set(xlabel=xlabel, ylabel=ylabel, title=title, yscale="log")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8, ncol=2)
    return figure


def paths_grid_figure(landscape: Landscape, trajectories: dict[str, Trajectory]) -> Figure:
    """One contour panel per trajectory, side by side, titled with its label and outcome."""
    figure = Figure(figsize=(3.6 * len(trajectories), 3.4), layout="constrained")
    panels = np.atleast_1d(figure.subplots(1, len(trajectories)))
    for axes, (label, trajectory), color in zip(panels, trajectories.items(), COLORS, strict=False):
        draw_landscape(axes, landscape)
        draw_path(axes, trajectory, label, color)
        if trajectory.diverged:
            outcome = "diverged"
        else:
            outcome = f"f = {trajectory.final_loss - landscape.min_value:.2g} after {len(trajectory.losses) - 1} steps"
        axes.set_title(f"{label}\n{outcome}", fontsize=9)
    return figure


def confusion_matrix_figure(
    matrix, class_names=None, title: str = "Confusion matrix (test set)"
) -> Figure:
    """A heat map of ``matrix[true, predicted]`` with the counts written in each cell."""
    matrix = np.asarray(matrix)
    names = list(class_names) if class_names is not None else [str(i) for i in range(len(matrix))]
    figure = Figure(figsize=(5.5, 4.8), layout="constrained")
    axes = figure.subplots()
    image = axes.imshow(matrix, cmap="Blues")
    figure.colorbar(image, ax=axes, label="examples")
    axes.set(
        xticks=range(len(names)),
        yticks=range(len(names)),
        xticklabels=names,
        yticklabels=names,
        xlabel="predicted class",
        ylabel="true class",
        title=title,
    )
    threshold = matrix.max() / 2
    for row in range(len(matrix)):
        for column in range(len(matrix)):
            if matrix[row, column]:
                axes.text(
                    column,
                    row,
                    int(matrix[row, column]),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if matrix[row, column] > threshold else "black",
                )
    return figure
