"""Exercises of chapter 4: generalization (solutions/04_generalization.ipynb)."""

from __future__ import annotations

import math

import torch

from course_lib.grading.spec import (
    Case,
    Exercise,
    Mistake,
    Verdict,
    compare_with_reference,
    describe,
)


def _dropout_case(params: dict) -> Case:
    p = params["p"]

    def check(dropout) -> Verdict:
        generator = torch.Generator().manual_seed(params["seed"])
        # no zeros, so dropped entries are visible
        x = (
            torch.randn(200_000, generator=generator) + 3.0
        )
        original = x.clone()
        evaluated = dropout(x, p, False)
        if not isinstance(evaluated, torch.Tensor) or not torch.equal(evaluated, original):
            return Verdict(False, "x unchanged when training=False", describe(evaluated),
                           "in evaluation dropout does nothing: return x as it is")
        trained = dropout(x, p, True)
        if not torch.equal(x, original):
            return Verdict(False, "x left unchanged", "x was modified in place",
                           "build a new tensor (x * mask / (1 - p)); do not assign into x")
        if (
            not isinstance(trained, torch.Tensor)
            or trained.shape != x.shape
            or trained.dtype != x.dtype
        ):
            return Verdict(False, f"a {x.dtype} tensor of shape {tuple(x.shape)}", describe(trained),
                           "return a tensor of the same shape and dtype as x (a bool mask times x keeps x's dtype)")
        dropped = (trained == 0).float().mean().item()
        if abs(dropped - (1 - p)) < 0.01 and abs(p - 0.5) > 0.05:
            return Verdict(False, f"about {p:.0%} of the entries zeroed", f"{dropped:.1%} zeroed",
                           "p is the probability to DROP an entry, not to keep it")
        if abs(dropped - p) > 0.01:
            return Verdict(False, f"about {p:.0%} of the entries zeroed", f"{dropped:.1%} zeroed",
                           "drop each entry independently with probability p: keep = torch.rand_like(x) >= p")
        kept = trained != 0
        scale = (trained[kept] / x[kept]).mean().item()
        for wrong, hint in ((1.0, "scale the kept entries by 1 / (1 - p), so the expected value stays x"),
                            (1 - p, "divide the kept entries by (1 - p), do not multiply")):
            if abs(scale - wrong) < 1e-4 and abs(wrong - 1 / (1 - p)) > 1e-3:
                return Verdict(False, f"kept entries multiplied by {1 / (1 - p):.4g}",
                               f"kept entries multiplied by {scale:.4g}", hint)
        if not torch.allclose(trained[kept], x[kept] / (1 - p), rtol=1e-5):
            return Verdict(False, "each kept entry equal to x / (1 - p)", "other values",
                           "keep the entry's own value, divided by (1 - p)")
        return Verdict(True)

    return Case(f"p = {p}", check)


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


def _should_stop_case(params: dict) -> Case:
    losses, patience = params["val_losses"], params["patience"]
    expected = _every_epoch(_reference_should_stop, losses, patience)
    mistakes = [
        (_stops_when_worse_than_previous,
         "compare with the best loss so far, not with the epoch before: a loss can go down and still not be a new best"),
        (_stops_one_epoch_late, "one epoch too late: stop when the best epoch is `patience` epochs ago (>=, not >)"),
        (_stops_counting_ties, "a loss equal to the best is not an improvement: keep the FIRST epoch that reached it"),
    ]

    def check(should_stop) -> Verdict:
        got = _every_epoch(should_stop, losses, patience)
        if got == expected:
            return Verdict(True)
        first = next(i for i, (g, e) in enumerate(zip(got, expected, strict=True)) if g != e)
        where = f"after epoch {first + 1} (losses {losses[: first + 1]}): "
        for wrong, hint in mistakes:
            if got == _every_epoch(wrong, losses, patience):
                return Verdict(False, where + str(expected[first]), str(got[first]), hint)
        return Verdict(False, where + str(expected[first]), str(got[first]),
                       "find the epoch of the lowest loss; stop when it is `patience` or more epochs ago")

    return Case(f"patience {patience}, {len(losses)} epochs", check)


def _reference_cosine(epoch: int, total_epochs: int, lr_max: float, lr_min: float) -> float:
    return lr_min + (lr_max - lr_min) * (1 + math.cos(math.pi * epoch / total_epochs)) / 2


def _cosine_lr_case(params: dict) -> Case:
    total, lr_max, lr_min = params["total_epochs"], params["lr_max"], params["lr_min"]
    epochs = list(range(total + 1))

    def schedule(rule):
        return lambda: [rule(epoch, total, lr_max, lr_min) for epoch in epochs]

    mistakes = [
        Mistake(schedule(lambda e, t, hi, lo: lo + (hi - lo) * (1 + math.cos(math.pi * e / t))),
                "(1 + cos) goes from 2 to 0: halve it, so the rate starts at lr_max"),
        Mistake(schedule(lambda e, t, hi, lo: hi * (1 + math.cos(math.pi * e / t)) / 2),
                "the rate should end at lr_min, not at 0: lr_min + (lr_max - lr_min) * ..."),
        Mistake(schedule(lambda e, t, hi, lo: lo + (hi - lo) * (1 + math.cos(180 * e / t)) / 2),
                "math.cos takes radians: half a turn is math.pi, not 180"),
        Mistake(schedule(lambda e, t, hi, lo: lo + (hi - lo) * (1 + math.cos(2 * math.pi * e / t)) / 2),
                "half a cosine, not a whole one: the angle goes from 0 to pi over the run"),
    ]
    # float32 answers pass
    compare = compare_with_reference(
        (), schedule(_reference_cosine), mistakes, tolerance=1e-6
    )

    def check(cosine_lr) -> Verdict:
        return compare(schedule(cosine_lr))

    return Case(f"{total} epochs, lr {lr_max:g} down to {lr_min:g}", check)


EXERCISES = [
    Exercise(
        id="ch4.dropout",
        title="Inverted dropout",
        function_name="dropout",
        points=1,
        make_case=_dropout_case,
        public_params=[{"p": 0.3, "seed": 0}, {"p": 0.5, "seed": 1}],
        general_hint="mask = torch.rand_like(x) >= p; return x * mask / (1 - p) in training, x otherwise",
    ),
    Exercise(
        id="ch4.should_stop",
        title="When early stopping stops",
        function_name="should_stop",
        points=1,
        make_case=_should_stop_case,
        public_params=[
            {"val_losses": [1.0, 0.8, 0.7, 0.75, 0.72, 0.74, 0.71, 0.8], "patience": 3},
            {"val_losses": [0.9, 0.6, 0.6, 0.65, 0.7], "patience": 2},
        ],
        general_hint="best = val_losses.index(min(val_losses)); stop when len(val_losses) - 1 - best >= patience",
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
        general_hint="lr_min + (lr_max - lr_min) * (1 + math.cos(math.pi * epoch / total_epochs)) / 2",
    ),
]
