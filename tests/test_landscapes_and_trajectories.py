import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from course_lib.landscapes import LANDSCAPES, quadratic_bowl
from course_lib.lessons.ch01_descent_widgets import (
    RACERS,
    gd_controls,
    gd_figure,
    gd_run,
    gd_summary,
    race,
    race_controls,
    race_grid,
    race_landscape,
    race_table,
    tuned_at_edge,
    tuned_lr,
)
from course_lib.optim import SGD, Adam
from course_lib.optim.conjugate_gradient import ConjugateGradient
from course_lib.trajectory import EvaluationCounter, run_on_landscape


@pytest.mark.parametrize("name", LANDSCAPES)
def test_known_minima_are_stationary_and_lowest_nearby(name):
    landscape = LANDSCAPES[name]()
    for minimum in landscape.minima:
        point = torch.tensor(minimum, dtype=torch.float64)
        assert landscape.gradient(point).abs().max() < 2e-3  # minima tabulated to 4 decimals
        for offset in ([1e-2, 0], [0, 1e-2], [-1e-2, 0], [0, -1e-2]):
            assert landscape(point + torch.tensor(offset, dtype=torch.float64)) > landscape(point)
        x_low, x_high = landscape.x_range
        y_low, y_high = landscape.y_range
        assert x_low < minimum[0] < x_high and y_low < minimum[1] < y_high


@pytest.mark.parametrize("name", LANDSCAPES)
def test_grid_and_batch_evaluation_agree(name):
    landscape = LANDSCAPES[name]()
    X, Y, Z = landscape.grid(7)
    assert Z.shape == (7, 7)
    points = torch.tensor(np.stack([X, Y], axis=-1))
    np.testing.assert_allclose(landscape(points).numpy(), Z)


def test_bowl_condition_number_is_the_hessian_ratio_and_rotation_keeps_it():
    for angle in (0, 30):
        bowl = quadratic_bowl(condition_number=25, angle_degrees=angle)
        hessian = torch.autograd.functional.hessian(
            bowl, torch.tensor([0.3, -0.2], dtype=torch.float64)
        )
        eigenvalues = torch.linalg.eigvalsh(hessian)
        assert eigenvalues.max() / eigenvalues.min() == pytest.approx(25)
    with pytest.raises(ValueError, match="condition_number"):
        quadratic_bowl(0.5)


def test_gradient_descent_on_the_bowl_converges_below_2_over_L_and_diverges_above():
    bowl = quadratic_bowl(condition_number=10)  # largest curvature L = 10
    assert run_on_landscape(bowl, SGD, lr=0.19, steps=300).final_loss < 1e-10
    diverging = run_on_landscape(bowl, SGD, lr=0.21, steps=1000)
    assert diverging.diverged and len(diverging.points) < 1001


def test_trajectory_records_every_step_and_counts_evaluations():
    bowl = quadratic_bowl()
    trajectory = run_on_landscape(bowl, Adam, lr=0.1, steps=25)
    assert trajectory.points.shape == (26, 2) and trajectory.losses.shape == (26,)
    assert trajectory.evaluations == 25
    assert tuple(trajectory.points[0]) == bowl.start
    assert trajectory.steps_to(trajectory.losses[10]) <= 10
    assert trajectory.steps_to(-1.0) is None


def test_conjugate_gradient_takes_one_iteration_per_step_and_finishes_a_2d_bowl_in_2():
    trajectory = run_on_landscape(
        quadratic_bowl(100), ConjugateGradient, steps=5, c1=1e-10, c2=1e-9
    )
    assert trajectory.losses[2] < 1e-20
    assert trajectory.evaluations > 5  # line searches cost extra evaluations


def test_evaluation_counter_counts_calls():
    counter = EvaluationCounter(lambda: torch.tensor(1.0))
    counter()
    counter()
    assert counter.count == 2


def test_gd_widget_functions_and_controls():
    controls = gd_controls()
    values = controls.values()
    assert isinstance(gd_figure(**values), Figure)
    assert gd_summary(**values).startswith("After 50 steps")
    assert gd_summary(**{**values, "lr": 0.5}).startswith("Diverged")
    seen = []
    controls.observe(lambda change: seen.append(change["new"]))
    controls["surface"].value = "Rosenbrock"
    assert seen == ["Rosenbrock"]  # one redraw, once start and lr agree with the new surface


@pytest.mark.parametrize("surface", list(LANDSCAPES))
def test_choosing_a_surface_moves_the_start_window_and_lr_to_ones_that_converge(surface):
    controls = gd_controls()  # starts on the bowl
    controls["surface"].value = surface
    landscape = LANDSCAPES[surface]()
    start_x, start_y = controls["start_x"], controls["start_y"]
    assert (start_x.value, start_y.value) == pytest.approx(landscape.start)
    assert (start_x.min, start_x.max, start_y.min, start_y.max) == (
        *landscape.x_range,
        *landscape.y_range,
    )
    assert controls["lr"].value == pytest.approx(landscape.suggested_lr)
    run = gd_run(**controls.values())
    assert not run.diverged and run.final_loss < run.losses[0]


def test_race_runs_every_racer_and_rejects_unknown_names():
    results = race("quadratic bowl", tuple(RACERS), steps=20)
    assert set(results) == set(RACERS)
    assert "conjugate gradient" in race_table("quadratic bowl", ("conjugate gradient",), 5)
    with pytest.raises(ValueError, match="unknown racers"):
        race("quadratic bowl", ("Lion",), steps=5)


def test_race_tunes_each_racer_and_gd_finds_the_best_fixed_rate_on_the_bowl():
    # on the kappa = 10 bowl the best fixed rate is 2 / (1 + 10) = 0.18; the grid's nearest is 0.178
    assert tuned_lr("quadratic bowl", "GD", 100) == pytest.approx(10**-0.75)
    assert tuned_lr("quadratic bowl", "conjugate gradient", 100) == 1.0
    results = race("quadratic bowl", ("GD", "Adam"), 100)
    assert all(not run.diverged and run.final_loss < 1e-2 for run in results.values())
    assert "0.178" in race_table("quadratic bowl", ("GD",), 100)  # the table shows the lr used


def test_race_table_has_no_lr_for_conjugate_gradient_and_counts_evaluations_to_convergence():
    table = race_table("quadratic bowl", ("GD", "conjugate gradient"), 100).splitlines()
    gd_row, cg_row = table[1].split(), table[2].split()
    assert cg_row[2] == "–"  # "conjugate", "gradient", lr, gap, evaluations
    cg_run = race("quadratic bowl", ("conjugate gradient",), 100)["conjugate gradient"]
    assert cg_run.evaluations > 100  # every idle step after convergence still costs one
    assert int(cg_row[-1]) < 20  # counted only until within 1e-6 of the minimum
    gd_run_ = race("quadratic bowl", ("GD",), 100)["GD"]
    assert int(gd_row[-1]) == gd_run_.steps_to(1e-6)  # one evaluation per step


def test_race_flags_a_tuned_rate_at_the_end_of_its_grid():
    assert race_grid("Adadelta")[0] == pytest.approx(100 * race_grid("GD")[0])
    assert race_grid("conjugate gradient") == ()
    # RMSprop on an aligned bowl keeps improving as lr grows: its best is the top of the grid
    assert tuned_at_edge("quadratic bowl", "RMSprop", 100)
    assert "*" in race_table("quadratic bowl", ("RMSprop",), 100)


@pytest.mark.parametrize("surface", list(LANDSCAPES))
def test_default_racers_are_tuned_inside_their_grid_on_every_surface(surface):
    for name in ("GD", "momentum", "Adam"):
        assert not tuned_at_edge(surface, name, 100), (surface, name)


def test_race_bowl_turns_with_its_start_so_gradient_descent_does_not_see_the_angle():
    straight = race("quadratic bowl", ("GD", "RMSprop"), 60, kappa=30.0, angle=0.0)
    turned = race("quadratic bowl", ("GD", "RMSprop"), 60, kappa=30.0, angle=45.0)
    assert race_landscape("quadratic bowl", 30.0, 45.0).start != quadratic_bowl(30.0).start
    np.testing.assert_allclose(straight["GD"].losses, turned["GD"].losses, rtol=1e-9)
    assert turned["RMSprop"].final_loss > 10 * straight["RMSprop"].final_loss
    assert race_landscape("Rosenbrock", 30.0, 45.0).name == "Rosenbrock"  # bowl-only controls


def test_race_beta_sets_the_momentum_of_momentum_racers():
    low = race("quadratic bowl", ("momentum",), 100, beta=0.3)["momentum"]
    high = race("quadratic bowl", ("momentum",), 100, beta=0.9)["momentum"]
    assert low.final_loss < 1e-3 * high.final_loss  # on kappa = 10, beta = 0.9 is far too much


def test_race_controls_redraw_once_per_change_and_disable_bowl_sliders_elsewhere():
    controls = race_controls()
    assert set(controls.values()) == {
        "surface",
        "racers",
        "steps",
        "lr_scale",
        "kappa",
        "angle",
        "beta",
    }
    sliders = ("steps", "lr_scale", "kappa", "angle", "beta")
    assert all(controls[name].continuous_update is False for name in sliders)
    heard = []
    controls.observe(heard.append)
    controls["kappa"].value = 100.0
    assert len(heard) == 1
    assert race_table(**controls.values())
    controls["surface"].value = "Rosenbrock"
    assert controls["kappa"].disabled and controls["angle"].disabled
    controls["surface"].value = "quadratic bowl"
    assert not controls["kappa"].disabled
