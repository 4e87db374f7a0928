"""Calibration: reliability bins, ECE on known cases, a temperature fit that recovers a known T."""

from __future__ import annotations

import math

import pytest
import torch

from course_lib.hardening import (
    ece_noise_floor,
    expected_calibration_error,
    fit_temperature,
    negative_log_likelihood,
    reliability_bins,
    reliability_figure,
)


def two_class(confidence: float, correct: int, total: int):
    """``total`` predictions of class 0 at ``confidence``, of which ``correct`` are right."""
    probabilities = torch.tensor([[confidence, 1 - confidence]], dtype=torch.float64).repeat(
        total, 1
    )
    targets = torch.tensor([0] * correct + [1] * (total - correct))
    return probabilities, targets


def test_ece_is_zero_when_confidence_matches_accuracy_and_the_gap_otherwise():
    assert expected_calibration_error(*two_class(0.8, 8, 10)) == pytest.approx(0.0, abs=1e-12)
    assert expected_calibration_error(*two_class(0.9, 5, 10)) == pytest.approx(0.4)
    # two bins, each holding half: |0.6 - 0.95| and |1.0 - 0.65|, weighted 1/2 each
    high, high_t = two_class(0.95, 6, 10)
    low, low_t = two_class(0.65, 10, 10)
    ece = expected_calibration_error(torch.cat([high, low]), torch.cat([high_t, low_t]))
    assert ece == pytest.approx(0.5 * 0.35 + 0.5 * 0.35)


def test_reliability_bins_put_each_confidence_in_its_bin():
    probabilities = torch.tensor(
        [[0.55, 0.45], [0.6, 0.4], [0.95, 0.05], [1.0, 0.0]], dtype=torch.float64
    )
    table = reliability_bins(probabilities, torch.tensor([0, 1, 0, 0]), bins=10)
    assert table["count"].tolist() == [0, 0, 0, 0, 0, 2, 0, 0, 0, 2]  # 0.6 lands in (0.5, 0.6]
    assert table["accuracy"][5].item() == 0.5 and table["confidence"][9].item() == 0.975
    assert math.isnan(table["accuracy"][0].item()) and len(table["edges"]) == 11
    with pytest.raises(ValueError, match="expected probabilities"):
        reliability_bins(probabilities, torch.tensor([0, 1]))


def test_fit_temperature_recovers_a_known_temperature():
    generator = torch.Generator().manual_seed(0)
    logits = 3 * torch.randn(20_000, 10, generator=generator)
    for true_temperature in (0.5, 2.0):
        targets = torch.multinomial(
            (logits / true_temperature).softmax(dim=1), 1, generator=generator
        ).squeeze(1)
        assert fit_temperature(logits, targets) == pytest.approx(true_temperature, rel=0.05)


def test_temperature_scaling_lowers_the_ece_of_an_overconfident_model():
    generator = torch.Generator().manual_seed(1)
    logits = 2 * torch.randn(5_000, 10, generator=generator)
    targets = torch.multinomial(logits.softmax(dim=1), 1, generator=generator).squeeze(1)
    overconfident = 3 * logits  # the same ranking, three times too sharp
    temperature = fit_temperature(overconfident, targets)
    before = expected_calibration_error(overconfident.softmax(dim=1), targets)
    after = expected_calibration_error((overconfident / temperature).softmax(dim=1), targets)
    assert temperature == pytest.approx(3, rel=0.1) and after < before / 3


def test_the_reliability_figure_has_one_square_panel_per_model():
    figure = reliability_figure(
        {"sure": two_class(0.95, 6, 10), "fair": two_class(0.65, 6, 10)}, bins=10
    )
    axes = figure.axes
    assert len(axes) == 2 and "ECE 0.350" in axes[0].get_title()
    assert axes[0].get_xlim() == (0, 1) and axes[0].get_aspect() == 1.0


def test_the_ece_noise_floor_shrinks_with_more_predictions_and_is_reproducible():
    def probabilities(n):
        confidence = torch.linspace(0.55, 0.99, n, dtype=torch.float64)
        return torch.stack([confidence, 1 - confidence], dim=1)

    small, large = ece_noise_floor(probabilities(100)), ece_noise_floor(probabilities(10_000))
    assert 0 < large < small < 0.2 and large < 0.02
    assert small == ece_noise_floor(probabilities(100))
    certain = torch.tensor([[1.0, 0.0]] * 50, dtype=torch.float64)
    assert ece_noise_floor(certain) == 0.0  # always right at confidence 1: no noise


def test_negative_log_likelihood_is_the_cross_entropy_at_a_temperature():
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0]])
    targets = torch.tensor([0, 0])
    expected = (math.log(1 + math.exp(-2)) + math.log(1 + math.exp(2))) / 2
    assert negative_log_likelihood(logits, targets) == pytest.approx(expected)
    assert negative_log_likelihood(logits, targets, 2.0) == pytest.approx(
        (math.log(1 + math.exp(-1)) + math.log(1 + math.exp(1))) / 2
    )
