"""Widget logic for chapters 1 and 2: gradient descent on a surface, and an optimizer race.

Pure functions return figures and text; ``*_controls()`` return the sliders. The notebooks
only wire the two together (see course_lib.widgets).
"""

from __future__ import annotations

from functools import lru_cache

import ipywidgets as widgets
from matplotlib.figure import Figure

from course_lib.landscapes import LANDSCAPES, Landscape
from course_lib.optim import SGD, Adadelta, Adagrad, Adam, Adamax, AdamW, NAdam, RMSprop
from course_lib.optim.conjugate_gradient import ConjugateGradient
from course_lib.trajectory import Trajectory, run_on_landscape
from course_lib.viz import paths_figure
from course_lib.widgets import Controls

__all__ = [
    "RACERS",
    "landscape_named",
    "gd_run",
    "gd_figure",
    "gd_summary",
    "gd_controls",
    "race",
    "race_figure",
    "race_table",
    "race_controls",
]

# Base learning rates for the race; the lr_scale slider multiplies all of them.
RACERS: dict[str, tuple[type, dict]] = {
    "GD": (SGD, {"lr": 0.01}),
    "momentum": (SGD, {"lr": 0.01, "momentum": 0.9}),
    "Nesterov": (SGD, {"lr": 0.01, "momentum": 0.9, "nesterov": True}),
    "Adagrad": (Adagrad, {"lr": 0.5}),
    "RMSprop": (RMSprop, {"lr": 0.05}),
    "Adadelta": (Adadelta, {"lr": 1.0}),
    "Adam": (Adam, {"lr": 0.1}),
    "AdamW": (AdamW, {"lr": 0.1}),
    "Adamax": (Adamax, {"lr": 0.1}),
    "NAdam": (NAdam, {"lr": 0.1}),
    "conjugate gradient": (ConjugateGradient, {"lr": 1.0}),
}
_STYLE = {"description_width": "100px"}
_LAYOUT = widgets.Layout(width="430px")


def landscape_named(surface: str) -> Landscape:
    if surface not in LANDSCAPES:
        raise ValueError(f"unknown surface {surface!r}; choose one of {list(LANDSCAPES)}")
    return LANDSCAPES[surface]()


# --- chapter 1: one gradient-descent run ----------------------------------------------------


@lru_cache(maxsize=32)  # the figure and the summary of one slider position share one run
def gd_run(surface: str, lr: float, steps: int, start_x: float, start_y: float) -> Trajectory:
    return run_on_landscape(
        landscape_named(surface), SGD, lr=lr, steps=steps, start=(start_x, start_y)
    )


def gd_figure(surface: str, lr: float, steps: int, start_x: float, start_y: float) -> Figure:
    """The gradient-descent path on ``surface`` and its loss per step."""
    landscape = landscape_named(surface)
    return paths_figure(
        landscape, {f"GD, lr = {lr:.3g}": gd_run(surface, lr, steps, start_x, start_y)}
    )


def gd_summary(surface: str, lr: float, steps: int, start_x: float, start_y: float) -> str:
    """One line: where the run ended, or that it diverged."""
    trajectory = gd_run(surface, lr, steps, start_x, start_y)
    if trajectory.diverged:
        return (
            f"Diverged after {len(trajectory.losses) - 1} steps: lr = {lr:.3g} is too large here."
        )
    x, y = trajectory.final_point
    gap = trajectory.final_loss - landscape_named(surface).min_value
    return f"After {steps} steps: (x, y) = ({x:.3f}, {y:.3f}), f − f(min) = {gap:.3g}."


def _surface_dropdown(surface: str) -> widgets.Dropdown:
    return widgets.Dropdown(
        options=list(LANDSCAPES), value=surface, description="surface", style=_STYLE, layout=_LAYOUT
    )


def gd_controls(
    surface: str = "quadratic bowl", lr: float | None = None, steps: int = 50
) -> Controls:
    """Surface, learning rate (log scale), steps and start point for :func:`gd_figure`.

    Choosing another surface moves the start sliders to that surface's start and plot window,
    and the learning rate to one that descends steadily from there (``Landscape.suggested_lr``).
    Observers hear one change, the surface's, once every control agrees with it.
    """
    landscape = landscape_named(surface)
    controls = Controls(
        surface=_surface_dropdown(surface),
        lr=widgets.FloatLogSlider(
            value=lr if lr is not None else landscape.suggested_lr,
            base=10,
            min=-4,
            max=0,
            step=0.05,
            description="learning rate",
            style=_STYLE,
            layout=_LAYOUT,
        ),
        steps=widgets.IntSlider(
            value=steps, min=1, max=300, description="steps", style=_STYLE, layout=_LAYOUT
        ),
        start_x=_start_slider("start x", landscape.x_range, landscape.start[0]),
        start_y=_start_slider("start y", landscape.y_range, landscape.start[1]),
    )
    controls["surface"].observe(lambda change: _follow_surface(controls, change["new"]), "value")
    return controls


def _start_slider(description: str, window: tuple[float, float], start: float):
    low, high = window
    return widgets.FloatSlider(
        value=start,
        min=low,
        max=high,
        step=0.01,
        readout_format=".3f",  # the saddle starts at y = 0.001, which must not read as 0
        description=description,
        style=_STYLE,
        layout=_LAYOUT,
    )


def _follow_surface(controls: Controls, surface: str) -> None:
    """Another surface: its start point, its plot window, a learning rate suited to it."""
    landscape = landscape_named(surface)
    sliders = (("start_x", landscape.x_range, 0), ("start_y", landscape.y_range, 1))
    with controls.muted():  # the redraw for the surface itself comes after, with all in place
        for name, (low, high), axis in sliders:
            slider = controls[name]
            slider.min, slider.max = min(slider.min, low), max(slider.max, high)  # widen first
            slider.value = landscape.start[axis]
            slider.min, slider.max = low, high
        controls["lr"].value = landscape.suggested_lr


# --- chapter 2: the optimizer race -----------------------------------------------------------


@lru_cache(maxsize=32)  # the figure and the table of one setting share one race
def race(
    surface: str, racers: tuple[str, ...], steps: int, lr_scale: float = 1.0
) -> dict[str, Trajectory]:
    """Run each named racer from the surface's start; learning rates times ``lr_scale``."""
    landscape = landscape_named(surface)
    unknown = set(racers) - set(RACERS)
    if unknown:
        raise ValueError(f"unknown racers {sorted(unknown)}; choose from {list(RACERS)}")
    results = {}
    for name in racers:
        optimizer_class, hyperparameters = RACERS[name]
        scaled = {**hyperparameters, "lr": hyperparameters["lr"] * lr_scale}
        results[name] = run_on_landscape(landscape, optimizer_class, steps=steps, **scaled)
    return results


def race_figure(surface: str, racers: tuple[str, ...], steps: int, lr_scale: float = 1.0) -> Figure:
    landscape = landscape_named(surface)
    return paths_figure(landscape, race(surface, racers, steps, lr_scale))


def race_table(surface: str, racers: tuple[str, ...], steps: int, lr_scale: float = 1.0) -> str:
    """A text table: final gap to the minimum value and evaluations used, per racer."""
    floor = landscape_named(surface).min_value
    lines = [f"{'optimizer':<20}{'f − f(min)':>12}{'evaluations':>13}"]
    for name, trajectory in race(surface, racers, steps, lr_scale).items():
        gap = "diverged" if trajectory.diverged else f"{trajectory.final_loss - floor:.3g}"
        lines.append(f"{name:<20}{gap:>12}{trajectory.evaluations:>13}")
    return "\n".join(lines)


def race_controls(
    surface: str = "quadratic bowl",
    racers: tuple[str, ...] = ("GD", "momentum", "Adam", "conjugate gradient"),
    steps: int = 100,
) -> Controls:
    return Controls(
        surface=_surface_dropdown(surface),
        racers=widgets.SelectMultiple(
            options=list(RACERS),
            value=racers,
            rows=6,
            description="optimizers",
            style=_STYLE,
            layout=_LAYOUT,
        ),
        steps=widgets.IntSlider(
            value=steps, min=5, max=400, description="steps", style=_STYLE, layout=_LAYOUT
        ),
        lr_scale=widgets.FloatLogSlider(
            value=1.0,
            base=10,
            min=-1.5,
            max=1,
            step=0.05,
            description="lr × scale",
            style=_STYLE,
            layout=_LAYOUT,
        ),
    )
