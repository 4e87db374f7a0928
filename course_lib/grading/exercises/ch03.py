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
    model.eval()  # layers such as batch norm then treat rows one by one
    with torch.no_grad():
        scores = model(torch.cat(list(probes.values())))
    if not isinstance(scores, torch.Tensor) or scores.dim() == 0 or len(scores) != 10:
        outputs = {"rows": scores}
    else:
        outputs = dict(zip(probes, scores.split([len(x) for x in probes.values()]), strict=True))
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
                "two linear layers in a row are still one linear map: add a non-linearity between "
                "them",
                "could your model learn anything a single linear layer could not?",
            )
        every = torch.cat([outputs[name] for name in ("rows", "a", "b", "a+b", "zero")])
        if (every >= 0).all():
            return Verdict(
                False,
                "raw scores (logits), of either sign",
                "no negative score on any of 10 inputs",
                "the model ends in a non-linearity that clamps its scores at 0: the loss can then "
                "never push a wrong class below 0. End with the last linear layer",
                "which layer produces your model's final scores?",
            )
        return Verdict(True)

    return Case(
        f"inputs {inputs}, hidden {hidden}, classes {classes}",
        Probe(probe_classifier, (inputs, hidden, classes, params["seed"])),
        judge,
    )


# --- Exercise: accuracy ------------------------------------------------------------------------------


def probe_accuracy(accuracy, logits: torch.Tensor, targets: torch.Tensor):
    """The learner's accuracy; a size mismatch (scores read down the wrong axis) as data."""
    try:
        return {"value": accuracy(logits.clone(), targets.clone()), "modified": []}
    except RuntimeError as error:
        if "must match the size" not in str(error):
            raise
        return {"raised": "RuntimeError", "message": str(error)}


_WRONG_AXIS = (
    "you took the highest score down each column, which picks an example per class; "
    "each example's class is the highest score along its row"
)


def _accuracy_case(params: dict) -> Case:
    generator = torch.Generator().manual_seed(params["seed"])
    rows, classes = params["rows"], params["classes"]
    logits = torch.randn(rows, classes, generator=generator)
    targets = torch.randint(classes, (rows,), generator=generator)
    targets[: rows // 2] = logits[: rows // 2].argmax(1)  # about half right: an informative answer
    compared = compare_with_reference(
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
                _WRONG_AXIS,
                "along which dimension are an example's class scores?",
            ),
            Mistake(
                lambda logits, targets: 100 * (logits.argmax(1) == targets).float().mean().item(),
                "that is a percentage: return the share itself, a float between 0 and 1",
                "is your answer between 0 and 1?",
            ),
            Mistake(
                lambda logits, targets: (logits.argmax(1) != targets).float().mean().item(),
                "that is the share of wrong examples, the error rate: count the examples whose "
                "best-scoring class equals the target",
                "does your function count the right examples or the wrong ones?",
            ),
        ],
        shape_hint="return one number (a float), not one value per example",
    )

    def judge(report: dict) -> Verdict:
        if "raised" in report:
            return Verdict(
                False,
                f"one prediction per example ({rows} of them)",
                f"{classes} predictions, one per class: {report['message'][:80]}",
                _WRONG_AXIS,
                "along which dimension are an example's class scores?",
            )
        verdict = compared.judge(report)
        if verdict.passed or verdict.hint:
            return verdict
        return Verdict(
            False,
            verdict.expected,
            verdict.got,
            "read each example's prediction as the index of its highest score, compare it with "
            "its target, and return the share of examples where they agree, as a Python float",
        )

    return Case(compared.description, Probe(probe_accuracy, (logits, targets)), judge)


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
    with torch.no_grad():
        after = F.cross_entropy(model(inputs), targets).item()
    return {
        "after": after,
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
    "after": "that is the loss measured again after the epoch, with the final weights: return the "
    "mean of the losses the batches had while they trained",
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
                "the weights differ from those of one pass over the batches in order: take the "
                "batches in the order of the data (no shuffling), every example once, with one "
                "optimizer step per batch",
                "in which order, and how many times, does your loop see each example?",
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
            "the epoch's loss is the mean over all its examples of the loss each batch had while "
            "it trained: each batch's mean loss stands for as many examples as the batch has",
        )
        nudge = (
            "an epoch's loss is an average over examples, not over batches"
            if abs(loss - reference["mean of batch means"]) <= 1e-5
            else "which losses does your number average, and when were they measured?"
        )
        return Verdict(False, describe(reference["mean"]), describe(loss), hint, nudge)

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
    compared = compare_with_reference(
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
                lambda p, g: math.ceil(_images_needed(p, g, settings=4)),
                "twice the images needed: you added the two standard errors. For independent "
                "measurements the variances add, so the error of the difference is the square "
                "root of 2, not 2, times the error of one",
                "what adds up for two independent measurements: their errors or their variances?",
            ),
            Mistake(
                lambda p, g: math.ceil(_images_needed(p, g, errors=1.96)),
                "you used 1.96, the 95% factor: the task says the gap must be twice the standard "
                "error, so the factor is 2",
                "how many standard errors does the task ask for?",
            ),
            Mistake(
                lambda p, g: math.ceil(_images_needed(p, 100 * g)),
                "you read the gap in percentage points: accuracy and gap are both shares "
                "(0.015 is a gap of 1.5 points), so use them in the same unit",
                "are your accuracy and your gap in the same unit?",
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

    def judge(report: dict) -> Verdict:
        verdict = compared.judge(report)
        if verdict.passed or verdict.hint:
            return verdict
        return Verdict(
            False,
            verdict.expected,
            verdict.got,
            "write the standard error of one accuracy measured on n images, then that of the "
            "difference of two independent ones (their variances add); set the gap equal to two "
            "of those errors, solve for n, and round up",
        )

    return Case(compared.description, compared.probe, judge)


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
    the head's counts its calls, and the loss function given to the learner notes what it
    receives (probabilities or logits?). Only losses that a backward pass reaches are recorded
    (value, batch size, probabilities), so a sanity check or a validation loss on the side does
    not count as training; when backward reaches one, the hook also notes which parameters
    still held a gradient from an earlier batch. A global optimizer hook notes which parameters
    the optimizers own.
    """
    train, val, held_out = _loop_data(seed)
    backbone, head = _loop_model(seed)
    parameters = [*backbone.parameters(), *head.parameters()]
    before = [p.detach().clone() for p in parameters]
    record = {"forwards": [], "head calls": 0, "losses": [], "sizes": [], "probabilities": []}
    record["stale gradients"], optimized = [], set()

    def before_backbone(module, args):
        x = args[0]
        row = x[0].reshape(-1) if len(x) else x.new_zeros(0)
        on_val = len(row) == val.inputs.shape[1] and bool((val.inputs == row).all(dim=1).any())
        record["forwards"].append([on_val, module.training])

    def before_head(module, args):
        record["head calls"] += 1

    def on_step(optimizer, args, kwargs):
        owned = {id(p) for group in optimizer.param_groups for p in group["params"]}
        optimized.update(i for i, p in enumerate(parameters) if id(p) in owned)

    def loss_fn(output, targets):
        loss = F.cross_entropy(output, targets)
        if torch.is_grad_enabled() and loss.requires_grad:
            with torch.no_grad():
                sums = output.sum(dim=1)
                probabilities = bool((output >= 0).all() and (sums - 1).abs().max() < 1e-4)
            value, size = loss.item(), len(targets)

            def on_backward(gradient):
                record["losses"].append(value)
                record["sizes"].append(size)
                record["probabilities"].append(probabilities)
                record["stale gradients"].append(
                    [i for i, p in enumerate(parameters) if _holds_gradient(p)]
                )

            loss.register_hook(on_backward)
        return loss

    hooks = [
        backbone.register_forward_pre_hook(before_backbone),
        head.register_forward_pre_hook(before_head),
        register_optimizer_step_post_hook(on_step),
    ]
    try:
        with _seeded(seed):  # dropout's masks too
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
    changed = [not torch.equal(b, p.detach()) for b, p in zip(before, parameters, strict=True)]
    backbone_size = len(list(backbone.parameters()))
    record["backbone changed"] = any(changed[:backbone_size])
    record["head changed"] = any(changed[backbone_size:])
    record["optimized"] = sorted(optimized)
    record["result"] = result
    record["data"] = _fingerprint(train, val, held_out)
    return record


def _holds_gradient(parameter: torch.Tensor) -> bool:
    return parameter.grad is not None and bool(parameter.grad.abs().sum() > 0)


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
    """A list of numbers from a list, tuple or 1-d tensor (of numbers or 0-d tensors)."""
    if isinstance(value, torch.Tensor) and value.dim() == 1:
        value = value.tolist()
    if not isinstance(value, list | tuple):
        return None
    value = [x.item() if isinstance(x, torch.Tensor) and x.numel() == 1 else x for x in value]
    if all(isinstance(x, float | int) and not isinstance(x, bool) for x in value):
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
            "the loss computed by the loss function you were given, and backward from it",
            "no backward pass from a loss of loss_fn while training",
            "compute every batch's loss with loss_fn, the function passed in, and run backward "
            "from it",
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
    frozen = [name for name in ("backbone", "head") if not report[f"{name} changed"]]
    if frozen:
        return Verdict(
            False,
            "the weights of the backbone and of the head trained",
            f"the {' and the '.join(frozen)}'s weights are still the random ones they started with",
            "part of the model runs but never learns: the optimizer updates only the parameters "
            "it was given, so it must get all of the model's parameters",
            "print a few weights of each layer before and after training: which ones moved?",
        )
    return Verdict(True)


def _judge_fresh_gradients(report: dict) -> Verdict:
    owned = set(report["optimized"])
    passes = report["stale gradients"]
    stale = sum(bool(owned & set(held)) for held in passes)
    if stale:
        return Verdict(
            False,
            "each batch's gradient computed from zero",
            f"{stale} of {len(passes)} backward passes added to the previous batch's gradient",
            "PyTorch adds each new gradient to the one already stored: clear the gradients of "
            "every parameter the optimizer updates, once per batch, before backward",
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
            nudge = "compare your first epoch's loss with ln 10, the loss of a random guess"
        elif _close_lists(got, means["mean of batch means"]):
            hint = "weight each batch's mean loss by its size: the last batch is smaller"
            nudge = "does every example count the same in your epoch's mean?"
        else:
            hint = (
                "each epoch's loss is the mean over its examples of the loss the loss function saw"
            )
            nudge = "what does each epoch's number average, and over what?"
        return Verdict(False, _epoch_list(expected), _epoch_list(got), hint, nudge)

    return _loop_case(LOOP_DESCRIPTIONS["epoch loss"], params, judge)


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

    return _loop_case(LOOP_DESCRIPTIONS["eval mode"], params, judge)


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


LOOP_DESCRIPTIONS = {  # each planted bug's case, named by a symptom a learner could observe
    "logits": "the training loss can fall towards zero",
    "head": "training changes the weights of every layer",
    "fresh gradients": "each update follows its own batch",
    "epoch loss": "the first epoch's loss is near ln 10, the loss of a guess",
    "eval mode": "validation accuracy is the same when measured twice",
}
_LOOP_JUDGES = {
    "logits": _judge_logits,
    "head": _judge_head,
    "fresh gradients": _judge_fresh_gradients,
}


def _training_loop_case(params: dict) -> Case:
    check = params["check"]
    if check in _LOOP_JUDGES:
        return _loop_case(LOOP_DESCRIPTIONS[check], params, _LOOP_JUDGES[check])
    makers = {
        "epoch loss": _epoch_loss_case,
        "eval mode": _eval_mode_case,
        "outcome": _outcome_case,
    }
    return makers[check](params)


# --- Exercise (experiment): scrambled digits within a budget of backward passes -----------------------

# what the learner must gain over the best fixed-rate recipe's mean; one start of it can score
# up to about 0.05 above its mean after 30 steps
MARGIN = 0.09
BATCH = 64  # the budget is max_steps batches of this many rows
BASELINE_RATES = (1e-3, 3e-2)  # Adam's default, and the best rate the chapter printed
BASELINE_SEEDS = (0, 1, 2)  # each fixed-rate recipe is scored by its mean over these starts


@functools.cache
def _scrambled_digits(seed: int, key: int, scale: float) -> tuple[Split, Split, Split]:
    """The digits of split ``seed`` as (N, 64) rows, pixels in an order drawn from ``key``,
    classes renamed, and intensities multiplied by ``scale`` (other units than the chapter's).

    A fully connected network learns them as well as the originals; a model trained on
    scikit-learn's digits (which include these test images) is of no help. The cases' parameters
    ship with the package (see docs/instructors.md), so a determined learner can rebuild the test
    digits: the scrambling keeps honest shortcuts away, it is not a secret.
    """
    generator = torch.Generator().manual_seed(key)
    pixels, classes = (
        torch.randperm(64, generator=generator),
        torch.randperm(10, generator=generator),
    )
    return tuple(
        Split(scale * split.inputs.flatten(1)[:, pixels], classes[split.targets])
        for split in digits_splits(seed=seed)
    )


def prepare_budget(seed: int, key: int, max_steps: int, scale: float) -> None:
    _scrambled_digits(seed, key, scale)


class _BackwardMeter:
    """Counts the rows that reach a backward pass, through any module, and notes parameters.

    A global forward hook sees every module call. A call of a module without children (a layer)
    on inputs that carry no gradient (data, not another layer's output) is where rows enter a
    network; when grad is on, a hook on its output counts those rows each time a backward pass
    goes through it. Each parameter of such a layer is copied when first seen, so the judge can
    tell whether the returned model's parameters were trained.
    """

    def __init__(self):
        self.rows, self.passes, self.first_seen = 0, 0, {}

    def __call__(self, module, args, output):
        if module._modules or not torch.is_grad_enabled():
            return
        for parameter in module.parameters(recurse=False):
            self.first_seen.setdefault(id(parameter), parameter.detach().clone())
        x = args[0] if args else None
        if not isinstance(x, torch.Tensor) or x.requires_grad:
            return
        if isinstance(output, torch.Tensor) and output.requires_grad and output.dim() >= 1:
            output.register_hook(functools.partial(self._count, len(output)))

    def _count(self, rows, gradient):
        self.rows, self.passes = self.rows + rows, self.passes + 1

    def unchanged(self, model: nn.Module) -> int:
        """How many of the model's parameters were never trained, or are as first seen."""
        return sum(
            id(p) not in self.first_seen or torch.equal(self.first_seen[id(p)], p.detach())
            for p in model.parameters()
        )


def probe_budget(train_within_budget, seed: int, key: int, max_steps: int, scale: float):
    """Count the rows the learner's training sent through backward; its test predictions."""
    train, val, test = _scrambled_digits(seed, key, scale)
    meter = _BackwardMeter()
    hook = torch.nn.modules.module.register_module_forward_hook(meter)
    try:
        with _seeded(seed):
            model = train_within_budget(_copy(train), _copy(val), max_steps)
    finally:
        hook.remove()
    report = {
        "rows": meter.rows,
        "passes": meter.passes,
        "data": _fingerprint(train, val, test),
    }
    if not isinstance(model, nn.Module):
        return {**report, "model": model}
    parameters = list(model.parameters())
    report = {**report, "parameters": len(parameters), "unchanged": meter.unchanged(model)}
    model.eval()
    scores = model(test.inputs.clone())  # with grad on: do the scores depend on the parameters?
    depends = isinstance(scores, torch.Tensor) and scores.requires_grad
    return {**report, "depends": depends, "predictions": scores.detach().argmax(dim=1)}


def plain_recipe(train: Split, max_steps: int, lr: float = 1e-3, seed: int = 0) -> nn.Module:
    """A fixed recipe: one hidden layer of 64, Adam at rate ``lr``, batches of 64, every step."""
    with _seeded(seed):
        model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    order, steps = torch.Generator().manual_seed(seed), 0
    while steps < max_steps:
        for batch in torch.randperm(len(train), generator=order).split(BATCH)[: max_steps - steps]:
            optimizer.zero_grad()
            F.cross_entropy(model(train.inputs[batch]), train.targets[batch]).backward()
            optimizer.step()
            steps += 1
    return model


@functools.cache
def baseline_accuracy(seed: int, key: int, max_steps: int, scale: float, lr: float) -> float:
    """A fixed-rate recipe's mean accuracy on the test digits of split ``seed`` (grader side)."""
    train, _, test = _scrambled_digits(seed, key, scale)
    scores = []
    for start in BASELINE_SEEDS:
        model = plain_recipe(train, max_steps, lr, start)
        with torch.no_grad():
            scores.append((model(test.inputs).argmax(dim=1) == test.targets).float().mean().item())
    return sum(scores) / len(scores)


def _budget_case(params: dict) -> Case:
    seed, key, max_steps, scale = (
        params["seed"],
        params["key"],
        params["max_steps"],
        params["scale"],
    )
    budget = max_steps * BATCH

    def judge(report: dict) -> Verdict:
        if _data_differ(report, *_scrambled_digits(seed, key, scale)):
            return _CHANGED_DATA
        if "predictions" not in report:
            return Verdict(
                False,
                "the trained nn.Module",
                describe(report.get("model")),
                "return the trained model itself",
            )
        rows = report["rows"]
        if rows == 0:
            return Verdict(
                False,
                f"at most {budget} rows through backward passes, counted",
                "no backward pass through a torch.nn layer",
                "train the model with backward passes through its torch.nn layers: the rows that "
                "reach them are what the budget counts",
            )
        if rows > budget:
            return Verdict(
                False,
                f"at most {budget} rows through backward passes ({max_steps} batches of {BATCH})",
                f"{rows} rows in {report['passes']} backward passes",
                "over budget: every row that reaches a backward pass counts, in the trials you "
                "compared too, and a full-batch pass costs as many rows as the split has. Spend "
                "fewer steps on each trial, or try fewer settings",
                "every backward pass counts, the trials' included",
            )
        if not report["depends"]:
            return Verdict(
                False,
                "scores computed by the trained parameters",
                "scores that no parameter of the model affects",
                "return a network whose scores come from the parameters you trained",
            )
        if report["unchanged"]:
            return Verdict(
                False,
                "a model whose parameters were all trained here",
                f"{report['unchanged']} of {report['parameters']} parameter tensors untrained",
                "return the model you trained: every one of its parameters must have been "
                "updated by the training the budget counts",
            )
        test = _scrambled_digits(seed, key, scale)[2]
        predictions = report["predictions"]
        if not isinstance(predictions, torch.Tensor) or predictions.shape != test.targets.shape:
            return Verdict(
                False,
                f"one score per class for each of {len(test)} test rows",
                describe(predictions),
                "the model must map a batch of (N, 64) rows to (N, 10) scores",
            )
        accuracy = (predictions == test.targets).float().mean().item()
        baselines = {
            lr: baseline_accuracy(seed, key, max_steps, scale, lr) for lr in BASELINE_RATES
        }
        best_rate, best = max(baselines.items(), key=lambda item: item[1])
        needed = f">= {best + MARGIN:.3f} (the best fixed-rate recipe, rate {best_rate:g}, plus {MARGIN:.2f})"
        if accuracy >= best + MARGIN:
            return Verdict(True, needed, f"{accuracy:.3f} on the test digits")
        fixed = ", ".join(f"rate {lr:g}: {score:.3f}" for lr, score in baselines.items())
        return Verdict(
            False,
            needed,
            f"{accuracy:.3f} in {rows} rows (fixed recipes, {fixed})",
            "neither Adam's default rate nor the chapter's best rate does well here: these inputs "
            "are not on the chapter's scale, and with so few steps a rate that is off by a factor "
            "of 3 costs many points. How did the chapter decide on its rate, and can you do that "
            "here, on val, inside the budget?",
            "with only this many steps, which setting of the chapter matters most?",
        )

    return Case(
        f"scrambled digits (split {seed}), at most {max_steps} batches of {BATCH}",
        Probe(probe_budget, (seed, key, max_steps, scale), prepare_budget),
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
        minutes=3,
    ),
    Exercise(
        id="ch3.accuracy",
        title="Accuracy from logits",
        function_name="accuracy",
        points=1,
        make_case=_accuracy_case,
        public_params=[
            {"seed": 0, "rows": 12, "classes": 4},
            {"seed": 3, "rows": 10, "classes": 10},
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
        minutes=5,
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
        "images. Note what your n buys: a measured gap of that size sits at two standard errors, so "
        "a true gap of that size clears the bar only about half the time; for 80% of the time, use "
        "2 + 0.84 standard errors instead of 2. And the chapter compares settings on the same "
        "images, a paired comparison whose errors are correlated, which needs fewer images than "
        "your independent formula says.",
        kind="derive",
        minutes=7,
    ),
    Exercise(
        id="ch3.train_classifier",
        title="Debug a training loop",
        function_name="train_classifier",
        points=3,
        make_case=_training_loop_case,
        public_params=_loop_params(seed=0),
        nudge="compare the loop line by line with section 1's training loop and evaluation cell, "
        "and run the chapter's two sanity checks on it",
        praise="you found all five bugs: the loss gets logits, the head learns, every batch starts "
        "from fresh gradients, the loss is per example, and dropout is off while measuring.",
        next_step="plant one bug at a time back into your fixed loop and run the chapter's two sanity "
        "checks: which bugs does each catch?",
        kind="debug",
        minutes=12,
    ),
    Exercise(
        id="ch3.train_within_budget",
        title="Scrambled digits in 30 steps",
        function_name="train_within_budget",
        points=3,
        make_case=_budget_case,
        public_params=[{"seed": 0, "key": 10_000, "max_steps": 30, "scale": 30.0}],
        nudge="with a budget this small, which of the chapter's hyper-parameters matters most, and "
        "how did the chapter choose it?",
        praise="your recipe beat both fixed-rate recipes on digits it never saw, within the budget.",
        next_step="print your recipe's val accuracy for each setting it tried, then multiply the "
        "inputs by 10 and by 0.1: how does the best rate move, and why does Adam care?",
        kind="experiment",
        minutes=15,
    ),
]
