"""Chapter 3's experiment helpers: seeded runs, learning-rate studies, and the measurements."""

import math

import pytest
import torch
from matplotlib.figure import Figure

from course_lib.data import digits_splits, per_class_subset
from course_lib.lessons.ch03_training_workflow import (
    LOSSES,
    LearningRateStudy,
    Run,
    confident_logits,
    hidden_signal,
    logit_gradient,
    loss_of_logits,
    mean_and_range,
    signal_during_training,
    softmax_twice_loss_floor,
    train_and_validate,
    tune_learning_rate,
    tuning_figure,
)
from course_lib.models import mlp


@pytest.fixture(scope="module")
def data():
    train, val, _ = digits_splits(seed=0)
    return per_class_subset(train, 10, seed=0), per_class_subset(val, 5, seed=0)


def test_train_and_validate_is_seeded_and_measures_both_splits(data):
    train, val = data
    first = train_and_validate(train, val, 1e-2, hidden=(16,), epochs=3, seed=1)
    again = train_and_validate(train, val, 1e-2, hidden=(16,), epochs=3, seed=1)
    other = train_and_validate(train, val, 1e-2, hidden=(16,), epochs=3, seed=2)
    assert first.history["train_loss"] == again.history["train_loss"]
    assert first.history["train_loss"] != other.history["train_loss"]
    assert 0 <= first.val_accuracy <= 1 and 0 <= first.train_accuracy <= 1
    assert len(first.history.epochs) == 3


def test_mse_on_logits_trains_on_one_hot_targets_and_still_reports_accuracy(data):
    train, val = data
    run = train_and_validate(train, val, 1e-2, loss="MSE on logits", epochs=5)
    assert run.history["train_loss"][-1] < run.history["train_loss"][0]
    assert run.val_accuracy > 0.3  # far above chance (0.1) after 5 epochs
    after_softmax = train_and_validate(train, val, 1e-2, loss="MSE on softmax", epochs=5)
    assert after_softmax.history["train_loss"][-1] < after_softmax.history["train_loss"][0]
    assert after_softmax.history["train_loss"][0] < 0.1  # probabilities: each error at most 1
    with pytest.raises(ValueError, match="loss must be"):
        train_and_validate(train, val, 1e-2, loss="hinge")


def test_init_gain_sets_xavier_weights_in_hidden_layers_only(data):
    train, val = data
    run = train_and_validate(train, val, 0.0, hidden=(32, 32), epochs=1, init_gain=4.0)
    first, second, head = run.model[1][0], run.model[2][0], run.model[3]
    bound = 4.0 * math.sqrt(6 / (64 + 32))
    assert first.weight.abs().max() <= bound and first.weight.abs().max() > 0.9 * bound
    assert second.weight.abs().max() > 0.9 * 4.0 * math.sqrt(6 / 64)
    assert first.bias.abs().max() == 0
    assert head.weight.abs().max() <= 1 / math.sqrt(32)  # PyTorch's default U(-1/sqrt(fan_in), ...)


def _run(accuracy):
    return Run(val_accuracy=accuracy, train_accuracy=accuracy, history=None, model=None)


def test_study_picks_the_rate_with_the_best_mean_and_the_smaller_rate_on_a_tie():
    study = LearningRateStudy(
        {0.1: [_run(0.9), _run(0.5)], 0.01: [_run(0.8), _run(0.8)], 0.001: [_run(0.8), _run(0.8)]}
    )
    assert study.best_lr == 0.001
    assert study.accuracies() == [0.8, 0.8] and study.mean(0.1) == pytest.approx(0.7)
    assert mean_and_range([0.9, 0.5]) == "0.700 [0.500-0.900]"


def test_tune_learning_rate_runs_every_rate_and_seed_and_draws_a_figure(data):
    train, val = data
    study = tune_learning_rate(train, val, (1e-3, 1e-2), seeds=(0, 1), hidden=(8,), epochs=1)
    assert sorted(study.runs) == [1e-3, 1e-2] and all(len(r) == 2 for r in study.runs.values())
    figure = tuning_figure({"depth 1": {"relu": study}}, title="t")
    assert isinstance(figure, Figure) and figure.axes[0].get_ylim() == (0, 1)
    equal = LearningRateStudy({0.1: [_run(0.1)] * 3, 0.01: [_run(0.7), _run(0.9), _run(0.8)]})
    assert isinstance(tuning_figure({"a": {"b": equal}}, title="t"), Figure)  # no negative bars
    with pytest.raises(ValueError, match="at least one"):
        tune_learning_rate(train, val, (), hidden=(8,))


def test_gradients_match_their_formulas():
    logits = torch.tensor([0.5, -1.0, 2.0])
    one_hot = torch.tensor([1.0, 0.0, 0.0])
    assert torch.allclose(logit_gradient("cross-entropy", logits, 0), logits.softmax(0) - one_hot)
    assert torch.allclose(logit_gradient("MSE on logits", logits, 0), 2 * (logits - one_hot) / 3)
    p = logits.softmax(0)
    jacobian = torch.diag(p) - torch.outer(p, p)
    expected = jacobian @ (2 * (p - one_hot) / 3)
    assert torch.allclose(logit_gradient("MSE on softmax", logits, 0), expected, atol=1e-6)
    assert loss_of_logits("cross-entropy", logits, 0).item() == pytest.approx(-math.log(p[0]))
    with pytest.raises(ValueError, match="unknown loss"):
        loss_of_logits("hinge", logits, 0)


def test_when_confidently_wrong_only_mse_after_softmax_loses_its_gradient():
    norms = {
        name: [
            logit_gradient(name, confident_logits(m, predicted=3), 0).norm().item()
            for m in (1, 5, 10)
        ]
        for name in LOSSES
    }
    assert norms["MSE on logits"] == sorted(norms["MSE on logits"])  # grows with the error
    assert norms["MSE on softmax"][-1] < 0.01 * norms["MSE on softmax"][0]  # vanishes
    assert norms["cross-entropy"][-1] == pytest.approx(math.sqrt(2), rel=1e-3)  # tends to sqrt(2)
    assert confident_logits(10, predicted=3).softmax(0)[3] > 0.999
    with pytest.raises(ValueError, match="predicted"):
        confident_logits(1, predicted=10)


def test_hidden_signal_sees_sigmoid_centred_at_one_half_and_tanh_at_zero():
    inputs = torch.rand(200, 1, 8, 8)
    torch.manual_seed(0)
    sigmoid = hidden_signal(mlp(64, [32, 32], 10, activation="sigmoid"), inputs)
    torch.manual_seed(0)
    tanh = hidden_signal(mlp(64, [32, 32], 10, activation="tanh"), inputs)
    assert len(sigmoid) == 2
    assert abs(sigmoid[0].mean - 0.5) < 0.05 and abs(tanh[0].mean) < 0.05
    assert sigmoid[1].spread < tanh[1].spread
    assert all(0 <= s.saturated <= 1 for s in sigmoid + tanh)


def test_signal_during_training_measures_after_each_number_of_steps(data):
    train, _ = data
    torch.manual_seed(0)
    model = mlp(64, [16, 16], 10, activation="sigmoid")
    signals = signal_during_training(model, train, 0.1, (0, 3), batch_size=16)
    assert sorted(signals) == [0, 3] and all(len(s) == 2 for s in signals.values())
    assert signals[0][0].saturated < signals[3][0].saturated  # a large rate pushes units outwards
    with pytest.raises(ValueError, match="steps"):
        signal_during_training(model, train, 0.1, ())


def test_softmax_twice_floor_is_the_loss_of_a_perfect_probability_vector():
    perfect = torch.tensor([[1.0] + [0.0] * 9])
    loss = torch.nn.functional.cross_entropy(perfect, torch.tensor([0]))
    assert softmax_twice_loss_floor(10) == pytest.approx(loss.item())
    assert softmax_twice_loss_floor(10) == pytest.approx(math.log(1 + 9 / math.e))
    with pytest.raises(ValueError):
        softmax_twice_loss_floor(1)
