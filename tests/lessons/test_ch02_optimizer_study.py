import math

import pytest
import torch
from matplotlib.figure import Figure

from course_lib.data import digits_split, digits_splits
from course_lib.landscapes import quadratic_bowl
from course_lib.lessons.ch02_optimizer_study import (
    LearningCurves,
    LrSweep,
    epochs_to_reach,
    fewest_steps,
    late_loss,
    learning_curves,
    least_squares_problem,
    log_grid,
    lr_sensitivity_figure,
    lr_sweep,
    mean_weight_after_decay,
    minibatch_run,
    ranking_per_seed,
    small_mlp,
    steps_to_reach,
    training_curve,
    turned,
    turned_bowl,
)
from course_lib.optim import SGD, Adam, AdamW
from course_lib.optim.conjugate_gradient import ConjugateGradient


def test_digits_split_is_seeded_stratified_and_scaled():
    train, test = digits_split(seed=0)
    assert len(train) + len(test) == 1797 and len(test) == 450
    again, _ = digits_split(seed=0)
    assert torch.equal(train.inputs, again.inputs)
    assert train.inputs.min() >= 0 and train.inputs.max() <= 1
    per_class_total = torch.bincount(torch.cat([train.targets, test.targets]))
    stratified = (torch.bincount(test.targets) - 0.25 * per_class_total).abs()
    assert stratified.max() <= 1  # each class keeps its share in the test split
    images, _ = digits_split(flatten=False)
    assert images.inputs.shape[1:] == (1, 8, 8)
    with pytest.raises(ValueError, match="test_fraction"):
        digits_split(test_fraction=1.5)


def test_every_optimizer_starts_from_the_same_weights_and_training_lowers_the_loss():
    first, second = small_mlp(seed=3), small_mlp(seed=3)
    assert all(
        torch.equal(a, b) for a, b in zip(first.parameters(), second.parameters(), strict=True)
    )
    train, _ = digits_split()
    curve = training_curve(Adam, {"lr": 1e-2}, train, epochs=3)
    assert len(curve) == 3 and curve[-1] < curve[0] < 2.5
    assert curve == training_curve(Adam, {"lr": 1e-2}, train, epochs=3)  # seeded: repeatable


def test_epochs_to_reach_is_one_based_and_none_when_never():
    assert epochs_to_reach([1.0, 0.5, 0.1], 0.5) == 2
    assert epochs_to_reach([1.0, 0.9], 0.1) is None


def test_full_batch_conjugate_gradient_reaches_the_least_squares_optimum():
    problem = least_squares_problem()
    run = minibatch_run(problem, ConjugateGradient, {"max_iter": 1}, batch_size=2000, steps=25)
    assert run.losses[-1] == pytest.approx(problem.best_loss, rel=1e-6)


def test_minibatch_noise_breaks_conjugate_gradient_but_not_sgd():
    problem = least_squares_problem()
    per_step = minibatch_run(problem, ConjugateGradient, {"max_iter": 1}, batch_size=32, steps=25)
    per_evaluation = minibatch_run(
        problem,
        ConjugateGradient,
        {"max_iter": 1},
        batch_size=32,
        steps=25,
        new_batch_per="evaluation",
    )
    sgd = minibatch_run(problem, SGD, {"lr": 0.05}, batch_size=32, steps=250)
    assert sgd.losses[-1] < 1.05 * problem.best_loss
    assert per_step.losses[-1] > sgd.losses[-1] + 0.01
    assert per_evaluation.losses[-1] > 2 * problem.best_loss
    assert sgd.examples_seen == 250 * 32
    with pytest.raises(ValueError, match="batch_size"):
        minibatch_run(problem, SGD, {"lr": 0.1}, batch_size=0, steps=1)
    with pytest.raises(ValueError, match="new_batch_per"):
        minibatch_run(problem, SGD, {"lr": 0.1}, batch_size=8, steps=1, new_batch_per="epoch")


class _TwoLooksAtTheSameWeights(torch.optim.LBFGS):
    """A closure-based optimizer that only evaluates twice per step without moving."""

    looks: list = []

    def step(self, closure):
        self.looks.append((closure().item(), closure().item()))


def test_one_batch_per_step_keeps_every_evaluation_of_a_step_on_the_same_examples():
    problem = least_squares_problem(samples=200)
    for per, same in (("step", True), ("evaluation", False)):
        _TwoLooksAtTheSameWeights.looks = []
        run = minibatch_run(
            problem, _TwoLooksAtTheSameWeights, {}, batch_size=8, steps=3, new_batch_per=per
        )
        assert run.evaluations == 6
        assert all((first == second) is same for first, second in _TwoLooksAtTheSameWeights.looks)


def test_turned_bowl_turns_the_start_with_the_bowl_so_the_start_loss_is_the_same():
    assert turned((1.0, 0.0), 90) == pytest.approx((0.0, 1.0))
    straight, tilted = turned_bowl(100), turned_bowl(100, 45)
    assert straight.start == quadratic_bowl(100).start
    start_losses = [float(bowl(torch.tensor(bowl.start))) for bowl in (straight, tilted)]
    assert start_losses[0] == pytest.approx(start_losses[1])
    low, high = tilted.x_range
    assert low <= tilted.start[0] <= high and tilted.y_range[0] <= tilted.start[1]


def test_gradient_descent_needs_the_same_steps_on_the_turned_bowl():
    lr = 2 / 101
    straight = steps_to_reach(turned_bowl(100), SGD, 1e-4, lr=lr)
    tilted = steps_to_reach(turned_bowl(100, 45), SGD, 1e-4, lr=lr)
    assert straight is not None and abs(straight - tilted) <= 1
    assert steps_to_reach(turned_bowl(100), SGD, 1e-4, lr=0.1) is None  # diverges: 0.1 > 2/100
    assert steps_to_reach(turned_bowl(100), SGD, 1e-4, max_steps=5, lr=lr) is None
    steps, lr_found = fewest_steps(turned_bowl(100), SGD, [0.001, 2 / 101, 0.1], 1e-4)
    assert lr_found == pytest.approx(2 / 101) and steps == straight
    assert fewest_steps(turned_bowl(100), SGD, [1e-6], 1e-4, max_steps=10) is None


def test_adamw_decays_the_mean_weight_as_promised_and_adam_l2_depends_on_gradient_scale():
    promised = (1 - 1e-2 * 0.1) ** 100
    for scale in (10.0, 0.01):
        mean = mean_weight_after_decay(AdamW, scale, steps=100, weights=500)
        assert mean == pytest.approx(promised, abs=0.03)
    large = mean_weight_after_decay(Adam, 10.0, steps=100, weights=500)
    small = mean_weight_after_decay(Adam, 0.01, steps=100, weights=500)
    assert large > promised + 0.05 and small < promised - 0.3


def test_learning_curves_flatten_images_and_report_train_and_validation_losses():
    train, validation, _ = digits_splits()
    curves = learning_curves(Adam, {"lr": 1e-2}, train, validation, epochs=2)
    assert isinstance(curves, LearningCurves)
    assert len(curves.train) == len(curves.validation) == 2
    assert curves.validation[-1] < 2.3
    diverged = learning_curves(SGD, {"lr": 1e4}, train, validation, epochs=2)
    assert all(loss == math.inf or loss > 2 for loss in diverged.validation)


def test_late_loss_is_the_median_of_the_last_epochs():
    assert late_loss([9.0, 1.0, 5.0, 2.0], last=3) == 2.0
    with pytest.raises(ValueError, match="last"):
        late_loss([1.0], last=2)


def test_log_grid_has_the_given_number_per_decade():
    assert log_grid(1e-2, 1) == pytest.approx((0.01, 10**-1.5, 0.1, 10**-0.5, 1.0))
    assert len(log_grid(1e-3, 1, per_decade=4)) == 13
    with pytest.raises(ValueError):
        log_grid(1, 0.1)


def _sweep(medians):
    lrs = log_grid(1e-3, 10 ** (-3 + (len(medians) - 1) / 2))
    scores = tuple((m, m * 0.9, m * 1.1) for m in medians)  # median over seeds is m
    return LrSweep(lrs, scores, curves=tuple(() for _ in lrs))


def test_lr_sweep_best_robust_range_and_penalty():
    sweep = _sweep([2.0, 0.5, 0.2, 0.1, 0.25, 0.4, 2.0])
    assert sweep.best_lr == pytest.approx(10**-1.5) and sweep.best_loss == pytest.approx(0.1)
    assert sweep.spread_at_best() == pytest.approx((0.09, 0.11))
    low, high = sweep.robust_range(3)  # 0.2 and 0.25 are within 3x of 0.1, 0.4 and 0.5 are not
    assert (low, high) == pytest.approx((0.01, 0.1))
    assert sweep.robust_width(3) == pytest.approx(10)
    assert not sweep.best_at_edge and not sweep.range_clipped(3)
    assert sweep.robust_range(5) == pytest.approx((10**-2.5, 10**-0.5))
    assert sweep.penalty(10) == pytest.approx(max(0.5, 0.4) / 0.1)  # at lr / 10 and lr * 10
    assert sweep.penalty_sides(10) == pytest.approx((5.0, 4.0))  # (too small, too large)
    assert sweep.best_lr_of_seed(0) == pytest.approx(10**-1.5)
    assert _sweep([0.1, 0.5, 0.9]).best_at_edge
    with pytest.raises(ValueError, match="not on the grid"):
        sweep.median(0.5)


def test_ranking_per_seed_orders_optimizers_by_each_seeds_score_at_their_chosen_lr():
    lrs = (0.01, 0.1)
    first = LrSweep(lrs, ((0.9, 0.9), (0.2, 0.5)), curves=((), ()))  # best lr 0.1, median 0.35
    second = LrSweep(lrs, ((0.3, 0.3), (0.4, 0.4)), curves=((), ()))  # best lr 0.01
    assert ranking_per_seed({"first": first, "second": second}) == [
        ["first", "second"],
        ["second", "first"],
    ]


def test_lr_sweep_runs_every_lr_and_seed_and_draws_a_panel_per_optimizer():
    train, validation, _ = digits_splits()
    sweep = lr_sweep(Adam, {}, [1e-2, 1e-3], train, validation, seeds=(0, 1), epochs=2, last=1)
    assert sweep.lrs == (1e-3, 1e-2)
    assert len(sweep.scores) == 2 and all(len(s) == 2 for s in sweep.scores)
    assert sweep.scores[1][0] == sweep.curves[1][0].validation[-1]
    figure = lr_sensitivity_figure({"Adam": sweep, "also Adam": sweep})
    assert isinstance(figure, Figure)
