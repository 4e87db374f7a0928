"""Exercises of chapter 3: training a network (solutions/03_training_a_network.ipynb)."""

from __future__ import annotations

import torch
from torch import nn

from course_lib.grading.spec import (
    Case,
    Exercise,
    Mistake,
    Verdict,
    compare_with_reference,
    describe,
)


def _build_classifier_case(params: dict) -> Case:
    inputs, hidden, classes = params["inputs"], params["hidden"], params["classes"]

    def check(build_classifier) -> Verdict:
        torch.manual_seed(params["seed"])
        model = build_classifier(inputs, hidden, classes)
        if not isinstance(model, nn.Module):
            return Verdict(
                False, "an nn.Module", describe(model), "return the model, e.g. nn.Sequential(...)"
            )
        x = torch.randn(6, inputs)
        with torch.no_grad():
            out = model(x)
        if out.shape != (6, classes):
            return Verdict(False, f"output of shape (6, {classes})", f"output of shape {tuple(out.shape)}",
                           f"the last layer needs one output per class: nn.Linear({hidden}, {classes})")
        if (out >= 0).all() and torch.allclose(out.sum(1), torch.ones(6), atol=1e-4):
            return Verdict(False, "raw scores (logits)", "probabilities that sum to 1",
                           "remove the softmax: nn.CrossEntropyLoss applies it itself")
        expected = inputs * hidden + hidden + hidden * classes + classes
        count = sum(p.numel() for p in model.parameters())
        if count != expected:
            return Verdict(False, f"{expected} parameters (one hidden layer of {hidden} units)", f"{count} parameters",
                           f"nn.Linear({inputs}, {hidden}) -> nn.ReLU() -> nn.Linear({hidden}, {classes})")
        a, b = torch.randn(1, inputs), torch.randn(1, inputs)
        with torch.no_grad():
            affine = torch.allclose(
                model(a) + model(b) - model(torch.zeros(1, inputs)), model(a + b), atol=1e-5
            )
        if affine:
            return Verdict(False, "a non-linear model", "a linear (affine) model",
                           "two linear layers in a row are still one linear map: put nn.ReLU() between them")
        return Verdict(True)

    return Case(f"inputs {inputs}, hidden {hidden}, classes {classes}", check)


def _accuracy_case(params: dict) -> Case:
    generator = torch.Generator().manual_seed(params["seed"])
    rows, classes = params["rows"], params["classes"]
    logits = torch.randn(rows, classes, generator=generator)
    targets = torch.randint(classes, (rows,), generator=generator)
    # about half right, so the answer is informative
    targets[: rows // 2] = logits[: rows // 2].argmax(
        1
    )
    check = compare_with_reference(
        (logits, targets),
        reference=lambda logits, targets: (logits.argmax(dim=1) == targets).float().mean().item(),
        mistakes=[
            Mistake(
                lambda logits, targets: (logits.argmax(dim=1) == targets).sum().item(),
                "that is the number of correct predictions: divide by the number of examples",
            ),
            Mistake(
                lambda logits, targets: (logits.argmax(dim=0) == targets).float().mean().item(),
                "argmax over dim=0 picks an example per class; the class of each example is argmax(dim=1)",
            ),
        ],
    )
    return Case(f"{rows} examples, {classes} classes", check)


def _reference_epoch(model, inputs, targets, optimizer, loss_fn, batch_size, *, zero_grad=True, step=True,
                     mean=True) -> float:
    total, last = 0.0, 0.0
    for start in range(0, len(inputs), batch_size):
        x, y = inputs[start : start + batch_size], targets[start : start + batch_size]
        if zero_grad:
            optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        if step:
            optimizer.step()
        total, last = total + loss.item() * len(x), loss.item()
    return total / len(inputs) if mean else last


def _train_one_epoch_case(params: dict) -> Case:
    generator = torch.Generator().manual_seed(params["seed"])
    inputs = torch.randn(params["examples"], 6, generator=generator)
    targets = torch.randint(3, (params["examples"],), generator=generator)
    batch_size = params["batch_size"]

    def fresh():
        torch.manual_seed(params["seed"])
        model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
        return model, torch.optim.SGD(model.parameters(), lr=0.1)

    def run(variant: dict):
        model, optimizer = fresh()
        loss = _reference_epoch(
            model, inputs, targets, optimizer, nn.CrossEntropyLoss(), batch_size, **variant
        )
        return loss, [p.detach().clone() for p in model.parameters()]

    def check(train_one_epoch) -> Verdict:
        model, optimizer = fresh()
        start = [p.detach().clone() for p in model.parameters()]
        got = train_one_epoch(
            model, inputs.clone(), targets.clone(), optimizer, nn.CrossEntropyLoss(), batch_size
        )
        weights = [p.detach() for p in model.parameters()]
        expected_loss, expected_weights = run({})
        if all(torch.equal(a, b) for a, b in zip(start, weights, strict=True)):
            return Verdict(False, "the parameters change", "the parameters did not change",
                           "call optimizer.step() after loss.backward() in every batch")
        if not all(
            torch.allclose(a, b, atol=1e-6) for a, b in zip(weights, expected_weights, strict=True)
        ):
            _, accumulated = run({"zero_grad": False})
            if all(
                torch.allclose(a, b, atol=1e-6) for a, b in zip(weights, accumulated, strict=True)
            ):
                return Verdict(False, "weights after one epoch of SGD", "weights from accumulated gradients",
                               "gradients add up across batches: call optimizer.zero_grad() before each backward()")
            return Verdict(False, "weights after one epoch, batches in order", "other weights",
                           "go through the batches in order, one optimizer step per batch")
        if not isinstance(got, float | int):
            return Verdict(
                False,
                "the mean loss as a float",
                describe(got),
                "return total_loss / len(inputs), a float",
            )
        if abs(got - expected_loss) > 1e-5:
            last, _ = run({"mean": False})
            hint = ("that is the last batch's loss: return the mean over the epoch, weighting each batch by its size"
                    if abs(got - last) < 1e-5 else "the mean loss weights each batch by its number of examples")
            return Verdict(False, describe(expected_loss), describe(got), hint)
        return Verdict(True)

    return Case(f"{params['examples']} examples in batches of {batch_size}", check)


EXERCISES = [
    Exercise(
        id="ch3.build_classifier",
        title="A classifier with one hidden layer",
        function_name="build_classifier",
        points=1,
        make_case=_build_classifier_case,
        public_params=[{"inputs": 64, "hidden": 32, "classes": 10, "seed": 0}],
        general_hint="nn.Sequential(nn.Linear(inputs, hidden), nn.ReLU(), nn.Linear(hidden, classes))",
    ),
    Exercise(
        id="ch3.accuracy",
        title="Accuracy from logits",
        function_name="accuracy",
        points=1,
        make_case=_accuracy_case,
        public_params=[
            {"seed": 0, "rows": 12, "classes": 4},
            {"seed": 1, "rows": 7, "classes": 10},
        ],
        general_hint="(logits.argmax(dim=1) == targets).float().mean().item()",
    ),
    Exercise(
        id="ch3.train_one_epoch",
        title="One epoch of training",
        function_name="train_one_epoch",
        points=2,
        make_case=_train_one_epoch_case,
        public_params=[{"seed": 0, "examples": 40, "batch_size": 16}],
        general_hint="for each batch: zero_grad, forward, loss, backward, step; return the size-weighted mean loss",
    ),
]
