"""Exercises of chapter 3: training a network (solutions/03_training_a_network.ipynb).

Six exercises: three small building blocks (a classifier, accuracy, one epoch), a derivation
(how many validation images a gap needs), a training loop with five planted bugs, each graded
as its own case, and an experiment on digits the learner never sees, within a step budget.

Probes (``probe_*``) run next to the learner's code and report plain data; the judges below
them decide, in the grader's process.
"""

from __future__ import annotations

import contextlib
import functools
import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook

from course_lib.data import Split, digits_split, digits_splits
from course_lib.grading.spec import (
    Case,
    Exercise,
    Mistake,
    Probe,
    Verdict,
    compare_with_reference,
    describe,
)


@contextlib.contextmanager
def _one_thread():
    """Run a block on one CPU thread: tiny networks train fastest so, and times are comparable."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@contextlib.contextmanager
def _seeded(seed: int):
    """Seed torch's global generator for a block, then give the caller's state back."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _copy(split: Split) -> Split:
    """What the learner's function gets: its own copy, so the probe's data stay as they were."""
    return Split(split.inputs.clone(), split.targets.clone())


def _fingerprint(*splits: Split) -> list[list[float]]:
    """Size, input sum and target sum of each split: the judge checks the data were the course's.

    The probe builds its data in the learner's kernel, where course_lib.data could have been
    changed (to train on the test digits, say); the judge compares with its own data.
    """
    return [
        [len(s), s.inputs.double().sum().item(), s.targets.double().sum().item()] for s in splits
    ]


def _data_differ(report: dict, *splits: Split) -> bool:
    expected = _fingerprint(*splits)
    got = report.get("data")
    return not (
        isinstance(got, list)
        and len(got) == len(expected)
        and all(
            isinstance(g, list)
            and len(g) == 3
            and all(abs(a - b) <= 1e-6 * (1 + abs(b)) for a, b in zip(g, e, strict=True))
            for g, e in zip(got, expected, strict=True)
        )
    )


_CHANGED_DATA = Verdict(
    False,
    "the course's digits",
    "other data",
    "the data built next to your code were not the course's digits: restart the kernel, run "
    "your cells without changing course_lib, and check again",
)


# --- Exercise: a classifier with one hidden layer ---------------------------------------------------


def probe_classifier(build_classifier, inputs: int, hidden: int, classes: int, seed: int):
    """The learner's model: its type, parameter count and outputs on seeded inputs."""
    with _seeded(seed):
        model = build_classifier(inputs, hidden, classes)
    if not isinstance(model, nn.Module):
        return {"module": False, "type": type(model).__name__}
    probes = _classifier_inputs(inputs, seed)
    with torch.no_grad():
        outputs = {name: model(x) for name, x in probes.items()}
    return {
        "module": True,
        "parameters": sum(p.numel() for p in model.parameters()),
        "outputs": outputs,
    }


def _classifier_inputs(inputs: int, seed: int) -> dict[str, torch.Tensor]:
    """Six random rows, and a, b, a + b and 0: a linear (affine) map is additive on them."""
    generator = torch.Generator().manual_seed(seed)
    rows = torch.randn(6, inputs, generator=generator)
    a, b = torch.randn(2, 1, inputs, generator=generator)
    return {"rows": rows, "a": a, "b": b, "a+b": a + b, "zero": torch.zeros(1, inputs)}


def _build_classifier_case(params: dict) -> Case:
    inputs, hidden, classes = params["inputs"], params["hidden"], params["classes"]

    def judge(report: dict) -> Verdict:
        if not report["module"]:
            return Verdict(
                False,
                "an nn.Module",
                f"a {report['type']}",
                "return the model itself, an nn.Module that can be called on a batch",
            )
        outputs = report["outputs"]
        rows = outputs["rows"]
        if not isinstance(rows, torch.Tensor) or tuple(rows.shape) != (6, classes):
            shape = tuple(rows.shape) if isinstance(rows, torch.Tensor) else describe(rows)
            return Verdict(
                False,
                f"output of shape (6, {classes})",
                f"output of shape {shape}",
                "the last layer needs one output per class, for every example of the batch",
                "what shape does the loss expect from a batch of 6 examples?",
            )
        if (rows >= 0).all() and torch.allclose(rows.sum(1), torch.ones(6), atol=1e-4):
            return Verdict(
                False,
                "raw scores (logits)",
                "probabilities that sum to 1",
                "remove the softmax: nn.CrossEntropyLoss applies it itself",
                "what does nn.CrossEntropyLoss do to the scores it receives?",
            )
        expected = inputs * hidden + hidden + hidden * classes + classes
        if report["parameters"] != expected:
            return Verdict(
                False,
                f"{expected} parameters (one hidden layer of {hidden} units)",
                f"{report['parameters']} parameters",
                f"one hidden layer of {hidden} units: one linear layer into it, one out of it, "
                "both with biases, and nothing else that learns",
                "count the weights and biases your layers should have, and compare",
            )
        additive = torch.allclose(
            outputs["a"] + outputs["b"] - outputs["zero"], outputs["a+b"], atol=1e-5
        )
        if additive:
            return Verdict(
                False,
                "a non-linear model",
                "a linear (affine) model",
                "two linear layers in a row are still one linear map: put a ReLU between them",
                "could your model learn anything a single linear layer could not?",
            )
        return Verdict(True)

    return Case(
        f"inputs {inputs}, hidden {hidden}, classes {classes}",
        Probe(probe_classifier, (inputs, hidden, classes, params["seed"])),
        judge,
    )


# --- Exercise: accuracy ------------------------------------------------------------------------------


def _accuracy_case(params: dict) -> Case:
    generator = torch.Generator().manual_seed(params["seed"])
    rows, classes = params["rows"], params["classes"]
    logits = torch.randn(rows, classes, generator=generator)
    targets = torch.randint(classes, (rows,), generator=generator)
    targets[: rows // 2] = logits[: rows // 2].argmax(1)  # about half right: an informative answer
    return compare_with_reference(
        f"{rows} examples, {classes} classes",
        (logits, targets),
        reference=lambda logits, targets: (logits.argmax(1) == targets).float().mean().item(),
        mistakes=[
            Mistake(
                lambda logits, targets: (logits.argmax(1) == targets).sum().item(),
                "that is the number of correct predictions: divide by the number of examples",
                "is your answer between 0 and 1?",
            ),
            Mistake(
                lambda logits, targets: (logits.argmax(0) == targets).float().mean().item(),
                "you took the highest score down each column, which picks an example per class; "
                "each example's class is the highest score along its row",
                "along which dimension are an example's class scores?",
            ),
        ],
        shape_hint="return one number (a float), not one value per example",
    )


# --- Exercise: one epoch of training ----------------------------------------------------------------


def _epoch_data(seed: int, examples: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(examples, 6, generator=generator)
    return inputs, torch.randint(3, (examples,), generator=generator)


def _epoch_model(seed: int) -> tuple[nn.Module, torch.optim.Optimizer]:
    with _seeded(seed):
        model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    return model, torch.optim.SGD(model.parameters(), lr=0.1)


def probe_one_epoch(train_one_epoch, seed: int, examples: int, batch_size: int):
    """The learner's epoch on a seeded model and data: what it returned, the weights after."""
    inputs, targets = _epoch_data(seed, examples)
    model, optimizer = _epoch_model(seed)
    loss = train_one_epoch(model, inputs, targets, optimizer, nn.CrossEntropyLoss(), batch_size)
    return {"loss": loss, "weights": [p.detach().clone() for p in model.parameters()]}


@functools.cache
def _reference_epoch(seed: int, examples: int, batch_size: int, *, zero_grad: bool = True) -> dict:
    """One epoch as the exercise asks (or without zero_grad): the loss, three ways, and weights."""
    inputs, targets = _epoch_data(seed, examples)
    model, optimizer = _epoch_model(seed)
    losses, sizes = [], []
    for start in range(0, examples, batch_size):
        x, y = inputs[start : start + batch_size], targets[start : start + batch_size]
        if zero_grad:
            optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        losses, sizes = [*losses, loss.item()], [*sizes, len(x)]
    return {
        "mean": sum(loss * size for loss, size in zip(losses, sizes, strict=True)) / examples,
        "mean of batch means": sum(losses) / len(losses),
        "last batch": losses[-1],
        "weights": [p.detach().clone() for p in model.parameters()],
    }


def _same_weights(a, b: list) -> bool:
    return (
        isinstance(a, list)
        and len(a) == len(b)
        and all(
            isinstance(x, torch.Tensor) and x.shape == y.shape and torch.allclose(x, y, atol=1e-6)
            for x, y in zip(a, b, strict=True)
        )
    )


_EPOCH_LOSS_MISTAKES = {
    "mean of batch means": "that is the plain mean of the batch losses: the last batch is smaller, "
    "so weight each batch's loss by its number of examples",
    "last batch": "that is the last batch's loss: return the mean over the whole epoch, each batch "
    "weighted by its size",
}


def _train_one_epoch_case(params: dict) -> Case:
    seed, examples, batch_size = params["seed"], params["examples"], params["batch_size"]

    def judge(report: dict) -> Verdict:
        start = [p.detach().clone() for p in _epoch_model(seed)[0].parameters()]
        reference = _reference_epoch(seed, examples, batch_size)
        weights = report["weights"]
        if _same_weights(weights, start):
            return Verdict(
                False,
                "the parameters change",
                "the parameters did not change",
                "the optimizer never updated the weights: after the backward pass of every batch, "
                "take the optimizer's step",
                "which of the loop's five steps changes the weights?",
            )
        if not _same_weights(weights, reference["weights"]):
            accumulated = _reference_epoch(seed, examples, batch_size, zero_grad=False)
            if _same_weights(weights, accumulated["weights"]):
                return Verdict(
                    False,
                    "weights after one epoch of SGD",
                    "weights from accumulated gradients",
                    "gradients add up across batches: clear them with the optimizer's zero_grad "
                    "before each backward pass",
                    "PyTorch adds each new gradient to the one already stored: what clears it?",
                )
            return Verdict(
                False,
                "weights after one epoch, batches in order",
                "other weights",
                "go through the batches in order, one optimizer step per batch, every example once",
                "count your optimizer steps: one per batch, and the last batch may be smaller",
            )
        loss = report["loss"]
        if isinstance(loss, torch.Tensor) and loss.numel() == 1:
            loss = loss.item()
        if not isinstance(loss, float | int) or isinstance(loss, bool):
            return Verdict(
                False,
                "the mean loss as a float",
                describe(loss),
                "return one Python number: the epoch's loss, averaged over its examples",
            )
        if abs(loss - reference["mean"]) <= 1e-5:
            return Verdict(True)
        hint = next(
            (
                text
                for key, text in _EPOCH_LOSS_MISTAKES.items()
                if abs(loss - reference[key]) <= 1e-5
            ),
            "the epoch's loss is the mean over all its examples: each batch's mean loss stands for "
            "as many examples as the batch has",
        )
        return Verdict(
            False,
            describe(reference["mean"]),
            describe(loss),
            hint,
            "an epoch's loss is an average over examples, not over batches",
        )

    return Case(
        f"{examples} examples in batches of {batch_size}",
        Probe(probe_one_epoch, (seed, examples, batch_size)),
        judge,
    )


# --- Exercise (derive): how many validation images a gap needs ----------------------------------------


def _images_needed(accuracy: float, gap: float, *, settings: int = 2, errors: float = 2.0) -> float:
    """The n, not rounded, at which ``gap`` is ``errors`` standard errors of the difference.

    One accuracy measured on n images has variance p(1 - p)/n; the difference of ``settings``
    = 2 independent ones has twice that (with ``settings`` = 1: the mistake of counting one).
    """
    return errors**2 * settings * accuracy * (1 - accuracy) / gap**2


def _images_needed_case(params: dict) -> Case:
    accuracy, gap = params["accuracy"], params["gap"]
    mistaken = functools.partial(_images_needed, accuracy, gap)
    return compare_with_reference(
        f"accuracy about {accuracy}, a gap of {gap:g}",
        (accuracy, gap),
        reference=lambda p, g: math.ceil(_images_needed(p, g)),
        mistakes=[
            Mistake(
                lambda p, g: math.ceil(mistaken(settings=1)),
                "half the images needed: you used the standard error of one accuracy, but the gap "
                "is a difference of two independent measurements, and their variances add",
                "the gap is a difference of two measurements, each with its own error",
            ),
            Mistake(
                lambda p, g: math.ceil(mistaken(errors=1.0)),
                "a quarter of the images needed: that makes the gap one standard error, and it "
                "must be two",
                "how many standard errors must the gap be?",
            ),
            Mistake(
                lambda p, g: math.ceil(mistaken(settings=1, errors=1.0)),
                "an eighth of the images needed: the gap must be two standard errors, and the "
                "error is that of a difference of two independent measurements",
                "how many standard errors, and of what?",
            ),
            Mistake(
                lambda p, g: mistaken(),
                "right value, but a number of images is whole: round up (rounding down leaves the "
                "gap just short of two standard errors)",
            ),
            Mistake(
                lambda p, g: math.floor(mistaken()),
                "one image short: round up, not down (with one image fewer the gap is just short "
                "of two standard errors)",
            ),
            Mistake(
                lambda p, g: math.ceil(math.sqrt(mistaken())),
                "the standard error shrinks with the square root of the number of images, so the "
                "images needed grow with the square of the ratio, not the ratio",
            ),
        ],
    )


# --- Exercise (debug): a training loop with five planted bugs -----------------------------------------


@functools.cache
def _loop_data(seed: int) -> tuple[Split, Split, Split]:
    """Flattened digits (N, 64): 600 to train on, 300 to validate on, 450 held out."""
    rest, held_out = digits_split(seed=seed)
    train = Split(rest.inputs[:600], rest.targets[:600])
    val = Split(rest.inputs[600:900], rest.targets[600:900])
    return train, val, held_out


def _loop_model(seed: int) -> tuple[nn.Module, nn.Module]:
    """A backbone with dropout (so evaluation mode matters) and a head, seeded."""
    with _seeded(seed):
        return nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Dropout(0.5)), nn.Linear(64, 10)


def prepare_training_loop(seed: int, epochs: int, lr: float, batch_size: int) -> None:
    _loop_data(seed)


LOOP_CHECKS = 6  # cases per run of the loop: one per planted bug, and the outcome
_loop_runs: dict[tuple, list] = {}  # a run's record, and how many more cases may use it


def probe_training_loop(train_classifier, seed: int, epochs: int, lr: float, batch_size: int):
    """What the learner's loop did (see :func:`_instrumented_run`).

    One run serves the LOOP_CHECKS cases of one check, which come one after the other; the
    next check runs the loop again, so a fix made since (in a helper too) is seen.
    """
    key = (train_classifier, seed, epochs, lr, batch_size)
    if key not in _loop_runs:
        record = _instrumented_run(train_classifier, seed, epochs, lr, batch_size)
        _loop_runs[key] = [record, LOOP_CHECKS]
    entry = _loop_runs[key]
    entry[1] -= 1
    if entry[1] <= 0:
        del _loop_runs[key]
    return entry[0]


def _instrumented_run(train_classifier, seed: int, epochs: int, lr: float, batch_size: int):
    """Run the learner's loop on instrumented parts and report what happened, as data.

    The backbone's pre-hook records each forward pass (on validation rows? in training mode?),
    the head's counts its calls, and the loss function given to the learner records what it
    receives (probabilities or logits, batch sizes, values) and, when backward reaches it,
    whether the backbone's gradients still held those of an earlier batch.
    """
    train, val, held_out = _loop_data(seed)
    backbone, head = _loop_model(seed)
    head_before = [p.detach().clone() for p in head.parameters()]
    record = {"forwards": [], "head calls": 0, "losses": [], "sizes": [], "probabilities": []}
    record["stale gradients"] = []

    def before_backbone(module, args):
        x = args[0]
        row = x[0].reshape(-1) if len(x) else x.new_zeros(0)
        on_val = len(row) == val.inputs.shape[1] and bool((val.inputs == row).all(dim=1).any())
        record["forwards"].append([on_val, module.training])

    def before_head(module, args):
        record["head calls"] += 1

    def stale(gradient):
        grads = [p.grad for p in backbone.parameters()]
        record["stale gradients"].append(
            any(g is not None and bool(g.abs().sum() > 0) for g in grads)
        )

    def loss_fn(output, targets):
        loss = F.cross_entropy(output, targets)
        if torch.is_grad_enabled() and loss.requires_grad:
            with torch.no_grad():
                sums = output.sum(dim=1)
                probabilities = bool((output >= 0).all() and (sums - 1).abs().max() < 1e-4)
            record["losses"].append(loss.item())
            record["sizes"].append(len(targets))
            record["probabilities"].append(probabilities)
            loss.register_hook(stale)
        return loss

    hooks = [
        backbone.register_forward_pre_hook(before_backbone),
        head.register_forward_pre_hook(before_head),
    ]
    try:
        with _one_thread(), _seeded(seed):  # dropout's masks too
            result = train_classifier(
                backbone,
                head,
                _copy(train),
                _copy(val),
                loss_fn,
                epochs=epochs,
                lr=lr,
                batch_size=batch_size,
            )
    finally:
        for hook in hooks:
            hook.remove()
    backbone.eval()
    head.eval()
    with torch.no_grad():
        record["val predictions"] = head(backbone(val.inputs)).argmax(dim=1)
        record["held-out predictions"] = head(backbone(held_out.inputs)).argmax(dim=1)
    head_after = [p.detach() for p in head.parameters()]
    record["head changed"] = not all(map(torch.equal, head_before, head_after))
    record["result"] = result
    record["data"] = _fingerprint(train, val, held_out)
    return record


def _epoch_means(losses: list[float], sizes: list[int], examples: int) -> dict[str, list[float]]:
    """Each epoch's loss from the batches the loss function saw: right, and two known mistakes."""
    epochs, current = [], []
    for loss, size in zip(losses, sizes, strict=True):
        current.append((loss, size))
        if sum(s for _, s in current) >= examples:
            epochs.append(current)
            current = []
    return {
        "right": [sum(v * s for v, s in epoch) / examples for epoch in epochs],
        "batch means over examples": [sum(v for v, _ in epoch) / examples for epoch in epochs],
        "mean of batch means": [sum(v for v, _ in epoch) / len(epoch) for epoch in epochs],
    }


def _epoch_list(values: list[float]) -> str:
    """The first three epochs' losses and the last: enough to compare scales."""
    shown = ", ".join(f"{v:.4g}" for v in values[:3])
    more = f", ..., {values[-1]:.4g}" if len(values) > 3 else ""
    return f"{shown}{more} ({len(values)} epochs)"


def _numbers(value) -> list[float] | None:
    if isinstance(value, torch.Tensor) and value.dim() == 1:
        value = value.tolist()
    if isinstance(value, list | tuple) and all(
        isinstance(x, float | int) and not isinstance(x, bool) for x in value
    ):
        return [float(x) for x in value]
    return None


def _close_lists(a: list[float], b: list[float]) -> bool:
    return len(a) == len(b) and all(
        abs(x - y) <= 1e-5 * (1 + abs(y)) for x, y in zip(a, b, strict=True)
    )


def _judge_logits(report: dict) -> Verdict:
    if not report["losses"]:
        return Verdict(
            False,
            "the loss computed by the loss function you were given",
            "no call to it while training",
            "compute every batch's loss with loss_fn, the function passed in",
        )
    shares = sum(report["probabilities"]) / len(report["probabilities"])
    if shares:
        return Verdict(
            False,
            "raw scores (logits) passed to the loss",
            f"probabilities (rows summing to 1) in {shares:.0%} of the training batches",
            "the model ends in a softmax, and nn.CrossEntropyLoss applies its own: the loss gets "
            "a softmax of probabilities and stalls far above 0. Leave the model's outputs raw",
            "what does the loss function expect to receive, and what does your model give it?",
        )
    return Verdict(True)


def _judge_head(report: dict) -> Verdict:
    if report["head calls"] == 0:
        return Verdict(
            False,
            "the head used in every forward pass",
            "the head was never called",
            "the head is defined but never attached: the model must run the backbone, then the head",
            "which layers does your model run?",
        )
    if not report["head changed"]:
        return Verdict(
            False,
            "the head's weights trained",
            "the head's weights are still the random ones it started with",
            "the head runs but never learns: the optimizer updates only the parameters it was "
            "given, so give it the head's too (those of the whole model)",
            "the head's weights never change: which parameters does the optimizer update?",
        )
    return Verdict(True)


def _judge_fresh_gradients(report: dict) -> Verdict:
    stale = sum(report["stale gradients"])
    if stale:
        return Verdict(
            False,
            "each batch's gradient computed from zero",
            f"{stale} of {len(report['stale gradients'])} backward passes added to the previous "
            "batch's gradient",
            "PyTorch adds each new gradient to the one already stored: clear the gradients "
            "(the optimizer's zero_grad) once per batch, before backward",
            "what happens to the gradient of the previous batch when you call backward again?",
        )
    return Verdict(True)


def _epoch_loss_case(params: dict) -> Case:
    def judge(report: dict) -> Verdict:
        examples = len(_loop_data(params["seed"])[0])
        result = report["result"]
        got = _numbers(result.get("train_loss")) if isinstance(result, dict) else None
        if got is None:
            return Verdict(
                False,
                "a dict with train_loss, one number per epoch",
                describe(result)[:120],
                "return the dict the docstring describes",
            )
        means = _epoch_means(report["losses"], report["sizes"], examples)
        expected = means["right"]
        if _close_lists(got, expected):
            return Verdict(True)
        if _close_lists(got, means["batch means over examples"]):
            hint = (
                "your epoch losses are about batch_size times too small: you added up each batch's "
                "mean loss and divided by the number of examples. A batch's mean stands for all of "
                "its examples: weight it by the batch's size"
            )
        elif _close_lists(got, means["mean of batch means"]):
            hint = "weight each batch's mean loss by its size: the last batch is smaller"
        else:
            hint = (
                "each epoch's loss is the mean over its examples of the loss the loss function saw"
            )
        return Verdict(
            False,
            _epoch_list(expected),
            _epoch_list(got),
            hint,
            "compare your epoch losses with the loss at the start, about ln 10: are the units right?",
        )

    return _loop_case("train_loss, epoch by epoch", params, judge)


def _eval_mode_case(params: dict) -> Case:
    def judge(report: dict) -> Verdict:
        val = _loop_data(params["seed"])[1]
        forwards = report["forwards"]
        on_val = [training for is_val, training in forwards if is_val]
        on_train = [training for is_val, training in forwards if not is_val]
        if not on_val:
            return Verdict(
                False,
                "the model run on the validation inputs",
                "no forward pass on them",
                "measure val_accuracy with the trained model's predictions on val",
            )
        if any(on_val):
            return Verdict(
                False,
                "validation measured in evaluation mode",
                f"{sum(on_val)} of {len(on_val)} validation passes in training mode (dropout on)",
                "dropout was still on while measuring: switch the model to evaluation mode before "
                "the validation pass (and back to training mode before training again)",
                "what does dropout do to a model that is being measured?",
            )
        if not all(on_train):
            return Verdict(
                False,
                "training in training mode",
                f"{on_train.count(False)} training passes in evaluation mode (dropout off)",
                "switch the model back to training mode before each epoch's training",
            )
        result = report["result"]
        reported = result.get("val_accuracy") if isinstance(result, dict) else None
        truth = (report["val predictions"] == val.targets).float().mean().item()
        if not isinstance(reported, float | int) or abs(reported - truth) > 1e-6:
            return Verdict(
                False,
                f"val_accuracy {truth:.4f}, the trained model's accuracy on val",
                describe(reported),
                "report the accuracy of the trained model on val, measured in evaluation mode",
            )
        return Verdict(True)

    return _loop_case("the mode of each forward pass", params, judge)


def _outcome_case(params: dict) -> Case:
    target = params["target"]

    def judge(report: dict) -> Verdict:
        if _data_differ(report, *_loop_data(params["seed"])):
            return _CHANGED_DATA
        held_out = _loop_data(params["seed"])[2]
        accuracy = (report["held-out predictions"] == held_out.targets).float().mean().item()
        if accuracy >= target:
            return Verdict(True)
        return Verdict(
            False,
            f"accuracy at least {target:.2f} on digits the loop never saw",
            f"{accuracy:.3f}",
            "the model still learns too little: fix every planted bug, then check again",
            "run the chapter's two sanity checks on your loop: which one fails?",
        )

    return _loop_case(f"held-out digits, at least {target:.0%} right", params, judge)


def _loop_case(description: str, params: dict, judge) -> Case:
    arguments = (params["seed"], params["epochs"], params["lr"], params["batch_size"])
    return Case(description, Probe(probe_training_loop, arguments, prepare_training_loop), judge)


_LOOP_JUDGES = {
    "logits": ("what the loss receives", _judge_logits),
    "head": ("the head's weights", _judge_head),
    "fresh gradients": ("the gradient of each batch", _judge_fresh_gradients),
}


def _training_loop_case(params: dict) -> Case:
    check = params["check"]
    if check in _LOOP_JUDGES:
        description, judge = _LOOP_JUDGES[check]
        return _loop_case(description, params, judge)
    makers = {
        "epoch loss": _epoch_loss_case,
        "eval mode": _eval_mode_case,
        "outcome": _outcome_case,
    }
    return makers[check](params)


# --- Exercise (experiment): scrambled digits within a step budget -------------------------------------

MARGIN = 0.02  # what the learner's model must gain over the plain recipe, on held-out digits


@functools.cache
def _scrambled_digits(seed: int, key: int) -> tuple[Split, Split, Split]:
    """The digits of split ``seed`` as (N, 64) rows, pixels in an order drawn from ``key``, and
    classes renamed.

    A fully connected network learns them as well as the originals; a model trained on
    scikit-learn's digits (which include these test images) is of no help, and without the
    hidden cases' keys the grader's code does not give their test digits away.
    """
    generator = torch.Generator().manual_seed(key)
    pixels, classes = (
        torch.randperm(64, generator=generator),
        torch.randperm(10, generator=generator),
    )
    return tuple(
        Split(split.inputs.flatten(1)[:, pixels], classes[split.targets])
        for split in digits_splits(seed=seed)
    )


def prepare_budget(seed: int, key: int, max_steps: int) -> None:
    _scrambled_digits(seed, key)


def probe_budget(train_within_budget, seed: int, key: int, max_steps: int):
    """Count the optimizer steps of the learner's training; its predictions on the test digits."""
    train, val, test = _scrambled_digits(seed, key)
    steps = []
    hook = register_optimizer_step_post_hook(lambda optimizer, args, kwargs: steps.append(1))
    try:
        with _one_thread(), _seeded(seed):
            model = train_within_budget(_copy(train), _copy(val), max_steps)
    finally:
        hook.remove()
    report = {"steps": len(steps), "data": _fingerprint(train, val, test)}
    if not isinstance(model, nn.Module):
        return {**report, "model": model}
    model.eval()
    with torch.no_grad():
        return {**report, "predictions": model(test.inputs.clone()).argmax(dim=1)}


def plain_recipe(train: Split, max_steps: int, lr: float = 1e-3) -> nn.Module:
    """The baseline: one hidden layer of 64, Adam at its default rate, batches of 64, every step."""
    with _seeded(0):
        model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    order, steps = torch.Generator().manual_seed(0), 0
    while steps < max_steps:
        for batch in torch.randperm(len(train), generator=order).split(64)[: max_steps - steps]:
            optimizer.zero_grad()
            F.cross_entropy(model(train.inputs[batch]), train.targets[batch]).backward()
            optimizer.step()
            steps += 1
    return model


@functools.cache
def baseline_accuracy(seed: int, key: int, max_steps: int) -> float:
    """The plain recipe's accuracy on the test digits of split ``seed`` (grader side)."""
    train, _, test = _scrambled_digits(seed, key)
    with _one_thread():
        model = plain_recipe(train, max_steps)
    with torch.no_grad():
        return (model(test.inputs).argmax(dim=1) == test.targets).float().mean().item()


def _budget_case(params: dict) -> Case:
    seed, key, max_steps = params["seed"], params["key"], params["max_steps"]

    def judge(report: dict) -> Verdict:
        steps = report["steps"]
        if _data_differ(report, *_scrambled_digits(seed, key)):
            return _CHANGED_DATA
        if "predictions" not in report:
            return Verdict(
                False,
                "the trained nn.Module",
                describe(report.get("model")),
                "return the trained model itself",
            )
        if steps == 0:
            return Verdict(
                False,
                f"at most {max_steps} optimizer steps, counted",
                "no optimizer step",
                "train with a torch.optim optimizer: its steps are what the budget counts",
            )
        if steps > max_steps:
            return Verdict(
                False,
                f"at most {max_steps} optimizer steps",
                f"{steps} steps",
                "over budget: every step counts, those of the runs you compared too. Spend fewer "
                "steps on each trial, or try fewer settings",
                "every optimizer step counts, the trials' included",
            )
        test = _scrambled_digits(seed, key)[2]
        predictions = report["predictions"]
        if not isinstance(predictions, torch.Tensor) or predictions.shape != test.targets.shape:
            return Verdict(
                False,
                f"one score per class for each of {len(test)} test rows",
                describe(predictions),
                "the model must map a batch of (N, 64) rows to (N, 10) scores",
            )
        accuracy = (predictions == test.targets).float().mean().item()
        baseline = baseline_accuracy(seed, key, max_steps)
        if accuracy >= baseline + MARGIN:
            return Verdict(True)
        return Verdict(
            False,
            f"test accuracy at least {baseline + MARGIN:.3f} (the plain recipe's {baseline:.3f}, plus "
            f"{MARGIN:.2f})",
            f"{accuracy:.3f} in {steps} steps",
            "with so few steps the learning rate decides: the plain recipe's default rate is far "
            "too small for this budget. Compare a few rates, a factor of about 3 apart, on short "
            "runs judged on val, and spend the rest of the budget on the best",
            "with only this many steps, which setting of the chapter matters most?",
        )

    return Case(
        f"scrambled digits (split {seed}), at most {max_steps} steps",
        Probe(probe_budget, (seed, key, max_steps), prepare_budget),
        judge,
    )


def _loop_params(seed: int) -> list[dict]:
    """One case per planted bug, and one for the outcome, all on one run of the loop."""
    run = {"seed": seed, "epochs": 15, "lr": 1e-2, "batch_size": 64}
    checks = [*_LOOP_JUDGES, "epoch loss", "eval mode"]
    cases = [{**run, "check": check} for check in checks]
    return [*cases, {**run, "check": "outcome", "target": 0.9}]


EXERCISES = [
    Exercise(
        id="ch3.build_classifier",
        title="A classifier with one hidden layer",
        function_name="build_classifier",
        points=1,
        make_case=_build_classifier_case,
        public_params=[{"inputs": 64, "hidden": 32, "classes": 10, "seed": 0}],
        nudge="section 1 of the chapter builds such a model: which layers, in which order, and what "
        "does the loss expect at the end?",
        praise="your model maps a batch to one raw score per class, through a non-linearity.",
        next_step="print your model and count its parameters by hand, then compare with the chapter's "
        "4,810 for 64 hidden units.",
        minutes=4,
    ),
    Exercise(
        id="ch3.accuracy",
        title="Accuracy from logits",
        function_name="accuracy",
        points=1,
        make_case=_accuracy_case,
        public_params=[
            {"seed": 0, "rows": 12, "classes": 4},
            {"seed": 1, "rows": 10, "classes": 10},
        ],
        nudge="an example is right when its highest score is its target's class; accuracy is the share "
        "of right examples",
        praise="you read each example's prediction from its own row and report a share of examples.",
        next_step="compute your model's accuracy on the training and the validation set: what does the "
        "gap tell you?",
        minutes=3,
    ),
    Exercise(
        id="ch3.train_one_epoch",
        title="One epoch of training",
        function_name="train_one_epoch",
        points=2,
        make_case=_train_one_epoch_case,
        public_params=[{"seed": 0, "examples": 40, "batch_size": 16}],
        nudge="the chapter's training loop repeats five steps for each batch (section 1, 'The training "
        "loop'); which of them did you leave out, or put in the wrong order?",
        praise="one clean step per batch, from fresh gradients, and a loss averaged over examples.",
        next_step="shuffle the batches each epoch and watch the epoch loss over a few epochs.",
        minutes=8,
    ),
    Exercise(
        id="ch3.images_needed",
        title="How many validation images a gap needs",
        function_name="images_needed",
        points=1,
        make_case=_images_needed_case,
        public_params=[{"accuracy": 0.97, "gap": 0.015}, {"accuracy": 0.8, "gap": 0.045}],
        nudge="start from the sampling error of one accuracy (section 3 prints it), then ask what the "
        "error of a difference of two independent measurements is",
        praise="you combined two independent errors and solved for the size that makes the gap stand "
        "out.",
        next_step="compare your answer for a one-point gap at 97% with the chapter's 270 validation "
        "images: which of its comparisons could it resolve?",
        kind="derive",
        minutes=8,
    ),
    Exercise(
        id="ch3.train_classifier",
        title="Debug a training loop",
        function_name="train_classifier",
        points=3,
        make_case=_training_loop_case,
        public_params=_loop_params(seed=0),
        nudge="read the loop line by line against the chapter's: what the model ends with, which "
        "parameters the optimizer gets, the five steps per batch, the units of the loss, the mode "
        "while measuring",
        praise="you found all five bugs: the loss gets logits, the head learns, every batch starts "
        "from fresh gradients, the loss is per example, and dropout is off while measuring.",
        next_step="plant one bug at a time back into your fixed loop and run the chapter's two sanity "
        "checks: which bugs does each catch?",
        kind="debug",
        minutes=12,
    ),
    Exercise(
        id="ch3.train_within_budget",
        title="Scrambled digits in 100 steps",
        function_name="train_within_budget",
        points=3,
        make_case=_budget_case,
        public_params=[{"seed": 0, "key": 10_000, "max_steps": 100}],
        nudge="with a budget this small, which of the chapter's hyper-parameters matters most, and "
        "how did the chapter choose it?",
        praise="you spent a small budget where it counts: a rate chosen on validation, not a default.",
        next_step="halve the budget: how does the best rate, and your margin over the plain recipe, "
        "change?",
        kind="experiment",
        minutes=10,
    ),
]
