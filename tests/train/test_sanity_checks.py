"""The sanity checks before a long training: the loss at the start, overfitting one batch."""

import math

import pytest
import torch
from torch import nn

from course_lib.data import digits_split
from course_lib.train import evaluate
from course_lib.train.checks import OverfitResult, chance_level_loss, overfit_one_batch


def test_chance_level_loss_is_the_cross_entropy_of_a_uniform_guess():
    assert chance_level_loss(10) == pytest.approx(math.log(10))
    uniform = torch.zeros(4, 10)
    targets = torch.tensor([0, 3, 7, 9])
    assert nn.functional.cross_entropy(uniform, targets).item() == pytest.approx(
        chance_level_loss(10)
    )
    for bad in (1, 2.5, True):
        with pytest.raises(ValueError, match="classes"):
            chance_level_loss(bad)


def test_a_fresh_network_starts_near_chance_level():
    train, _ = digits_split(seed=0)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    loss = evaluate(model, train, nn.CrossEntropyLoss())["loss"]
    assert abs(loss - chance_level_loss(10)) < 0.15


def test_overfit_one_batch_memorises_a_small_batch_and_restores_train_mode():
    train, _ = digits_split(seed=0)
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Dropout(0.1), nn.Linear(32, 10)
    )
    result = overfit_one_batch(
        model,
        train.inputs[:32],
        train.targets[:32],
        optimizer=torch.optim.Adam(model.parameters(), lr=1e-2),
        loss_fn=nn.CrossEntropyLoss(),
        steps=150,
    )
    assert isinstance(result, OverfitResult) and len(result.losses) == 150
    assert result.losses[-1] < 0.05 < 2.0 < result.losses[0]
    assert result.accuracy == 1.0 and model.training


def test_overfit_one_batch_fails_for_a_network_that_cannot_learn():
    """A learning rate of 0 is a planted bug: the loss does not move, the check shows it."""
    train, _ = digits_split(seed=0)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    result = overfit_one_batch(
        model,
        train.inputs[:32],
        train.targets[:32],
        optimizer=torch.optim.SGD(model.parameters(), lr=0.0),
        loss_fn=nn.CrossEntropyLoss(),
        steps=20,
    )
    assert result.losses[-1] == pytest.approx(result.losses[0]) and result.accuracy < 0.5


def test_overfit_one_batch_refuses_bad_arguments():
    model = nn.Linear(3, 2)
    kit = {
        "optimizer": torch.optim.SGD(model.parameters(), lr=0.1),
        "loss_fn": nn.CrossEntropyLoss(),
    }
    with pytest.raises(ValueError, match="steps"):
        overfit_one_batch(
            model, torch.zeros(4, 3), torch.zeros(4, dtype=torch.long), steps=0, **kit
        )
    with pytest.raises(ValueError, match="targets"):
        overfit_one_batch(
            model, torch.zeros(4, 3), torch.zeros(3, dtype=torch.long), steps=1, **kit
        )
