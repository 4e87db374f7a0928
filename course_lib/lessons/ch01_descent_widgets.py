"""Widget logic for chapters 1 and 2: gradient descent on a surface, and an optimizer race.

Pure functions return figures and text; ``*_controls()`` return the sliders. The notebooks
only wire the two together (see course_lib.widgets).
"""

from __future__ import annotations

import math
from functools import lru_cache

import ipywidgets as widgets
from matplotlib.figure import Figure

from course_lib.landscapes import LANDSCAPES, Landscape
from course_lib.lessons.ch02_optimizer_study import log_grid, turned_bowl
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
    "RACE_LRS",
    "race_landscape",
    "tuned_lr",
    "race_grid",
    "tuned_at_edge",
    "evaluations_to_converge",
    "race",
    "race_figure",
    "race_table",
    "race_controls",
]

# The racers and their settings other than the learning rate, which the race tunes for each
# surface (see ``tuned_lr``). "momentum" and "Nesterov" take the race's beta as ``momentum``.
RACERS: dict[str, tuple[type, dict]] = {
    "GD": (SGD, {}),
    "momentum": (SGD, {}),
    "Nesterov": (SGD, {"nesterov": True}),
    "Adagrad": (Adagrad, {}),
    "RMSprop": (RMSprop, {}),
    "Adadelta": (Adadelta, {}),
    "Adam": (Adam, {}),
    "AdamW": (AdamW, {}),
    "Adamax": (Adamax, {}),
    "NAdam": (NAdam, {}),
    "conjugate gradient": (ConjugateGradient, {}),
}
_MOMENTUM_RACERS = ("momentum", "Nesterov")
# The learning rates tried for each racer: four per factor of ten, 0.001 to 10. A tuned rate
# at either end of its grid is flagged in the table (the best might lie beyond it).
RACE_LRS: tuple[float, ...] = log_grid(1e-3, 10.0, per_decade=4)
# Adadelta's lr multiplies a first step of sqrt(eps) / sqrt(1 - rho) = 0.003 (defaults): its
# grid is 100x higher.
_LR_GRID_SCALE = {"Adadelta": 100.0}
# The table counts evaluations until the racer first gets this close to the minimum value.
CONVERGED_GAP = 1e-6
_STYLE = {"description_width": "100px"}
_LAYOUT = widgets.Layout(width="430px")
_SLIDER = {"style": _STYLE, "layout": _LAYOUT, "continuous_update": False}


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


def race_landscape(surface: str, kappa: float = 10.0, angle: float = 0.0) -> Landscape:
    """The race's surface; for the quadratic bowl, condition number ``kappa`` turned by ``angle``
    degrees, its start point turned with it (:func:`turned_bowl`). Other surfaces ignore both."""
    if surface == "quadratic bowl":
        return turned_bowl(kappa, angle)
    return landscape_named(surface)


def _settings(name: str, beta: float) -> tuple[type, dict]:
    if name not in RACERS:
        raise ValueError(f"unknown racers [{name!r}]; choose from {list(RACERS)}")
    optimizer_class, hyperparameters = RACERS[name]
    if name in _MOMENTUM_RACERS:
        hyperparameters = {**hyperparameters, "momentum": beta}
    return optimizer_class, hyperparameters


def _gap(trajectory: Trajectory, floor: float) -> float:
    return math.inf if trajectory.diverged else trajectory.final_loss - floor


def race_grid(name: str) -> tuple[float, ...]:
    """The learning rates :func:`tuned_lr` tries for racer ``name`` (none for conjugate gradient)."""
    if name == "conjugate gradient":
        return ()
    return tuple(lr * _LR_GRID_SCALE.get(name, 1.0) for lr in RACE_LRS)


@lru_cache(maxsize=256)
def tuned_lr(
    surface: str, name: str, steps: int, kappa: float = 10.0, angle: float = 0.0, beta: float = 0.9
) -> float:
    """The learning rate of ``RACE_LRS`` with the lowest f − f(min) after ``steps`` steps
    (ties go to the smaller; Adadelta's grid is ``RACE_LRS`` times 100).

    Each racer is tuned on the race's own surface, start and number of steps: the race
    compares every optimizer at its best. Conjugate gradient has no learning rate to tune
    (its line search sets each step); it gets 1, the line search's first trial step.
    """
    optimizer_class, hyperparameters = _settings(name, beta)
    if name == "conjugate gradient":
        return 1.0
    landscape = race_landscape(surface, kappa, angle)
    floor = landscape.min_value
    grid = race_grid(name)
    gaps = {
        lr: _gap(
            run_on_landscape(landscape, optimizer_class, steps=steps, lr=lr, **hyperparameters),
            floor,
        )
        for lr in grid
    }
    return min(grid, key=lambda lr: (gaps[lr], lr))


def tuned_at_edge(
    surface: str, name: str, steps: int, kappa: float = 10.0, angle: float = 0.0, beta: float = 0.9
) -> bool:
    """True when :func:`tuned_lr` picked the first or last rate of the racer's grid."""
    grid = race_grid(name)
    if not grid:
        return False
    lr = tuned_lr(surface, name, steps, kappa, angle, beta)
    return lr in (grid[0], grid[-1])


def evaluations_to_converge(
    trajectory: Trajectory, floor: float, rerun=None, gap: float = CONVERGED_GAP
) -> int | None:
    """Function-and-gradient evaluations until ``trajectory`` first gets within ``gap`` of
    ``floor``; None if it never does. A step-by-step optimizer spends one per step. For a
    closure-based one pass ``rerun(steps)``, which reruns it for that many steps and returns
    the new :class:`Trajectory`: its count stops where the run converged, so the one evaluation
    that every later step spends only to see that the gradient is zero is not counted."""
    reached = trajectory.steps_to(floor + gap)
    if reached is None or trajectory.diverged:
        return None
    return reached if rerun is None else rerun(reached).evaluations


@lru_cache(maxsize=32)  # the figure and the table of one setting share one race
def race(
    surface: str,
    racers: tuple[str, ...],
    steps: int,
    lr_scale: float = 1.0,
    kappa: float = 10.0,
    angle: float = 0.0,
    beta: float = 0.9,
) -> dict[str, Trajectory]:
    """Run each named racer from the surface's start at ``lr_scale`` times its tuned lr.

    ``kappa`` and ``angle`` shape the quadratic bowl (see :func:`race_landscape`); ``beta`` is
    the momentum coefficient of "momentum" and "Nesterov".
    """
    unknown = set(racers) - set(RACERS)
    if unknown:
        raise ValueError(f"unknown racers {sorted(unknown)}; choose from {list(RACERS)}")
    landscape = race_landscape(surface, kappa, angle)
    results = {}
    for name in racers:
        optimizer_class, hyperparameters = _settings(name, beta)
        lr = tuned_lr(surface, name, steps, kappa, angle, beta) * lr_scale
        results[name] = run_on_landscape(
            landscape, optimizer_class, steps=steps, lr=lr, **hyperparameters
        )
    return results


def race_figure(
    surface: str,
    racers: tuple[str, ...],
    steps: int,
    lr_scale: float = 1.0,
    kappa: float = 10.0,
    angle: float = 0.0,
    beta: float = 0.9,
) -> Figure:
    """Every racer's path on the surface, and its loss per step."""
    landscape = race_landscape(surface, kappa, angle)
    return paths_figure(landscape, race(surface, racers, steps, lr_scale, kappa, angle, beta))


def race_table(
    surface: str,
    racers: tuple[str, ...],
    steps: int,
    lr_scale: float = 1.0,
    kappa: float = 10.0,
    angle: float = 0.0,
    beta: float = 0.9,
) -> str:
    """A text table per racer: the lr it ran at, final gap to the minimum, and evaluations.

    The lr is "–" for conjugate gradient (its line search sets each step) and carries a "*"
    when the tuned rate sits at an end of the racer's grid. Evaluations are counted until
    the racer first gets within ``CONVERGED_GAP`` of the minimum value ("–": never).
    """
    landscape = race_landscape(surface, kappa, angle)
    floor = landscape.min_value
    lines = [
        f"{'optimizer':<20}{'lr':>10}{'f − f(min)':>12}{f'evaluations to {CONVERGED_GAP:g}':>22}"
    ]
    results = race(surface, racers, steps, lr_scale, kappa, angle, beta)
    edge = False
    for name, trajectory in results.items():
        optimizer_class, hyperparameters = _settings(name, beta)
        if name == "conjugate gradient":
            lr_text = "–"

            def rerun(k, optimizer_class=optimizer_class, hyperparameters=hyperparameters):
                return run_on_landscape(landscape, optimizer_class, steps=k, **hyperparameters)

        else:
            lr = tuned_lr(surface, name, steps, kappa, angle, beta) * lr_scale
            at_edge = tuned_at_edge(surface, name, steps, kappa, angle, beta)
            edge = edge or at_edge
            lr_text = f"{lr:.3g}{'*' if at_edge else ' '}"
            rerun = None
        gap = "diverged" if trajectory.diverged else f"{trajectory.final_loss - floor:.3g}"
        evaluations = evaluations_to_converge(trajectory, floor, rerun)
        count = "–" if evaluations is None else str(evaluations)
        lines.append(f"{name:<20}{lr_text:>10}{gap:>12}{count:>22}")
    if edge:
        lines.append("* tuned rate at an end of its grid: the best may lie beyond it")
    return "\n".join(lines)


def race_controls(
    surface: str = "quadratic bowl",
    racers: tuple[str, ...] = ("GD", "momentum", "Adam", "conjugate gradient"),
    steps: int = 100,
) -> Controls:
    """Surface, racers, steps, lr × tuned, and the bowl's κ and angle and the momentum β.

    Sliders redraw once, on release (``continuous_update=False``). κ and angle shape only the
    quadratic bowl; on other surfaces they are disabled.
    """
    controls = Controls(
        surface=_surface_dropdown(surface),
        racers=widgets.SelectMultiple(
            options=list(RACERS),
            value=racers,
            rows=6,
            description="optimizers",
            style=_STYLE,
            layout=_LAYOUT,
        ),
        steps=widgets.IntSlider(value=steps, min=5, max=400, description="steps", **_SLIDER),
        lr_scale=widgets.FloatLogSlider(
            value=1.0, base=10, min=-1.5, max=1, step=0.05, description="lr × tuned", **_SLIDER
        ),
        kappa=widgets.FloatLogSlider(
            value=10.0, base=10, min=0, max=3, step=0.1, description="bowl κ", **_SLIDER
        ),
        angle=widgets.FloatSlider(
            value=0.0, min=0, max=90, step=5, description="bowl angle °", **_SLIDER
        ),
        beta=widgets.FloatSlider(
            value=0.9, min=0, max=0.99, step=0.01, description="momentum β", **_SLIDER
        ),
    )

    def follow_surface(change: dict) -> None:
        for name in ("kappa", "angle"):
            controls[name].disabled = change["new"] != "quadratic bowl"

    controls["surface"].observe(follow_surface, "value")
    follow_surface({"new": surface})
    return controls
