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


def solution_dropout(x, p, training):
    return x * (torch.rand_like(x) >= p) / (1 - p) if training else x


@pytest.mark.parametrize(
    "wrong, words",
    [
        (
            lambda x, p, training: x * (torch.rand_like(x) >= p) / (1 - p),
            "in evaluation dropout does nothing",
        ),
        (
            lambda x, p, training: x * (torch.rand_like(x) >= p) if training else x,
            "scale the kept entries by 1 / (1 - p)",
        ),
        (
            lambda x, p, training: x * (torch.rand_like(x) < p) / p if training else x,
            "probability to DROP",
        ),
        (
            lambda x, p, training: (
                x.masked_fill_(torch.rand_like(x) < p, 0) / (1 - p) if training else x
            ),
            "modified in place",
        ),
    ],
)
def test_dropout_mistakes_are_named(capsys, wrong, words):
    assert words in report(capsys, "ch4.dropout", wrong)
    assert "passed (2/2 cases)" in report(capsys, "ch4.dropout", solution_dropout)
    assert "passed (2/2 cases)" in report(capsys, "ch4.dropout", torch.nn.functional.dropout)


def test_should_stop_mistakes_are_named_with_the_epoch(capsys):
    def previous_epoch(val_losses, patience):
        recent = val_losses[-patience - 1 :]
        return len(recent) == patience + 1 and all(
            b >= a for a, b in zip(recent, recent[1:], strict=False)
        )

    def late(val_losses, patience):
        return len(val_losses) - 1 - val_losses.index(min(val_losses)) > patience

    text = report(capsys, "ch4.should_stop", previous_epoch)
    assert "compare with the best loss so far" in text and "after epoch 6" in text
    assert "one epoch too late" in report(capsys, "ch4.should_stop", late)


def test_should_stop_reference_agrees_with_the_early_stopping_callback():
    from types import SimpleNamespace

    from course_lib.grading.exercises.ch04 import _reference_should_stop
    from course_lib.train import EarlyStopping

    losses = [2.0, 1.5, 1.2, 1.25, 1.1, 1.15, 1.2, 1.1, 1.3, 1.4, 0.5, 0.5, 0.6, 0.7]
    stopper = EarlyStopping(patience=2, restore_best=False)
    history = SimpleNamespace(epochs=[], stop_reason="")
    decisions = []
    for epoch, loss in enumerate(losses, start=1):
        history.epochs.append({"val_loss": loss})
        decisions.append(
            stopper.on_epoch_end(SimpleNamespace(history=history, epoch=epoch, model=None))
        )
    assert decisions == [
        _reference_should_stop(losses[:end], 2) for end in range(1, len(losses) + 1)
    ]
    # a tie is no improvement
    assert decisions.index(True) == 6 and decisions[11:] == [
        False,
        True,
        True,
    ]


def test_cosine_reference_agrees_with_torch_and_mistakes_are_named(capsys):
    import math

    from course_lib.grading.exercises.ch04 import _reference_cosine

    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.05)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=25, eta_min=5e-4)
    for epoch in range(26):
        assert optimizer.param_groups[0]["lr"] == pytest.approx(
            _reference_cosine(epoch, 25, 0.05, 5e-4), abs=1e-12
        )
        optimizer.step()
        scheduler.step()

    def to_zero(epoch, total_epochs, lr_max, lr_min=0.0):
        return lr_max * (1 + math.cos(math.pi * epoch / total_epochs)) / 2

    def degrees(epoch, total_epochs, lr_max, lr_min=0.0):
        return lr_min + (lr_max - lr_min) * (1 + math.cos(180 * epoch / total_epochs)) / 2

    assert "should end at lr_min" in report(capsys, "ch4.cosine_lr", to_zero)
    assert "math.cos takes radians" in report(capsys, "ch4.cosine_lr", degrees)


def test_a_float32_cosine_passes_and_a_float64_dropout_is_named(capsys):
    def cosine_float32(epoch, total_epochs, lr_max, lr_min=0.0):
        angle = torch.tensor(torch.pi * epoch / total_epochs)
        return lr_min + (lr_max - lr_min) * (1 + torch.cos(angle).item()) / 2

    assert "passed (2/2 cases)" in report(capsys, "ch4.cosine_lr", cosine_float32)
    text = report(
        capsys,
        "ch4.dropout",
        lambda x, p, training: (
            (x.double() * (torch.rand_like(x) >= p) / (1 - p)) if training else x
        ),
    )
    assert "same shape and dtype as x" in text and "Traceback" not in text


# --- chapter 5: transfer learning -------------------------------------------------------------------


def _keep_in_eval(layer, inputs):
    layer.eval()  # returns None: a value returned by a pre-hook would replace the inputs


def _freeze_head_only(model, batchnorm="hook", count=lambda ps: sum(p.numel() for p in ps)):
    for parameter in model.parameters():
        parameter.requires_grad = False
    for parameter in model.fc.parameters():
        parameter.requires_grad = True
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            if batchnorm == "hook":
                module.register_forward_pre_hook(_keep_in_eval)
            elif batchnorm == "eval":
                module.eval()  # undone by the next model.train()
    return count([p for p in model.parameters() if p.requires_grad])


def test_freezing_checks_name_batchnorm_and_counting_mistakes(capsys):
    import numpy as np

    from course_lib.transfer import freeze, unfreeze

    def course_freeze(model):
        unfreeze(freeze(model), "fc")
        return np.int64(sum(p.numel() for p in model.parameters() if p.requires_grad))

    assert "passed (2/2 cases)" in report(capsys, "ch5.freeze_all_but_head", _freeze_head_only)
    assert "passed (2/2 cases)" in report(capsys, "ch5.freeze_all_but_head", course_freeze)
    for batchnorm in ("none", "eval"):
        text = report(
            capsys, "ch5.freeze_all_but_head", lambda m, b=batchnorm: _freeze_head_only(m, b)
        )
        assert "model.train() undoes .eval()" in text and "forward pre-hook" in text
    tensors = report(capsys, "ch5.freeze_all_but_head", lambda m: _freeze_head_only(m, count=len))
    assert "count numbers, not tensors" in tensors

    def everything(model):
        _freeze_head_only(model)
        return sum(p.numel() for p in model.parameters())

    assert "not all of them" in report(capsys, "ch5.freeze_all_but_head", everything)


def test_param_group_checks_name_swapped_rates_and_unfrozen_blocks(capsys):
    def groups(model, head_lr, backbone_lr, swap=False, freeze_rest=True):
        for name, parameter in model.named_parameters():
            parameter.requires_grad = name.startswith(("fc.", "layer4.")) or not freeze_rest
        rates = (backbone_lr, head_lr) if swap else (head_lr, backbone_lr)
        return [
            {"params": model.fc.parameters(), "lr": rates[0]},
            {"params": model.layer4.parameters(), "lr": rates[1]},
        ]

    assert "passed (2/2 cases)" in report(capsys, "ch5.param_groups", groups)
    swapped = report(capsys, "ch5.param_groups", lambda m, h, b: groups(m, h, b, swap=True))
    assert "rates swapped" in swapped
    unfrozen = report(
        capsys, "ch5.param_groups", lambda m, h, b: groups(m, h, b, freeze_rest=False)
    )
    assert "requires_grad = False on every parameter outside fc and layer4" in unfrozen

    def named(model, head_lr, backbone_lr):
        return [{"params": list(model.fc.named_parameters()), "lr": head_lr}]

    assert "named_parameters()" in report(capsys, "ch5.param_groups", named)


def test_head_and_few_label_checks_measure_accuracy(capsys):
    from torch import nn

    from course_lib.transfer import load_backbone, replace_head

    untrained = report(capsys, "ch5.train_head", lambda features: nn.Linear(128, 10))
    assert "chance level" in untrained and "the head is not trained" in untrained
    wrong_size = report(capsys, "ch5.train_head", lambda features: nn.Linear(64, 10))
    assert "not on images" in wrong_size
    glyph_head = report(capsys, "ch5.few_labels", lambda labelled: load_backbone("bundled"))
    assert "replace_head(model, 10)" in glyph_head
    untrained = report(
        capsys, "ch5.few_labels", lambda labelled: replace_head(load_backbone("small_resnet"), 10)
    )
    assert "so few labels are not enough from scratch" in untrained


def _tampered(folder, *, skip_unlisted=False, skip_missing=False, include_manifest=False):
    import hashlib
    import json

    listed = json.loads((folder / "manifest.json").read_text())["files"]
    found = []
    for name, digest in listed.items():
        path = folder / name
        if not path.exists():
            found += [] if skip_missing else [name]
        elif hashlib.sha256(path.read_bytes()).hexdigest() != digest:
            found.append(name)
    if not skip_unlisted:
        ignored = () if include_manifest else ("manifest.json", "manifest.sig")
        found += [
            p.name for p in folder.iterdir() if p.name not in listed and p.name not in ignored
        ]
    return sorted(found)


def test_tampered_file_checks_name_each_missed_kind(capsys):
    assert "passed (5/5 cases)" in report(capsys, "ch6.tampered_files", _tampered)
    unlisted = report(capsys, "ch6.tampered_files", lambda f: _tampered(f, skip_unlisted=True))
    assert "2 of 5 cases failed" in unlisted and "the manifest does not list counts too" in unlisted
    first_only = report(capsys, "ch6.tampered_files", lambda f: _tampered(f)[:1])
    assert "1 of 5 cases failed" in first_only and "not only the first one" in first_only
    # a missing file ignored
    missing = report(capsys, "ch6.tampered_files", lambda f: _tampered(f, skip_missing=True))
    assert "check .exists() first" in missing
    manifest = report(capsys, "ch6.tampered_files", lambda f: _tampered(f, include_manifest=True))
    assert "leave them out" in manifest
    everything = report(capsys, "ch6.tampered_files", lambda f: sorted(p.name for p in f.iterdir()))
    assert "[] (nothing changed)" in everything or "leave them out" in everything


def _guard(x, *, nan_check=True, single=True):
    if not isinstance(x, torch.Tensor):
        raise TypeError("not a tensor")
    if x.dtype != torch.float32:
        raise ValueError("dtype")
    if single and x.shape == (1, 16, 16):
        x = x.unsqueeze(0)
    if x.dim() != 4 or x.shape[1:] != (1, 16, 16) or not 1 <= len(x) <= 64:
        raise ValueError("shape")
    if nan_check and torch.isnan(x).any():
        raise ValueError("NaN")
    if x.min() < 0 or x.max() > 1:
        raise ValueError("range")
    return x


def test_input_guard_checks_explain_nan_and_single_images(capsys):
    assert "passed (7/7 cases)" in report(capsys, "ch6.input_guard", _guard)
    nan = report(capsys, "ch6.input_guard", lambda x: _guard(x, nan_check=False))
    assert "1 of 7 cases failed" in nan and "NaN compares False with everything" in nan
    single = report(capsys, "ch6.input_guard", lambda x: _guard(x, single=False))
    assert "x.unsqueeze(0)" in single

    def normalizing(x):
        return (_guard(x) - 0.5) / 0.5

    assert "does not change the input" in report(capsys, "ch6.input_guard", normalizing)

    def silent(x):
        try:
            return _guard(x)
        except ValueError:
            raise ValueError() from None

    assert "with no message" in report(capsys, "ch6.input_guard", silent)


def test_threshold_checks_name_the_wrong_quantile_and_logits(capsys):
    def threshold(model, inputs, rate, *, upper=False, logits=False):
        with torch.no_grad():
            outputs = model(inputs)
        scores = outputs.max(dim=1).values if logits else outputs.softmax(dim=1).max(dim=1).values
        return torch.quantile(scores, 1 - rate if upper else rate).item()

    assert "passed (2/2 cases)" in report(capsys, "ch6.ood_threshold", threshold)
    upper = report(capsys, "ch6.ood_threshold", lambda m, x, r: threshold(m, x, r, upper=True))
    assert "not the 1 - false_positive_rate one" in upper
    logits = report(capsys, "ch6.ood_threshold", lambda m, x, r: threshold(m, x, r, logits=True))
    assert "not the raw logits" in logits


def test_fgsm_checks_name_the_sign_the_clip_and_the_direction(capsys):
    from torch import nn

    def attack(model, x, y, epsilon, *, direction=1, clip=True, sign=True):
        x = x.clone().requires_grad_(True)
        (gradient,) = torch.autograd.grad(nn.functional.cross_entropy(model(x), y), x)
        moved = x + direction * epsilon * (gradient.sign() if sign else gradient)
        return (moved.clamp(0, 1) if clip else moved).detach()

    assert "passed (1/1 cases)" in report(capsys, "ch6.fgsm", attack)
    against = report(capsys, "ch6.fgsm", lambda m, x, y, e: attack(m, x, y, e, direction=-1))
    assert "do not subtract it" in against
    unclipped = report(capsys, "ch6.fgsm", lambda m, x, y, e: attack(m, x, y, e, clip=False))
    assert ".clamp(0, 1)" in unclipped
    raw = report(capsys, "ch6.fgsm", lambda m, x, y, e: attack(m, x, y, e, sign=False))
    assert "not the gradient itself" in raw

    def in_place(model, x, y, epsilon):
        x += 0.0 * x + epsilon  # changes the caller's images
        return x.clamp(0, 1)

    assert "x changed in place" in report(capsys, "ch6.fgsm", in_place)
