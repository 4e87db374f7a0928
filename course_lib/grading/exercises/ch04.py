"""Exercises of chapter 4: generalization (solutions/04_generalization.ipynb).

Five exercises: dropout as first published, the early-stopping rule and the cosine schedule worked out
from their descriptions (derive), a training loop with early stopping and four planted bugs
(debug), and regularisation chosen on validation data that must beat plain training on a
split the learner never sees, within a budget of optimizer steps (experiment).

The probes (``probe_*``, ``prepare_*``) run next to the learner's code and only report what
happened; the judges (``_judge_*`` and the closures in ``_*_case``) decide, in the grader.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import math

import torch
import torch.nn.functional as F
from torch.optim.optimizer import register_optimizer_step_post_hook

from course_lib.data import Split, digits_splits, per_class_subset, with_wrong_labels
from course_lib.grading.probing import one_thread
from course_lib.grading.spec import Case, Exercise, Probe, Verdict, describe
from course_lib.models import mlp

# --- the data of the debug and experiment exercises: the chapter's noisy digits ------------------

TRAIN_PER_CLASS = 30  # the chapter's small training set: 300 images
WRONG_LABELS = 0.2  # one label in five replaced by a wrong class


@functools.cache
def _noisy_digits(data_seed: int) -> tuple[Split, Split, torch.Tensor]:
    """(noisy training split, validation split, test inputs) of one draw of the digits.

    The test targets stay out of the kernel: only the judge, in the grader, reads them.
    """
    train, val, test = digits_splits(seed=data_seed)
    small = per_class_subset(train, TRAIN_PER_CLASS, seed=data_seed)
    return with_wrong_labels(small, WRONG_LABELS, seed=data_seed), val, test.inputs


def _copy(split: Split) -> Split:
    """A copy the learner's code may change without changing the cached draw."""
    return Split(split.inputs.clone(), split.targets.clone())


def _test_targets(data_seed: int) -> torch.Tensor:
    """The test labels of a draw (grader side)."""
    return digits_splits(seed=data_seed)[2].targets


def _accuracy(predictions, targets: torch.Tensor) -> float | None:
    """The fraction of ``predictions`` equal to ``targets``; None for an answer of another shape."""
    if not isinstance(predictions, torch.Tensor) or predictions.shape != targets.shape:
        return None
    return (predictions.long() == targets).float().mean().item()


def _predictions(model: torch.nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """Class indices the model predicts, in eval mode and without gradients."""
    model.eval()
    with torch.no_grad():
        return model(inputs).argmax(dim=1)


# --- ch4.dropout (derive) ---------------------------------------------------------------------------

DROPOUT_INPUT_SIZE = 40_000  # enough entries to measure the dropped fraction to within 1%


def _dropout_input(seed: int) -> torch.Tensor:
    """Positive entries (no zeros), so the dropped ones are visible."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(DROPOUT_INPUT_SIZE, generator=generator).abs() + 1.0


def probe_dropout(dropout, p: float, seed: int) -> dict:
    """The learner's dropout on one input, in evaluation and in training; was the input changed?"""
    x = _dropout_input(seed)
    original = x.clone()
    torch.manual_seed(seed)
    evaluated = dropout(x, p, False)
    evaluated = evaluated.clone() if isinstance(evaluated, torch.Tensor) else evaluated
    trained = dropout(x, p, True)
    return {"evaluated": evaluated, "trained": trained, "modified": not torch.equal(x, original)}


def _is_like(answer, x: torch.Tensor) -> bool:
    return isinstance(answer, torch.Tensor) and answer.shape == x.shape and answer.dtype == x.dtype


def _constant_ratio(answer: torch.Tensor, x: torch.Tensor) -> float | None:
    """The one factor ``answer`` is x times, None when the entries have no common factor."""
    ratio = answer / x
    scale = ratio.mean().item()
    return scale if torch.allclose(ratio, torch.full_like(ratio, scale), rtol=1e-5) else None


def _judge_dropout(p: float, seed: int, report: dict) -> Verdict:
    x = _dropout_input(seed)
    evaluated, trained = report["evaluated"], report["trained"]
    for answer, mode in ((evaluated, "evaluation"), (trained, "training")):
        if not _is_like(answer, x):
            return Verdict(
                False,
                f"a {x.dtype} tensor of shape {tuple(x.shape)} in {mode}",
                describe(answer),
                "return a tensor of the same shape and dtype as x: a mask of booleans or of "
                "another dtype must not change x's dtype",
                "compare the shape and dtype of what you return with those of x",
            )
    if report["modified"]:
        return Verdict(
            False,
            "x left unchanged",
            "x was modified in place",
            "x was modified in place: the caller's tensor changed; compute the output as a new "
            "tensor instead of writing into x",
            "after your calls, is the caller's x still what it was?",
        )
    return _judge_training(p, x, trained) or _judge_evaluation(p, x, evaluated)


def _judge_training(p: float, x: torch.Tensor, trained: torch.Tensor) -> Verdict | None:
    dropped = (trained == 0).float().mean().item()
    expected = f"in training, about {p:.0%} of the entries zeroed"
    if abs(dropped - (1 - p)) < 0.01 and abs(p - 0.5) > 0.05:
        return Verdict(
            False,
            expected,
            f"{dropped:.1%} zeroed",
            "p is the probability to DROP an entry, not to keep it (PyTorch's convention)",
            "which fraction of the entries did you zero, and which should p zero?",
        )
    if abs(dropped - p) > 0.01:
        return Verdict(
            False,
            expected,
            f"{dropped:.1%} zeroed",
            "each entry is dropped on its own, with probability p: one random draw per entry, "
            "compared with p",
            "how many entries does your function zero, compared with p?",
        )
    kept = trained != 0
    if torch.equal(trained[kept], x[kept]):
        return None
    scale = _constant_ratio(trained[kept], x[kept])
    inverted = 1 / (1 - p)
    if scale is not None and abs(scale - inverted) < 0.03 * inverted:
        return Verdict(
            False,
            "in training, each kept entry left as it is",
            f"kept entries multiplied by {scale:.4g}",
            "you rescaled the survivors in training, as inverted dropout (section 3) does: in "
            "dropout as first published, training leaves them alone and evaluation makes up "
            "for the dropped entries",
            "in this version, which of the two modes does the rescaling?",
        )
    return Verdict(
        False,
        "in training, each kept entry left as it is",
        "kept entries changed",
        "in training a kept entry is x's own entry, unchanged; only the dropped ones change",
        "look at a few kept entries next to x's: are they equal?",
    )


def _judge_evaluation(p: float, x: torch.Tensor, evaluated: torch.Tensor) -> Verdict:
    right = 1 - p
    scale = _constant_ratio(evaluated, x)
    if scale is not None and abs(scale - right) < 1e-4:
        return Verdict(True)
    expected = f"in evaluation, x times {right:.4g} (the same every call)"
    got = "entries with no common factor" if scale is None else f"x times {scale:.4g}"
    nudge = "in training, what is the average of one output entry over many draws of the mask?"
    mistakes = (
        (
            1.0,
            "evaluation gives x as it is, but in training each entry's expected value was "
            "smaller: the layers after dropout learned on that, so evaluation must give them "
            "the same expected value",
        ),
        (
            1 / right,
            "that is inverted dropout's factor, which enlarges the survivors in training; here "
            "training leaves them alone, so evaluation must shrink x, not enlarge it",
        ),
        (
            p,
            "you scaled by p, the probability to DROP: which fraction of an entry survives "
            "training on average?",
        ),
    )
    for wrong, hint in mistakes:
        if scale is not None and abs(scale - wrong) < 1e-4 and abs(wrong - right) > 1e-3:
            return Verdict(False, expected, got, hint, nudge)
    if scale is not None and abs(scale - right) < 0.03 * right:
        return Verdict(
            False,
            expected,
            got,
            "close, but the factor follows from p alone, not from how many entries one "
            "random draw kept: evaluation draws nothing and gives the same answer every time",
            "does your evaluation draw random numbers?",
        )
    return Verdict(
        False,
        expected,
        got,
        "at evaluation, every entry is x's own entry times one factor, worked out from p so "
        "that it equals the entry's expected value in training",
        nudge,
    )


def _dropout_case(params: dict) -> Case:
    p, seed = params["p"], params["seed"]
    return Case(
        f"p = {p}",
        Probe(probe_dropout, (p, seed)),
        functools.partial(_judge_dropout, p, seed),
    )


# --- ch4.should_stop (derive) -----------------------------------------------------------------------


def _reference_should_stop(val_losses: list[float], patience: int) -> bool:
    best_epoch = val_losses.index(min(val_losses))  # the first epoch that reached the lowest loss
    return len(val_losses) - 1 - best_epoch >= patience


def _stops_when_worse_than_previous(val_losses: list[float], patience: int) -> bool:
    recent = val_losses[-patience - 1 :]
    return len(recent) == patience + 1 and all(
        b >= a for a, b in zip(recent, recent[1:], strict=False)
    )


def _stops_one_epoch_late(val_losses: list[float], patience: int) -> bool:
    return _reference_should_stop(val_losses, patience + 1)  # ">" where the rule has ">="


def _stops_counting_ties(val_losses: list[float], patience: int) -> bool:
    best = min(val_losses)
    last_best = max(i for i, loss in enumerate(val_losses) if loss == best)
    return len(val_losses) - 1 - last_best >= patience


def _every_epoch(decide, losses: list[float], patience: int) -> list[bool]:
    """The decision after each epoch: decide(losses[:1]), decide(losses[:2]), ..."""
    return [bool(decide(list(losses[: end + 1]), patience)) for end in range(len(losses))]


def _asked(losses: list[float], patience: int) -> int:
    """How many times a loop asks: up to and including the epoch where training stops.

    A real loop never asks again, so what a rule says after that epoch is not graded.
    """
    stops = _every_epoch(_reference_should_stop, losses, patience)
    return stops.index(True) + 1 if True in stops else len(losses)


def probe_should_stop(should_stop, val_losses: list[float], patience: int) -> list:
    """The learner's decision after each epoch of ``val_losses``."""
    return [should_stop(list(val_losses[: end + 1]), patience) for end in range(len(val_losses))]


_SHOULD_STOP_MISTAKES = (
    (
        _stops_when_worse_than_previous,
        "compare with the best loss so far, not with the epoch before: a loss can go down and "
        "still not be a new best",
        "which loss does a new epoch have to beat to count as an improvement?",
    ),
    (
        _stops_one_epoch_late,
        "one epoch too late: once the best epoch is exactly `patience` epochs ago, the patience "
        "has run out (count the epochs since the best one, and compare with at-least, not "
        "more-than)",
        "count, on the failing epoch, how many epochs have passed since the best one",
    ),
    (
        _stops_counting_ties,
        "a loss equal to the best is not an improvement: the best epoch is the FIRST one that "
        "reached the lowest value",
        "when two epochs share the lowest loss, which of them is the best epoch?",
    ),
)


def _should_stop_case(params: dict) -> Case:
    losses, patience = params["val_losses"], params["patience"]

    def judge(got: list) -> Verdict:
        if len(got) != len(losses):
            return Verdict(False, f"{len(losses)} decisions", f"{len(got)}")
        asked = _asked(losses, patience)
        expected = _every_epoch(_reference_should_stop, losses, patience)[:asked]
        answered = [bool(decision) for decision in got]
        got = answered[:asked]
        if got == expected:
            return Verdict(True)
        first = next(i for i, (g, e) in enumerate(zip(got, expected, strict=True)) if g != e)
        where = f"after epoch {first + 1} (losses {losses[: first + 1]}): "
        wrong_rules = [
            (_every_epoch(wrong, losses, patience), *rest) for wrong, *rest in _SHOULD_STOP_MISTAKES
        ]
        matches = [m for m in wrong_rules if m[0] == answered] or [
            m for m in wrong_rules if m[0][:asked] == got
        ]
        for _, hint, nudge in matches[:1]:
            return Verdict(False, where + str(expected[first]), str(got[first]), hint, nudge)
        return Verdict(
            False,
            where + str(expected[first]),
            str(got[first]),
            "find the epoch of the lowest loss so far; stop once it lies `patience` or more "
            "epochs back",
        )

    return Case(
        f"patience {patience}, {len(losses)} epochs",
        Probe(probe_should_stop, (losses, patience)),
        judge,
    )


# --- ch4.cosine_lr (derive) -------------------------------------------------------------------------


def _reference_cosine(epoch: int, total_epochs: int, lr_max: float, lr_min: float) -> float:
    return lr_min + (lr_max - lr_min) * (1 + math.cos(math.pi * epoch / total_epochs)) / 2


def _whole_cosine_range(e, t, hi, lo):
    return lo + (hi - lo) * (1 + math.cos(math.pi * e / t))


def _down_to_zero(e, t, hi, lo):
    return hi * (1 + math.cos(math.pi * e / t)) / 2


def _degrees(e, t, hi, lo):
    return lo + (hi - lo) * (1 + math.cos(180 * e / t)) / 2


def _whole_period(e, t, hi, lo):
    return lo + (hi - lo) * (1 + math.cos(2 * math.pi * e / t)) / 2


def _one_epoch_early(e, t, hi, lo):
    return lo + (hi - lo) * (1 + math.cos(math.pi * e / (t - 1))) / 2


def _rising(e, t, hi, lo):
    return lo + (hi - lo) * (1 - math.cos(math.pi * e / t)) / 2


_COSINE_MISTAKES = (
    (
        _whole_cosine_range,
        "your rate starts at twice the range above lr_min: one plus a cosine goes from 2 down "
        "to 0, so it must be halved before it scales the range",
        "what is your rate at epoch 0, and what should it be?",
    ),
    (
        _down_to_zero,
        "the rate should end at lr_min, not at 0: the cosine shapes the distance between "
        "lr_max and lr_min, and lr_min is the floor it sits on",
        "what is your rate at the last epoch, and what should it be?",
    ),
    (
        _degrees,
        "math.cos takes radians: half a turn is pi radians, not 180",
        "which unit does Python's cosine expect its angle in?",
    ),
    (
        _whole_period,
        "half a cosine, not a whole one: the angle goes from 0 to half a turn over the run, "
        "so the rate never climbs back up",
        "does your rate climb again in the second half of the run?",
    ),
    (
        _one_epoch_early,
        "your rate reaches lr_min one epoch early, at the last epoch of the run: the schedule "
        "reaches lr_min at epoch == total_epochs, just after the last epoch, so the angle is "
        "half a turn only there",
        "what is your rate at epoch total_epochs - 1, and at epoch total_epochs?",
    ),
    (
        _rising,
        "your rate climbs from lr_min to lr_max: the schedule starts high and ends low, so "
        "start at the cosine's crest",
        "is your rate at epoch 0 the highest of the run?",
    ),
)


def probe_schedule(cosine_lr, total_epochs: int, lr_max: float, lr_min: float) -> list:
    """The learner's rate for each epoch 0..total_epochs."""
    return [cosine_lr(epoch, total_epochs, lr_max, lr_min) for epoch in range(total_epochs + 1)]


def _schedule(rule, total: int, lr_max: float, lr_min: float) -> list[float]:
    return [rule(epoch, total, lr_max, lr_min) for epoch in range(total + 1)]


def _same_schedule(got: list, expected: list[float]) -> bool:
    return len(got) == len(expected) and all(
        isinstance(g, float | int | torch.Tensor) and abs(float(g) - e) <= 1e-6 * (1 + abs(e))
        for g, e in zip(got, expected, strict=True)
    )


def _cosine_lr_case(params: dict) -> Case:
    total, lr_max, lr_min = params["total_epochs"], params["lr_max"], params["lr_min"]

    def judge(got: list) -> Verdict:
        expected = _schedule(_reference_cosine, total, lr_max, lr_min)
        if _same_schedule(got, expected):  # float32 answers pass
            return Verdict(True)
        for wrong, hint, nudge in _COSINE_MISTAKES:
            if _same_schedule(got, _schedule(wrong, total, lr_max, lr_min)):
                return Verdict(False, describe(expected), describe(got), hint, nudge)
        return Verdict(False, describe(expected), describe(got))

    return Case(
        f"{total} epochs, lr {lr_max:g} down to {lr_min:g}",
        Probe(probe_schedule, (total, lr_max, lr_min)),
        judge,
    )


# --- ch4.train_early_stopped (debug) ----------------------------------------------------------------
#
# The learner gets a training loop with early stopping and four planted bugs. The probe builds the
# model (with dropout, so that the mode matters) and watches every forward call: its mode, whether
# gradients are on, which images it sees, and the loss the loop itself sees at each evaluation.
# Each bug shows on its own in that record, and each is judged as its own case.


def _reference_train_early_stopped(model, train, val, epochs=60, patience=8, lr=1e-3, seed=0):
    """The fixed loop of the solution notebook (grader side: the outcome case compares with it)."""
    torch.manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    best_loss, best_epoch, best_weights = float("inf"), 0, None
    for epoch in range(1, epochs + 1):
        model.train()
        for batch in torch.randperm(len(train)).split(32):
            loss = F.cross_entropy(model(train.inputs[batch]), train.targets[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            val_loss = F.cross_entropy(model(val.inputs), val.targets).item()
        if val_loss < best_loss:
            best_loss, best_epoch, best_weights = val_loss, epoch, copy.deepcopy(model.state_dict())
        elif epoch - best_epoch >= patience:
            break
    model.load_state_dict(best_weights)
    return model


def _debug_model(model_seed: int) -> torch.nn.Module:
    torch.manual_seed(model_seed)
    return mlp(64, [128, 128], 10, dropout=0.3)


def _row_keys(inputs: torch.Tensor) -> list[bytes]:
    return [row.numpy().tobytes() for row in inputs.detach().reshape(len(inputs), -1)]


@functools.cache
def _row_index(data_seed: int) -> dict[bytes, tuple[str, int]]:
    """Each image of the draw -> (its split, its index there); an image in both counts as train."""
    train, val, _ = _noisy_digits(data_seed)
    index = {key: ("val", i) for i, key in enumerate(_row_keys(val.inputs))}
    index.update({key: ("train", i) for i, key in enumerate(_row_keys(train.inputs))})
    return index


class _Recorder:
    """Forward hooks that record what the loop does with the model (see probe_early_stopping)."""

    def __init__(self, model: torch.nn.Module, data_seed: int):
        self.model, self.data_seed = model, data_seed
        self.rounds: list[dict] = []  # one per run of calls without gradients (an evaluation)
        self.snapshots: list[torch.Tensor] = []  # the weights at each evaluation
        self.training = {"calls": 0, "in_eval_mode": 0, "validation_images": 0}
        self.current: dict | None = None

    def before(self, module, args):
        if module is not self.model:  # a copy the loop made (it shares the hooks)
            return
        inputs = args[0]
        rows = [_row_index(self.data_seed).get(key) for key in _row_keys(inputs)]
        if torch.is_grad_enabled():
            self.current = None
            self.training["calls"] += 1
            self.training["in_eval_mode"] += int(not module.training)
            self.training["validation_images"] += sum(1 for r in rows if r and r[0] == "val")
            return
        if self.current is None:
            self.current = {"calls": 0, "in_train_mode": 0, "images": {}, "loss_sum": 0.0}
            self.current["rows"] = 0
            self.rounds.append(self.current)
            self.snapshots.append(_flat_weights(module))
        self.current["calls"] += 1
        self.current["in_train_mode"] += int(module.training)
        self.current["pending"] = rows

    def after(self, module, args, output):
        if module is not self.model or torch.is_grad_enabled() or self.current is None:
            return
        rows = self.current.pop("pending", [])
        images = self.current["images"]
        for split in (r[0] if r else "other" for r in rows):
            images[split] = images.get(split, 0) + 1
        # the loop's validation loss: its outputs on validation images only (a call on other
        # images in the same evaluation, a diagnostic of training accuracy, is no part of it)
        positions = [at for at, r in enumerate(rows) if r and r[0] == "val"]
        if positions and isinstance(output, torch.Tensor) and output.shape[:1] == (len(rows),):
            if output.dim() != 2:
                return
            targets = _noisy_digits(self.data_seed)[1].targets[[rows[at][1] for at in positions]]
            outputs = output[positions].float()
            self.current["loss_sum"] += F.cross_entropy(outputs, targets, reduction="sum").item()
            self.current["rows"] += len(positions)


def _flat_weights(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()]).clone()


def _validation_loss(model: torch.nn.Module, weights: torch.Tensor, val: Split) -> float:
    """The validation loss of ``model`` with these weights, measured as it should be."""
    torch.nn.utils.vector_to_parameters(weights, model.parameters())
    model.eval()
    with torch.no_grad():
        return F.cross_entropy(model(val.inputs), val.targets).item()


def prepare_early_stopping(data_seed: int, model_seed: int, epochs: int, patience: int) -> None:
    _row_index(data_seed)


def probe_early_stopping(
    train_early_stopped, data_seed: int, model_seed: int, epochs: int, patience: int
) -> dict:
    """Run the learner's loop once (shared by the cases of one call) and report what it did.

    Returns ``training`` (how many training calls, how many in eval mode, how many validation
    images they saw), ``rounds`` (per evaluation: calls, calls in train mode, images per
    split, the mean cross-entropy of the loop's own outputs), ``kept`` (the evaluation whose
    weights the returned model has, None if none) and ``predictions`` on the test images.
    """
    with one_thread():
        return _run_early_stopping(train_early_stopped, data_seed, model_seed, epochs, patience)


@functools.lru_cache(maxsize=4)
def _run_early_stopping(function, data_seed, model_seed, epochs, patience) -> dict:
    train, val, test_inputs = _noisy_digits(data_seed)
    model = _debug_model(model_seed).eval()  # as a model is after it was last measured
    measure = copy.deepcopy(model)  # to measure each validated epoch's weights properly
    recorder = _Recorder(model, data_seed)
    handles = [  # functions, not bound methods: a deep copy of the model shares them
        model.register_forward_pre_hook(lambda module, args: recorder.before(module, args)),
        model.register_forward_hook(lambda module, args, out: recorder.after(module, args, out)),
    ]
    try:
        returned = function(model, _copy(train), _copy(val), epochs, patience)
    finally:
        for handle in handles:
            handle.remove()
    rounds = [
        {key: value for key, value in r.items() if key not in ("loss_sum", "rows")}
        | {"loss": r["loss_sum"] / r["rows"] if r["rows"] else None}
        for r in recorder.rounds
    ]
    report = {
        "training": recorder.training,
        "rounds": rounds,
        "honest_losses": [_validation_loss(measure, w, val) for w in recorder.snapshots],
    }
    if not isinstance(returned, torch.nn.Module):
        return report | {"returned": type(returned).__name__}
    weights = _flat_weights(returned)
    kept = [i for i, w in enumerate(recorder.snapshots) if torch.equal(w, weights)]
    return report | {
        "kept": kept[-1] if kept else None,
        "predictions": _predictions(returned, test_inputs),
    }


DEBUG_OUTCOME_MARGIN = 0.03  # the kept model's test accuracy may trail the fixed loop's by this


@functools.cache
def _reference_early_stopping(data_seed, model_seed, epochs, patience) -> dict:
    with one_thread():
        return _run_early_stopping(
            _reference_train_early_stopped, data_seed, model_seed, epochs, patience
        )


def _judge_validation_mode(report: dict) -> Verdict:
    rounds = report["rounds"]
    if not rounds:
        return _no_validation_seen()
    in_train_mode = sum(r["in_train_mode"] for r in rounds)
    if in_train_mode:
        return Verdict(
            False,
            "the model in eval mode whenever the loop validates it",
            f"{in_train_mode} of {sum(r['calls'] for r in rounds)} validation calls in train mode",
            "the validation loss is measured with dropout still on: each epoch's loss is that "
            "of a random sub-network, so early stopping reacts to noise and may keep a "
            "worse epoch",
            "which mode is the model in when the loop measures the validation loss?",
        )
    return Verdict(True)


def _judge_training_mode(report: dict) -> Verdict:
    training = report["training"]
    if training["in_eval_mode"]:
        return Verdict(
            False,
            "the model in train mode for every training step",
            f"{training['in_eval_mode']} of {training['calls']} training steps in eval mode",
            "the model trains in evaluation mode, so dropout is off while it learns: it came "
            "in that mode, or stayed in it after a validation: which line sets the mode for "
            "training, and does it run before every epoch's training steps?",
            "which mode is the model in while it takes its training steps?",
        )
    return Verdict(True)


def _judge_kept_weights(report: dict) -> Verdict:
    losses = [r["loss"] for r in report["rounds"]]
    if not losses or any(loss is None for loss in losses):
        return _no_validation_seen()
    best = losses.index(min(losses))
    kept = report.get("kept")
    dropout_on = any(r["in_train_mode"] for r in report["rounds"])
    measured = "as your loop measured it" + (" (dropout on)" if dropout_on else "")
    expected = f"the weights of epoch {best + 1}, the lowest validation loss {measured}"
    if kept == best:
        return Verdict(True)
    if kept == len(losses) - 1:
        return Verdict(
            False,
            expected,
            f"the weights of the last epoch, {kept + 1}",
            "the weights put back are the last epoch's: what the loop saved as the best is "
            "not a copy but a view of the live parameters, which kept training after the best "
            "epoch",
            "print one weight of what the loop saved, at the best epoch and at the end: did it "
            "change?",
        )
    got = "weights of no validated epoch" if kept is None else f"the weights of epoch {kept + 1}"
    return Verdict(
        False,
        expected,
        got,
        "put back the weights saved at the epoch of the lowest validation loss",
        "which epoch's weights does the returned model have?",
    )


def _judge_leakage(report: dict) -> Verdict:
    leaked = report["training"]["validation_images"]
    if leaked:
        return Verdict(
            False,
            "no validation image in any training batch",
            f"{leaked} validation images in training batches",
            "the validation images are trained on: the loop mixes them into the training set, so "
            "the validation loss no longer measures unseen data and early stopping cannot see "
            "overfitting (nor can it tell you how the model does on unseen digits)",
            "which images end up in the training batches?",
        )
    seen = {split for r in report["rounds"] for split in r["images"]}
    if report["rounds"] and "val" not in seen:
        return Verdict(
            False,
            "validation on the validation images",
            f"validation on: {', '.join(sorted(seen))}",
            "the loop never measures the validation images, so early stopping watches a "
            "split it also trains on or one it cannot trust",
            "which images does the loop measure its validation loss on?",
        )
    return Verdict(True)


def _no_validation_seen() -> Verdict:
    return Verdict(
        False,
        "a validation pass after each epoch, without gradients",
        "no call of the model without gradients",
        "no validation was seen: measure the validation loss after each epoch, with gradients "
        "switched off",
    )


def _judge_outcome(params: dict, report: dict) -> Verdict:
    """The loop's promise: the model returned is the run's best on validation, measured properly."""
    if "returned" in report:
        return Verdict(
            False,
            "the trained model",
            f"a {report['returned']}",
            "return the model, with the best epoch's weights put back",
        )
    honest = report["honest_losses"]
    if not honest:
        return _no_validation_seen()
    best, kept = honest.index(min(honest)), report["kept"]
    if kept is None or honest[kept] > honest[best]:
        got = "weights of no validated epoch" if kept is None else f"epoch {kept + 1}"
        loss = "" if kept is None else f", validation loss {honest[kept]:.4f}"
        return Verdict(
            False,
            f"epoch {best + 1}, the lowest validation loss measured in eval mode "
            f"({honest[best]:.4f})",
            got + loss,
            "the model returned is not the run's best on validation: the cases above name the "
            "bug that chose or kept the wrong epoch",
            "measured in eval mode, which epoch of the run was best, and which did you return?",
        )
    targets = _test_targets(params["data_seed"])
    accuracy = _accuracy(report["predictions"], targets)
    reference = _accuracy(_reference_early_stopping(**params)["predictions"], targets)
    if accuracy is not None and accuracy >= reference - DEBUG_OUTCOME_MARGIN:
        return Verdict(True)
    return Verdict(
        False,
        f"at least {reference - DEBUG_OUTCOME_MARGIN:.1%} test accuracy (the fixed loop: "
        f"{reference:.1%})",
        "unreadable predictions" if accuracy is None else f"{accuracy:.1%}",
        "the kept model tests weaker than the fixed loop's: compare your loop with the one "
        "given, line by line, for a change beyond the four bugs",
    )


_DEBUG_CHECKS = {  # params["check"] -> (the case's description, its judge)
    "eval mode": (
        "the validation loss of one set of weights is the same when measured twice",
        _judge_validation_mode,
    ),
    "train mode": (
        "a training step on the same batch twice gives two different losses",
        _judge_training_mode,
    ),
    "best weights": (
        "the model returned scores the lowest validation loss the loop saw",
        _judge_kept_weights,
    ),
    "leakage": ("each epoch trains on the 300 images of the training split", _judge_leakage),
}


def _run_params(params: dict) -> dict:
    return {key: params[key] for key in ("data_seed", "model_seed", "epochs", "patience")}


def _early_stopping_case(params: dict) -> Case:
    """One check of the debug exercise: one planted bug, or the outcome."""
    run = _run_params(params)
    probe = Probe(probe_early_stopping, tuple(run.values()), prepare=prepare_early_stopping)
    where = f"data seed {run['data_seed']}"
    if params["check"] == "outcome":
        judge = functools.partial(_judge_outcome, run)
        return Case(
            f"the model returned is the run's best, and tests as well as it should ({where})",
            probe,
            judge,
        )
    description, judge = _DEBUG_CHECKS[params["check"]]
    return Case(f"{description} ({where})", probe, judge)


def _early_stopping_params(data_seed: int, model_seed: int) -> list[dict]:
    run = {"data_seed": data_seed, "model_seed": model_seed, "epochs": 60, "patience": 8}
    return [run | {"check": check} for check in (*_DEBUG_CHECKS, "outcome")]


# --- ch4.regularised_classifier (experiment) --------------------------------------------------------
#
# The learner trains on the chapter's kind of data (300 digits, one label in five wrong) with a
# budget of optimizer steps, chooses regularisation on the validation split, and returns a model.
# The probe counts every step any torch optimizer takes during the call and reports the model's
# predictions on a test split; the judge scores them against labels the kernel never had, and
# against plain training on the same draw.

STEP_BUDGET = 1_000  # two runs of the chapter's 50 epochs of 10 batches
EXPERIMENT_MARGIN = 0.03  # above plain training's test accuracy
BASELINE_SEEDS = (0, 1)  # plain training's score is the mean over these seeds


def prepare_experiment(data_seed: int, max_steps: int) -> None:
    _noisy_digits(data_seed)
    _row_index(data_seed)


def probe_experiment(regularised_classifier, data_seed: int, max_steps: int) -> dict:
    """Call the learner's function on one draw; count optimizer steps; predict the test images.

    Returns ``steps`` (optimizer steps taken during the call, by any torch optimizer),
    ``validation_images_trained_on`` (validation images any module saw with gradients on),
    ``predictions`` and ``validation_predictions`` (class indices for the test and the
    validation images, the model in eval mode), or ``returned`` (the type's name) when no
    model came back.
    """
    train, val, test_inputs = _noisy_digits(data_seed)
    counts = {"steps": 0}
    trained_on: set[bytes] = set()  # validation images seen by a module with gradients on
    validation = {key for key, (split, _) in _row_index(data_seed).items() if split == "val"}

    def count_step(optimizer, args, kwargs):
        counts["steps"] += 1

    def count_validation_rows(module, args):
        """Any module called with gradients on: which of its input rows are validation images."""
        if not torch.is_grad_enabled() or not args or not isinstance(args[0], torch.Tensor):
            return
        inputs = args[0]
        if inputs.dim() < 2 or inputs[0].numel() != val.inputs[0].numel():
            return
        trained_on.update(key for key in _row_keys(inputs.float()) if key in validation)

    handles = [
        register_optimizer_step_post_hook(count_step),
        torch.nn.modules.module.register_module_forward_pre_hook(count_validation_rows),
    ]
    try:
        model = regularised_classifier(_copy(train), _copy(val), max_steps)
    finally:
        for handle in handles:
            handle.remove()
    counts["validation_images_trained_on"] = len(trained_on)
    if not isinstance(model, torch.nn.Module):
        return counts | {"returned": type(model).__name__}
    return counts | {
        "predictions": _predictions(model, test_inputs),
        "validation_predictions": _predictions(model, val.inputs),
    }


@functools.cache
def _baseline_accuracy(data_seed: int) -> float:
    """Plain training's test accuracy on a draw (the chapter's 50 epochs, mean over seeds)."""
    from course_lib.lessons.ch04_generalization import Recipe, train_with

    train, val, test_inputs = _noisy_digits(data_seed)
    targets = _test_targets(data_seed)
    scores = []
    with one_thread():
        for seed in BASELINE_SEEDS:
            model, _ = train_with(Recipe(), train, val, seed=seed, epochs=50)
            scores.append(_accuracy(_predictions(model, test_inputs), targets))
    return sum(scores) / len(scores)


def _judge_experiment(data_seed: int, max_steps: int, report: dict) -> Verdict:
    steps = report["steps"]
    budget = f"at most {max_steps:,} optimizer steps"
    if "returned" in report:
        return Verdict(
            False,
            "a trained model (a torch.nn.Module)",
            f"a {report['returned']}",
            "return the model you chose, not its score or its history",
        )
    leaked = report.get("validation_images_trained_on", 0)
    if leaked:
        return Verdict(
            False,
            "no validation image in a forward pass with gradients on",
            f"{leaked} of the validation images",
            "your models trained on validation images: the validation split only chooses. "
            "Once it has been trained on, its score no longer tells how a setting does on "
            "unseen digits (measure it with gradients off, and never fit to it)",
            "which images do your training runs see, and which ones only judge them?",
        )
    if steps > max_steps:
        return Verdict(
            False,
            budget,
            f"{steps:,} steps",
            f"over budget: all your runs together took {steps:,} optimizer steps. Try fewer "
            "candidates, or fewer epochs per candidate (one epoch of 300 images in batches of "
            "32 is 10 steps)",
            "count the steps all your candidate runs take together",
        )
    if steps == 0:
        return Verdict(
            False,
            budget + ", counted on torch's optimizers",
            "no optimizer step counted",
            "the budget is counted on the steps of torch's optimizers: train with one of them "
            "(the chapter's training function does)",
        )
    targets = _test_targets(data_seed)
    accuracy = _accuracy(report["predictions"], targets)
    if accuracy is None:
        return Verdict(
            False,
            f"one class index per test image ({len(targets)})",
            describe(report["predictions"]),
            "the model must map a batch of images like the training inputs to one row of "
            "10 class scores per image",
        )
    baseline = _baseline_accuracy(data_seed)
    target = baseline + EXPERIMENT_MARGIN
    on_validation = _accuracy(
        report.get("validation_predictions"), _noisy_digits(data_seed)[1].targets
    )
    seen = "" if on_validation is None else f"; validation accuracy {on_validation:.1%}"
    expected = (
        f"at most {max_steps:,} steps, and {EXPERIMENT_MARGIN * 100:.0f} points more test "
        "accuracy than plain training (the test score stays hidden: choose on validation)"
    )
    if accuracy >= target:
        return Verdict(True, expected, f"margin reached in {steps:,} steps{seen}")
    got = f"margin missed, in {steps:,} steps{seen}"
    if accuracy > baseline + EXPERIMENT_MARGIN / 2:  # below that, the seeds' noise
        hint = (
            "better than plain training, but not by enough: compare a few regularisers or "
            "strengths on the validation split (section 7's candidates are a good start) and "
            "keep the one that scores best there"
        )
    else:
        hint = (
            "no better than plain training: the network memorises the wrong labels. Switch on "
            "a regulariser that holds memorisation back, at a strength the validation split "
            "chooses, not one you guess"
        )
    return Verdict(
        False,
        expected,
        got,
        hint,
        "which regularisers held memorisation back in section 7, and how did it choose "
        "their strength?",
    )


def _experiment_case(params: dict) -> Case:
    data_seed, max_steps = params["data_seed"], params.get("max_steps", STEP_BUDGET)
    return Case(
        f"300 noisy training digits (draw {data_seed}), a test split you do not see, "
        f"{max_steps:,} steps",
        Probe(probe_experiment, (data_seed, max_steps), prepare=prepare_experiment),
        functools.partial(_judge_experiment, data_seed, max_steps),
    )


EXERCISES = [
    Exercise(
        id="ch4.dropout",
        title="Dropout as first published",
        function_name="dropout",
        points=1,
        make_case=_dropout_case,
        public_params=[{"p": 0.3, "seed": 0}, {"p": 0.5, "seed": 1}],
        nudge="reread section 3 on what dropout does in training and at test time, and ask: "
        "if training drops entries and leaves the survivors alone, what single factor makes "
        "evaluation's output match training's on average?",
        praise="your dropout zeroes the right fraction in training, leaves the survivors "
        "alone, and scales evaluation so that it matches training's expected output.",
        next_step="compare statistics with torch.nn.functional.dropout, PyTorch's inverted "
        "version: the fraction zeroed and the mean in training, and the output in evaluation "
        "(the masks themselves differ, even on the same seed).",
        kind="derive",
        minutes=7,
    ),
    Exercise(
        id="ch4.should_stop",
        title="When early stopping stops",
        function_name="should_stop",
        points=1,
        make_case=_should_stop_case,
        public_params=[
            {"val_losses": [1.0, 0.8, 0.7, 0.75, 0.72, 0.74, 0.71, 0.8], "patience": 3},
            {"val_losses": [0.9, 0.6, 0.7, 0.6, 0.65, 0.62, 0.64, 0.7], "patience": 2},
        ],
        nudge="walk through the first case by hand: after each epoch, which epoch is the best "
        "so far, and how long ago was it?",
        praise="your rule stops exactly when the best epoch is `patience` epochs old, and "
        "treats a tie as no improvement, as the course's EarlyStopping does.",
        next_step="run your rule on section 1's validation losses with patience 3, 10 and "
        "20, and see how much the stopping epoch moves.",
        kind="derive",
        minutes=5,
    ),
    Exercise(
        id="ch4.cosine_lr",
        title="A cosine learning-rate schedule",
        function_name="cosine_lr",
        points=1,
        make_case=_cosine_lr_case,
        public_params=[
            {"total_epochs": 10, "lr_max": 0.1, "lr_min": 0.0},
            {"total_epochs": 7, "lr_max": 3e-3, "lr_min": 1e-4},
        ],
        nudge="sketch the rate against the epoch: where must it be at epoch 0, halfway and at "
        "the end, and which stretch of a cosine wave has that shape?",
        praise="your schedule starts at lr_max, ends at lr_min and follows half a cosine in "
        "between, as torch's CosineAnnealingLR does.",
        next_step="work out the mean rate of your schedule over a run stepped once an epoch, "
        "and compare it with section 6's constant rate of the same area.",
        kind="derive",
        minutes=6,
    ),
    Exercise(
        id="ch4.train_early_stopped",
        title="Debug a training loop with early stopping",
        function_name="train_early_stopped",
        points=2,
        make_case=_early_stopping_case,
        public_params=_early_stopping_params(data_seed=1, model_seed=0),
        nudge="for each line of the loop, ask what the model is doing (training or being "
        "measured), which mode it should be in, and which images it sees",
        praise="your loop measures validation honestly, trains with dropout on, keeps the "
        "best epoch's weights and never trains on the validation images.",
        next_step="add a cosine schedule to your loop and check with section 6 whether it "
        "changes the epoch early stopping keeps.",
        kind="debug",
        minutes=12,
    ),
    Exercise(
        id="ch4.regularised_classifier",
        title="Beat plain training on data you cannot see",
        function_name="regularised_classifier",
        points=2,
        make_case=_experiment_case,
        public_params=[{"data_seed": 1, "max_steps": STEP_BUDGET}],
        nudge="plan the budget first: how many candidate runs of how many epochs fit, and how "
        "will you choose between them without looking at the test set?",
        praise="your model beats plain training by the margin on test splits you never saw, "
        "within the step budget and without training on the validation images.",
        next_step="spend the same budget on three seeds of one setting instead of one seed "
        "of two settings, and see which choice the validation split trusts more.",
        kind="experiment",
        minutes=14,
    ),
]
