"""Prediction validation: input guard, OOD scores, attacks, and the guarded predictor."""

from __future__ import annotations

import pytest
import torch
from sklearn.metrics import roc_auc_score
from torch import nn

from course_lib.data import digits_splits
from course_lib.glyphs import glyph_dataset
from course_lib.hardening import (
    GuardedPredictor,
    InputGuard,
    InvalidInput,
    accuracy_under_attack,
    attack_figure,
    auroc,
    calibrate_threshold,
    energy_score,
    fgsm,
    flagged_rates,
    max_softmax_score,
    pgd,
    threshold_controls,
    threshold_figure,
)
from course_lib.train import evaluate, fit
from course_lib.transfer import extract_features, freeze, load_backbone, replace_head, unfreeze


@pytest.fixture(scope="module")
def trained():
    """The bundled backbone with a digit head trained on it: about 95% test accuracy in a second."""
    torch.manual_seed(0)
    train, val, test = digits_splits(size=16, seed=0)
    model = unfreeze(freeze(replace_head(load_backbone("bundled"), 10)), "fc")
    optimizer = torch.optim.Adam(model.fc.parameters(), lr=1e-2)
    fit(
        model.fc,
        extract_features(model, train),
        optimizer=optimizer,
        loss_fn=nn.CrossEntropyLoss(),
        epochs=20,
        batch_size=64,
        progress=False,
    )
    return model.eval(), val, test


def test_the_guard_names_what_is_wrong():
    guard = InputGuard(shape=(1, 16, 16), max_batch=8)
    good = torch.rand(3, 1, 16, 16)
    assert guard.check(good) is good
    assert guard.check(good[0]).shape == (1, 1, 16, 16)  # a single image becomes a batch
    cases = [
        ([[0.5]], "torch.Tensor, got list"),
        ((good * 255).to(torch.uint8), "dtype torch.float32, got torch.uint8"),
        (torch.rand(3, 16, 16), r"shape \(N, 1, 16, 16\), got \(3, 16, 16\)"),
        (torch.rand(9, 1, 16, 16), "batch of 9"),
        (torch.rand(0, 1, 16, 16), "batch of 0"),
        (good.clone().index_fill_(0, torch.tensor([1]), float("nan")), "input 1: 256 NaN values"),
        (
            good.clone().index_fill_(0, torch.tensor([2]), float("inf")),
            "input 2: 256 infinite values",
        ),
        (good * 3, r"outside \[0, 1\]"),
    ]
    for bad, message in cases:
        with pytest.raises(InvalidInput, match=message):
            guard.check(bad)


def test_auroc_matches_scikit_learn_and_the_threshold_matches_its_rate():
    generator = torch.Generator().manual_seed(0)
    inside, outside = (
        torch.randn(500, generator=generator) + 1,
        torch.randn(300, generator=generator),
    )
    labels = [1] * 500 + [0] * 300
    expected = roc_auc_score(labels, torch.cat([inside, outside]).numpy())
    assert auroc(inside, outside) == pytest.approx(expected, abs=1e-12)
    assert auroc(torch.ones(4), torch.ones(4)) == 0.5
    threshold = calibrate_threshold(inside, 0.1)
    assert (inside < threshold).float().mean().item() == pytest.approx(0.1, abs=0.01)
    with pytest.raises(ValueError):
        calibrate_threshold(inside, 1.5)


def test_ood_scores_separate_digits_from_noise_and_glyphs(trained):
    model, val, test = trained
    glyphs = glyph_dataset(1, classes=300, seed=7).inputs
    noise = torch.rand(300, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        digits, strokes, static = model(test.inputs), model(glyphs), model(noise)
    for score in (max_softmax_score, energy_score):
        assert auroc(score(digits), score(static)) > 0.9
        assert auroc(score(digits), score(strokes)) > 0.7
    assert ((max_softmax_score(digits) > 0) & (max_softmax_score(digits) <= 1)).all()


def test_attacks_stay_in_their_ball_and_lower_accuracy(trained):
    model, _, test = trained
    x, y = test.inputs[:100], test.targets[:100]
    for attack in (fgsm, pgd):
        adversarial = attack(model, x, y, 0.1)
        assert (adversarial - x).abs().max() <= 0.1 + 1e-6
        assert adversarial.min() >= 0 and adversarial.max() <= 1
    clean, weak, strong = accuracy_under_attack(model, x, y, [0.0, 0.05, 0.2])
    assert clean == pytest.approx(evaluate(model, (x, y))["accuracy"])
    assert clean > weak > strong
    assert (
        accuracy_under_attack(model, x, y, [0.1], attack=pgd)[0]
        <= accuracy_under_attack(model, x, y, [0.1])[0]
    )
    assert model.training is False


def test_the_guarded_predictor_answers_or_says_why_not(trained):
    model, val, test = trained
    with torch.no_grad():
        threshold = calibrate_threshold(max_softmax_score(model(val.inputs)), 0.05)
    predictor = GuardedPredictor(model, InputGuard(), threshold)
    answers = predictor.predict(test.inputs[:100])
    answered = [p for p in answers if not p.abstained]
    assert 0.85 < len(answered) / 100 < 1
    assert (
        sum(
            p.label == t
            for p, t in zip(answers, test.targets[:100].tolist(), strict=True)
            if not p.abstained
        )
        / len(answered)
        > 0.95
    )
    batch = torch.cat(
        [test.inputs[:1], torch.full((1, 1, 16, 16), float("nan")), torch.rand(1, 1, 16, 16)]
    )
    first, broken, noise = predictor.predict(batch)
    assert not first.abstained and first.label == test.targets[0].item()
    assert broken.abstained and "NaN" in broken.reason
    assert noise.abstained and "unlike the training data" in noise.reason
    with pytest.raises(InvalidInput, match="shape"):
        predictor.predict(torch.rand(2, 3, 16, 16))
    with pytest.raises(ValueError, match="'msp' or 'energy'"):
        GuardedPredictor(model, InputGuard(), 0.5, score="entropy")


def test_the_threshold_figure_reports_the_rates_at_the_calibrated_threshold():
    generator = torch.Generator().manual_seed(0)
    val, test = torch.rand(1000, generator=generator) + 1, torch.rand(1000, generator=generator) + 1
    noise = torch.rand(200, generator=generator)  # all below every normal score
    rates = flagged_rates({"test": test, "noise": noise}, calibrate_threshold(val, 0.1))
    assert rates["noise"] == 1.0 and rates["test"] == pytest.approx(0.1, abs=0.03)
    figure = threshold_figure(val, test, {"noise": noise}, false_positive_rate=0.1)
    labels = figure.axes[0].get_legend_handles_labels()[1]
    assert labels[1] == "noise: 100% caught" and labels[0].startswith("test digits: ")
    assert "threshold 1.1" in labels[2]
    controls = threshold_controls()
    controls["false_positive_rate"].value = 0.2
    assert controls.values() == {"score": "msp", "false_positive_rate": 0.2}


def test_the_attack_figure_shows_curves_and_the_change(trained):
    model, _, test = trained
    x, y = test.inputs[:20], test.targets[:20]
    curves = {"FGSM": accuracy_under_attack(model, x, y, [0, 0.1])}
    attacked = fgsm(model, x[:1], y[:1], 0.1)
    figure = attack_figure([0, 0.1], curves, x[0], attacked[0], epsilon=0.1, labels=(1, 2))
    curve, before, after, change = figure.axes
    assert list(curve.lines[0].get_ydata()) == curves["FGSM"]
    assert after.get_title() == "attacked: 2" and change.get_title() == "change (±0.1)"
    shown = change.images[0].get_array()
    assert abs(shown).max() <= 0.1 + 1e-6
