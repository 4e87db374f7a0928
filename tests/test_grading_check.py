"""check(): instant, specific feedback in the notebook."""

import pytest
import torch

from course_lib.grading import check, list_exercises


def report(capsys, exercise_id, function):
    check(exercise_id, function)
    return capsys.readouterr().out


def adam(w, grad, m, v, t, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, correct_m=True):
    m = beta1 * m + (1 - beta1) * grad
    v = beta2 * v + (1 - beta2) * grad**2
    m_hat = m / (1 - beta1**t) if correct_m else m
    return w - lr * m_hat / ((v / (1 - beta2**t)).sqrt() + eps), m, v


def test_a_correct_answer_passes(capsys):
    assert "passed (2/2 cases)" in report(capsys, "ch2.adam_step", adam)


def test_missing_bias_correction_is_named_with_its_effect(capsys):
    def no_m_correction(*args, **kwargs):
        return adam(*args, **kwargs, correct_m=False)

    text = report(capsys, "ch2.adam_step", no_m_correction)
    assert "2 of 2 cases failed" in text
    assert "bias correction missing for m: your first step is 10x too small" in text
    assert "expected:" in text and "got:" in text


def test_untouched_stub_reports_not_attempted_without_a_traceback(capsys):
    def gd_step(w, grad, lr):
        raise NotImplementedError

    text = report(capsys, "ch1.gd_step", gd_step)
    assert "not attempted yet" in text and "Traceback" not in text


def test_an_exception_in_the_learners_code_is_located(capsys):
    def gd_step(w, grad, lr):
        return w - lr * grad[100]

    text = report(capsys, "ch1.gd_step", gd_step)
    assert "IndexError" in text and "raised at line" in text and "grad[100]" in text


def test_in_place_modification_is_caught(capsys):
    def gd_step(w, grad, lr):
        w -= lr * grad
        return w

    assert "do not use w -= ..." in report(capsys, "ch1.gd_step", gd_step)


@pytest.mark.parametrize("lr, words", [(0.5, "diverges above 2/L"), (1e-3, "too slowly")])
def test_learning_rate_feedback_says_which_way_to_go(capsys, lr, words):
    assert words in report(capsys, "ch1.pick_learning_rate", lambda kappa: lr)


def test_endless_loop_is_stopped(capsys):
    def pick_learning_rate(kappa):
        while True:
            pass

    assert "timeout" in report(capsys, "ch1.pick_learning_rate", pick_learning_rate)


def test_unknown_exercise_lists_the_real_ones():
    with pytest.raises(ValueError, match="ch1.gd_step"):
        check("ch9.nothing", print)
    assert "ch2.momentum_step" in list_exercises()


def test_momentum_dampening_mistake_is_explained(capsys):
    def momentum_step(w, grad, velocity, lr, beta):
        velocity = beta * velocity + (1 - beta) * grad
        return w - lr * velocity, velocity

    assert "heavy-ball momentum adds the full gradient" in report(
        capsys, "ch2.momentum_step", momentum_step
    )
    assert torch.is_grad_enabled()


def test_softmax_left_in_the_classifier_is_named(capsys):
    from torch import nn

    def build_classifier(inputs, hidden, classes):
        return nn.Sequential(
            nn.Linear(inputs, hidden), nn.ReLU(), nn.Linear(hidden, classes), nn.Softmax(dim=1)
        )

    assert "remove the softmax" in report(capsys, "ch3.build_classifier", build_classifier)


def test_classifier_without_activation_is_named(capsys):
    from torch import nn

    def build_classifier(inputs, hidden, classes):
        return nn.Sequential(nn.Linear(inputs, hidden), nn.Linear(hidden, classes))

    assert "put nn.ReLU() between them" in report(capsys, "ch3.build_classifier", build_classifier)


def test_accuracy_as_a_count_is_named(capsys):
    text = report(
        capsys, "ch3.accuracy", lambda logits, targets: (logits.argmax(1) == targets).sum().item()
    )
    assert "divide by the number of examples" in text


def test_forgotten_zero_grad_and_step_are_named(capsys):
    def no_zero_grad(model, inputs, targets, optimizer, loss_fn, batch_size):
        total = 0.0
        for start in range(0, len(inputs), batch_size):
            loss = loss_fn(
                model(inputs[start : start + batch_size]), targets[start : start + batch_size]
            )
            loss.backward()
            optimizer.step()
            total += loss.item() * len(inputs[start : start + batch_size])
        return total / len(inputs)

    def no_step(model, inputs, targets, optimizer, loss_fn, batch_size):
        loss = loss_fn(model(inputs), targets)
        loss.backward()
        return loss.item()

    assert "call optimizer.zero_grad() before each backward()" in report(
        capsys, "ch3.train_one_epoch", no_zero_grad
    )
    assert "call optimizer.step()" in report(capsys, "ch3.train_one_epoch", no_step)
