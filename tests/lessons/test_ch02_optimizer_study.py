import pytest
import torch

from course_lib.data import digits_split
from course_lib.lessons.ch02_optimizer_study import (
    epochs_to_reach,
    least_squares_problem,
    minibatch_run,
    small_mlp,
    training_curve,
)
from course_lib.optim import SGD, Adam
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
    noisy_cg = minibatch_run(problem, ConjugateGradient, {"max_iter": 1}, batch_size=32, steps=25)
    sgd = minibatch_run(problem, SGD, {"lr": 0.05}, batch_size=32, steps=400)
    assert sgd.losses[-1] < 1.1 * problem.best_loss
    assert noisy_cg.losses[-1] > 2 * problem.best_loss
    assert sgd.examples_seen == 400 * 32
    with pytest.raises(ValueError, match="batch_size"):
        minibatch_run(problem, SGD, {"lr": 0.1}, batch_size=0, steps=1)
