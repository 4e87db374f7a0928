"""Chapter 6's calibration study: heads on cached features, a temperature per seed."""

from __future__ import annotations

import statistics

import torch

from course_lib.data import Split
from course_lib.hardening import fit_temperature
from course_lib.lessons.ch06_hardening import (
    bootstrap_temperatures,
    calibration_over_seeds,
    train_head,
)


def blobs(n: int, seed: int) -> Split:
    """Ten Gaussian blobs in 8 dimensions, overlapping enough that a head is not always right."""
    generator = torch.Generator().manual_seed(seed)
    targets = torch.arange(n) % 10
    centres = torch.randn(10, 8, generator=torch.Generator().manual_seed(99))
    return Split(centres[targets] + 0.6 * torch.randn(n, 8, generator=generator), targets)


def test_train_head_is_reproducible_and_learns():
    features = blobs(200, 0)
    first, second = train_head(features, seed=3), train_head(features, seed=3)
    assert torch.equal(first.weight, second.weight) and not first.training
    with torch.no_grad():
        accuracy = (first(features.inputs).argmax(1) == features.targets).float().mean()
    assert accuracy > 0.8


def test_calibration_over_seeds_reports_one_row_per_seed():
    features = {"train": blobs(300, 0), "val": blobs(300, 1), "test": blobs(300, 2)}
    rows = calibration_over_seeds(features, per_class=3, seeds=[0, 1])
    assert [row["seed"] for row in rows] == [0, 1]
    assert rows[0] != rows[1]
    for row in rows:
        assert row["temperature"] > 0 and 0 <= row["ece_after"] <= 1
        assert 0.1 < row["accuracy"] <= 1
        assert 0 <= row["ece_floor_after"] <= 1 and row["nll_before"] > 0 and row["nll_after"] > 0
    assert rows == calibration_over_seeds(features, per_class=3, seeds=[0, 1])


def test_bootstrap_temperatures_are_reproducible_spread_and_centred_on_the_fit():
    features = blobs(200, 0)
    head = train_head(features, seed=0)
    with torch.no_grad():
        logits = head(blobs(300, 1).inputs)
    targets = blobs(300, 1).targets
    temperatures = bootstrap_temperatures(logits, targets, draws=100, seed=0)
    assert len(temperatures) == 100 and all(t > 0 for t in temperatures)
    assert max(temperatures) > min(temperatures)
    assert temperatures == bootstrap_temperatures(logits, targets, draws=100, seed=0)
    fitted = fit_temperature(logits, targets)
    assert abs(statistics.median(temperatures) / fitted - 1) < 0.1
