"""Chapter 0's widget logic, tested headless: the pure functions and the linked sliders."""

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.figure import Figure

from course_lib import (
    Controls,
    chapter_map,
    descend_parabola,
    descent_controls,
    descent_figure,
    describe_descent,
)
from course_lib.tools.chapters import CHAPTERS


@pytest.mark.parametrize("lr", [0.05, 0.3, 0.7, 0.95, 1.2])
def test_each_step_multiplies_the_distance_to_the_minimum_by_one_minus_two_lr(lr):
    distances = descend_parabola(lr=lr, steps=6, start=-2.0) - 3.0
    np.testing.assert_allclose(distances[1:] / distances[:-1], 1 - 2 * lr, rtol=1e-12)


def test_lr_one_half_lands_on_the_minimum_in_one_step():
    assert descend_parabola(lr=0.5, steps=1, start=10.0).tolist() == [10.0, 3.0]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"lr": 0.0, "steps": 3, "start": 0.0}, "lr must be positive"),
        ({"lr": 0.1, "steps": -1, "start": 0.0}, "steps must be >= 0"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        descend_parabola(**kwargs)


@pytest.mark.parametrize(
    "lr, words",
    [
        (0.1, "multiplied by +0.80 at every step, so the distance shrinks by 0.80x, from one side"),
        (0.9, "multiplied by -0.80 at every step, so the distance shrinks by 0.80x, zig-zagging"),
        (0.5, "one step lands on the minimum"),
        (1.0, "bounces between two points forever"),
        (1.05, "the distance grows by 1.10x: gradient descent diverges"),
    ],
)
def test_description_matches_the_behaviour(lr, words):
    assert words in describe_descent(lr)


def test_figure_has_two_labelled_panels_and_does_not_touch_pyplot():
    open_before = plt.get_fignums()
    figure = descent_figure(lr=1.05, steps=30, start=-2.0)  # diverging: must still draw
    assert isinstance(figure, Figure)
    assert plt.get_fignums() == open_before
    for axes in figure.axes:
        assert axes.get_xlabel() and axes.get_ylabel() and axes.get_title()


def test_sliders_report_their_values_and_call_back_when_moved():
    controls = descent_controls(lr=0.1, steps=10, start=-2.0)
    assert controls.values() == {"lr": 0.1, "steps": 10, "start": -2.0}
    seen = []
    controls.observe(lambda change: seen.append(controls.values()["lr"]))
    controls["lr"].value = 0.9
    assert seen == [0.9]
    assert len(controls.box.children) == 3


def test_controls_need_at_least_one_widget():
    with pytest.raises(ValueError, match="at least one control"):
        Controls()


def test_chapter_map_links_existing_notebooks_only(tmp_path):
    (tmp_path / CHAPTERS[0].filename).write_text("{}")
    table = chapter_map(tmp_path)
    assert f"[{CHAPTERS[0].title}]({CHAPTERS[0].filename})" in table
    assert f"{CHAPTERS[1].title} *(being written)*" in table
    total = sum(c.minutes for c in CHAPTERS)
    assert f"**{total // 60} h {total % 60:02d} min**" in table


def test_every_learning_rate_the_notebook_suggests_is_on_the_slider():
    """The browser snaps a slider to min + k * step: the suggested values must be on that grid."""
    slider = descent_controls()["lr"]
    for lr in (0.1, 0.5, 0.9, 1.05):
        steps_from_min = (lr - slider.min) / slider.step
        assert slider.min <= lr <= slider.max
        assert steps_from_min == pytest.approx(round(steps_from_min)), (
            f"the slider cannot show {lr}"
        )
