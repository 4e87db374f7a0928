"""Exercises of chapter 2: optimizers (solutions/02_optimizers.ipynb).

- ``ch2.momentum_step``: heavy-ball momentum, from the idea (warm-up);
- ``ch2.nesterov_step`` (derive): Nesterov's method from its verbal description, for a
  velocity that holds steps (v <- beta v - lr g, w <- w + v), a convention the chapter did not
  use; the probe records where the learner asks for the gradient;
- ``ch2.adam_step``: Adam's update with bias correction, from a description in words;
- ``ch2.fix_adamw`` (debug): AdamW from scratch with four planted bugs, each graded on its own
  by a probe whose loss makes only that bug visible, and the outcome against ``torch.optim``;
- ``ch2.train_on_a_budget`` (experiment): a digits classifier from a budget of forward
  passes, graded on a test split whose labels stay in the grader.
"""

from __future__ import annotations

import contextlib
import functools
import importlib

import torch
from torch import nn

from course_lib.grading.spec import (
    Case,
    Exercise,
    Mistake,
    Probe,
    Verdict,
    close,
    compare_with_reference,
    describe,
)

# --- ch2.momentum_step ---------------------------------------------------------------------------------


def _momentum_reference(w, grad, velocity, lr, beta):
    velocity = beta * velocity + grad
    return w - lr * velocity, velocity


def _momentum_step_case(params: dict) -> Case:
    generator = torch.Generator().manual_seed(params["seed"])
    shape = params["shape"]
    w, grad, velocity = (torch.randn(shape, generator=generator) for _ in range(3))
    lr, beta = params["lr"], params["beta"]
    case = compare_with_reference(
        f"shape {tuple(shape)}, lr = {lr}, beta = {beta}",
        (w, grad, velocity, lr, beta),
        reference=_momentum_reference,
        mistakes=[
            Mistake(
                lambda w, g, v, lr, b: (w - lr * g, b * v + g),
                "you step along the gradient, not along the new velocity",
                "which of the two does the step follow, the gradient or the velocity?",
            ),
            Mistake(
                lambda w, g, v, lr, b: (w - lr * (b * v + (1 - b) * g), b * v + (1 - b) * g),
                "you dampened the gradient by (1 - beta), as an average would; heavy-ball "
                "momentum adds the full gradient to the decayed velocity",
                "is the velocity an average of gradients, or a decayed sum?",
            ),
            Mistake(
                lambda w, g, v, lr, b: (w + (b * v - lr * g), b * v - lr * g),
                "your velocity holds steps (the rate folded in, with the minus sign); here the "
                "velocity holds gradients: decay it by beta and add the whole gradient, then move "
                "w against it, scaled by lr",
                "what does this exercise's velocity hold: gradients, or steps already scaled by "
                "lr?",
            ),
            Mistake(
                lambda w, g, v, lr, b: (w - lr * (b * v + g), v),
                "the velocity you returned is the old one: the caller needs the updated one for "
                "the next step",
                "which velocity will the next step need?",
            ),
        ],
        shape_hint="return a pair: the new parameters and the new velocity",
        in_place_hint="an input tensor was changed in place: build new tensors for w and the "
        "velocity",
    )
    return _naming_the_outputs(case, _momentum_reference, (w, grad, velocity, lr, beta))


_IN_PLACE_NUDGE = "the caller still holds the tensors you were given: do they keep their values?"


def _listed(names: list[str]) -> str:
    return " and ".join(names)


def _naming_the_outputs(
    case: Case, reference, inputs, names=("the new w", "the new velocity")
) -> Case:
    """The case, with a hint naming which output is off when no mistake matched."""
    expected = reference(*(x.clone() if isinstance(x, torch.Tensor) else x for x in inputs))

    def judge(report) -> Verdict:
        verdict = case.judge(report)
        if report.get("modified") and not verdict.passed:
            return Verdict(False, verdict.expected, verdict.got, verdict.hint, _IN_PLACE_NUDGE)
        value = report.get("value")
        if verdict.passed or verdict.hint or not isinstance(value, tuple | list):
            return verdict
        if len(value) != len(names):
            return verdict
        wrong = [
            n
            for n, got, want in zip(names, value, expected, strict=True)
            if not close(got, want, 1e-5)
        ]
        if not wrong:
            return verdict
        right = [n for n in names if n not in wrong]
        hint = f"{_listed(wrong)} {'is' if len(wrong) == 1 else 'are'} off"
        if right:
            hint += f", {_listed(right)} {'is' if len(right) == 1 else 'are'} right"
        return Verdict(False, verdict.expected, verdict.got, hint + ": compare them line by line")

    return Case(case.description, case.probe, judge)


# --- ch2.nesterov_step (derive) ------------------------------------------------------------------------


def _nesterov_reference(w, velocity, curvature, lr, beta):
    """Nesterov with a velocity that holds steps: v <- beta v - lr g(ahead), w <- w + v."""
    lookahead = w + beta * velocity
    velocity = beta * velocity - lr * (curvature @ lookahead)
    return w + velocity, velocity


def probe_nesterov(nesterov_step, w, velocity, curvature, lr, beta):
    """Call the learner's step with a gradient function that records where it is asked."""
    asked = []

    def gradient_at(point):
        point = torch.as_tensor(point, dtype=w.dtype)
        asked.append(point.detach().clone())
        return curvature @ point

    given = (w.clone(), velocity.clone())
    value = nesterov_step(*given, gradient_at, lr, beta)
    modified = not (torch.equal(given[0], w) and torch.equal(given[1], velocity))
    return {"value": value, "asked_at": asked, "modified": modified}


_WRONG_POINTS = (  # (the point, made from w, v, lr and beta; hint; nudge)
    (
        lambda w, v, lr, beta: w,
        "you asked for the gradient where the weights are: that is heavy-ball momentum. "
        "Nesterov asks where the velocity is about to carry the weights",
        "where will the velocity carry the weights if nothing else changes?",
    ),
    (
        lambda w, v, lr, beta: w - beta * v,
        "your look-ahead goes the wrong way: this velocity holds steps, minus sign included, "
        "so the weights move along it, not against it",
        "in this convention, does w move along +velocity or -velocity?",
    ),
    (
        lambda w, v, lr, beta: w + v,
        "your look-ahead uses the whole old velocity; before any new gradient arrives, the "
        "velocity is first decayed by beta",
        "what happens to the velocity at the start of a step, before the new gradient is added?",
    ),
    (
        lambda w, v, lr, beta: w - lr * beta * v,
        "that is section 1's look-ahead, written for a velocity that holds gradients. Here the "
        "velocity holds steps, with the learning rate and the sign already inside it",
        "how far does this exercise's velocity move the weights in one step?",
    ),
    (
        lambda w, v, lr, beta: w + lr * beta * v,
        "your look-ahead scales the velocity by the learning rate, but this velocity holds "
        "steps: lr is already inside it",
        "how far does this exercise's velocity move the weights in one step?",
    ),
)

_NESTEROV_IN_PLACE = (
    "an input tensor was changed in place: build new tensors for w and the velocity, as in "
    "Exercise 2.1"
)


def _nesterov_case(params: dict) -> Case:
    generator = torch.Generator().manual_seed(params["seed"])
    size = params["size"]
    basis = torch.linalg.qr(torch.randn(size, size, generator=generator, dtype=torch.float64))[0]
    curvature = basis @ torch.diag(torch.logspace(0, 1, size, dtype=torch.float64)) @ basis.T
    w, velocity = (torch.randn(size, generator=generator, dtype=torch.float64) for _ in range(2))
    velocity = params["lr"] * velocity  # a velocity of steps: the size of a step
    lr, beta = params["lr"], params["beta"]
    expected_w, expected_velocity = _nesterov_reference(w, velocity, curvature, lr, beta)
    lookahead = w + beta * velocity

    def judge(report) -> Verdict:
        asked, value = report["asked_at"], report["value"]
        if report["modified"]:
            return Verdict(
                False,
                "the inputs left unchanged",
                "an input modified in place",
                _NESTEROV_IN_PLACE,
                _IN_PLACE_NUDGE,
            )
        if len(asked) != 1:
            return Verdict(
                False,
                "one call of gradient_at",
                f"{len(asked)} calls",
                "a step needs exactly one gradient, at one well-chosen point",
            )
        if not close(asked[0], lookahead, 1e-6):
            for make, hint, nudge in _WRONG_POINTS:
                if close(asked[0], make(w, velocity, lr, beta), 1e-6):
                    return Verdict(False, describe(lookahead), describe(asked[0]), hint, nudge)
            return Verdict(
                False,
                f"the gradient asked at {describe(lookahead)}",
                f"asked at {describe(asked[0])}",
                "ask for the gradient where the velocity alone would carry the weights",
            )
        if close(value, (expected_w, expected_velocity), 1e-6):
            return Verdict(True)
        expected = describe((expected_w, expected_velocity))
        gradient = curvature @ lookahead
        shifted = w - lr * gradient + beta * expected_velocity
        if isinstance(value, tuple | list) and len(value) == 2 and close(value[0], shifted, 1e-6):
            return Verdict(
                False,
                expected,
                describe(value),
                "you asked at the right point, then stepped as the shifted form does; that "
                "form tracks the look-ahead point, not w. Here, after the look-ahead gradient, "
                "the step is an ordinary momentum step in this convention",
                "once you have the look-ahead gradient, how do the velocity and w change?",
            )
        return Verdict(
            False,
            expected,
            describe(value),
            "the gradient is asked at the right point; the velocity update or the step after it "
            "is off: return (new w, new velocity), the velocity holding the step just taken",
        )

    return Case(
        f"a {size}-dimensional bowl, lr = {lr}, beta = {beta}",
        Probe(probe_nesterov, (w, velocity, curvature, lr, beta)),
        judge,
    )


# --- ch2.adam_step ------------------------------------------------------------------------------------


def _adam_reference(w, grad, m, v, t, lr, beta1, beta2, eps, *, correct_m=True, correct_v=True):
    m = beta1 * m + (1 - beta1) * grad
    v = beta2 * v + (1 - beta2) * grad**2
    m_hat = m / (1 - beta1**t) if correct_m else m
    v_hat = v / (1 - beta2**t) if correct_v else v
    return w - lr * m_hat / (v_hat.sqrt() + eps), m, v


def _adam_step_case(params: dict) -> Case:
    generator = torch.Generator().manual_seed(params["seed"])
    shape, t = params["shape"], params["t"]
    w, grad = torch.randn(shape, generator=generator), torch.randn(shape, generator=generator)
    if t == 1:
        m, v = torch.zeros(shape), torch.zeros(shape)
    else:
        m, v = (
            0.1 * torch.randn(shape, generator=generator),
            0.01 * torch.rand(shape, generator=generator),
        )
    lr, beta1, beta2, eps = params["lr"], 0.9, 0.999, 1e-8
    inputs = (w, grad, m, v, t, lr, beta1, beta2, eps)
    first = "your first step is 10x too small" if t == 1 else "your steps are too small early on"
    case = compare_with_reference(
        f"step t = {t}, shape {tuple(shape)}, lr = {lr}",
        inputs,
        reference=_adam_reference,
        mistakes=[
            Mistake(
                lambda *a: _adam_reference(*a, correct_m=False),
                f"bias correction missing for m: {first}; m starts at zero and needs correcting "
                "by the share of weight its average has gathered after t steps (section 3)",
                "m starts at zero: after one step, how large is it compared with the gradient?",
            ),
            Mistake(
                lambda *a: _adam_reference(*a, correct_v=False),
                "bias correction missing for v: correct v the way you corrected m (with beta2), "
                "before the square root",
                "v starts at zero too: is it corrected?",
            ),
            Mistake(
                lambda *a: _adam_reference(*a, correct_m=False, correct_v=False),
                "bias correction missing for both m and v: the first step is about 3x too large",
                "both averages start at zero: what does that do to the first steps?",
            ),
            Mistake(
                lambda w, g, m, v, t, lr, b1, b2, eps: _adam_reference(
                    w, g, m, v, t + 1, lr, b1, b2, eps
                ),
                "off by one in t: the first step counts as t = 1 in the bias correction",
                "which t does the very first step have?",
            ),
        ],
        shape_hint="return a triple: the new parameters, the new m and the new v",
        in_place_hint="an input tensor was changed in place: the caller keeps the old w, m "
        "and v, so build new tensors and return them",
    )
    return _naming_the_outputs(
        case, _adam_reference, inputs, ("the new w", "the new m", "the new v")
    )


# --- ch2.fix_adamw (debug) -----------------------------------------------------------------------------
# The learner gets AdamW with four bugs: the moments re-created at every step, weight decay
# added to the gradient (Adam with L2, not AdamW), a step divided by v-hat instead of its
# square root, and gradients never zeroed. Each probe's loss makes exactly one visible:
# - decay: a loss with zero gradient, so only the decay moves the weights;
# - moments: a gradient of +-1 per coordinate, no decay, the gradient cleared by the loss
#   itself, so that the step is exactly lr whatever the root, and only lost moments change it;
# - units: one step (no history to lose or pile up), gradients of size 4, no decay;
# - zeroing: the gradient's accumulation observed by a hook, whatever the steps do.


class _WriteItFromScratch(RuntimeError):
    pass


def _refuse(*args, **kwargs):
    raise _WriteItFromScratch(
        "write AdamW from scratch: torch's and course_lib's optimizers are off during this check"
    )


@contextlib.contextmanager
def _without_ready_made_optimizers():
    """Every torch.optim.Optimizer (torch's, course_lib.optim's) refuses to be built meanwhile."""
    functional = [importlib.import_module(f"torch.optim.{name}") for name in ("adam", "adamw")]
    patched = [
        (torch.optim.Optimizer, "__init__"),
        (functional[0], "adam"),
        (functional[1], "adamw"),
    ]
    saved = [(owner, name, owner.__dict__[name]) for owner, name in patched]
    try:
        for owner, name, _ in saved:
            setattr(owner, name, _refuse)
        yield
    finally:
        for owner, name, original in saved:
            setattr(owner, name, original)


def probe_adamw(adamw, kind, w0, slopes, steps, lr, weight_decay):
    """The learner's path on a linear loss ``slopes . w`` (``kind`` "linear"), or zero ("flat")."""

    def loss_fn(w):
        if w.grad is not None:  # no gradient history: piling up is graded elsewhere
            w.grad = None
        return (w * slopes).sum() if kind == "linear" else (w * 0).sum()

    with _without_ready_made_optimizers():
        return adamw(loss_fn, w0.clone(), steps, lr=lr, weight_decay=weight_decay)


def probe_adamw_zeroing(adamw, w0, scales, steps, lr):
    """Whether the gradient in .grad after each backward was that step's gradient alone."""
    fresh, hooked, report = [], set(), []

    def check(w):
        report.append(bool(torch.allclose(w.grad, fresh[-1], rtol=1e-6, atol=1e-9)))

    def loss_fn(w):
        if w.is_leaf and w.requires_grad and id(w) not in hooked:
            w.register_post_accumulate_grad_hook(check)
            hooked.add(id(w))
        fresh.append((scales * w).detach().clone())
        return 0.5 * (scales * w * w).sum()

    with _without_ready_made_optimizers():
        adamw(loss_fn, w0.clone(), steps, lr=lr, weight_decay=0.0)
    return report


def probe_adamw_outcome(adamw, w0, curvature, centre, steps, lr, weight_decay):
    """The learner's path on the bowl 0.5 (w - c)^T H (w - c)."""

    def loss_fn(w):
        offset = w - centre
        return 0.5 * offset @ curvature @ offset

    with _without_ready_made_optimizers():
        return adamw(loss_fn, w0.clone(), steps, lr=lr, weight_decay=weight_decay)


def _last_of(path) -> torch.Tensor:
    if not isinstance(path, list | tuple) or not path or not isinstance(path[-1], torch.Tensor):
        raise ValueError("not a path")
    return path[-1].detach().double()


_PATH_NEEDED = Verdict(
    False,
    "a list with the weights after each step",
    "",
    "return the list of weights after each step",
)


def _decay_case(params: dict) -> Case:
    w0, steps, lr, decay = torch.linspace(-2.0, 2.0, 6, dtype=torch.float64), 5, 0.01, 0.1
    expected = w0 * (1 - lr * decay) ** steps

    def judge(path) -> Verdict:
        try:
            got = _last_of(path)
        except ValueError:
            return _PATH_NEEDED
        if close(got, expected, 1e-7):
            return Verdict(True)
        if close(got, w0 * (1 - decay) ** steps, 1e-7):
            hint = (
                "your decay shrinks by weight_decay per step; torch's AdamW (and this one) "
                "shrinks by lr times weight_decay"
            )
        elif close(got, w0, 1e-9):
            hint = "the weights did not decay at all: the decay is missing"
        else:
            hint = (
                "the decay went through the adaptive step: added to the gradient, it is divided "
                "by the root of v-hat like the rest, so a weight with tiny gradients decays far "
                "too fast. That is Adam with L2, not AdamW: shrink the weights by their own "
                "factor, apart from the gradient"
            )
        return Verdict(
            False,
            f"each weight decayed as AdamW promises (section 3): {describe(expected)}",
            describe(got),
            hint,
            "with a zero gradient, what should weight decay alone do to a weight, per step?",
        )

    return Case(
        "probe A: five steps on a loss with zero gradient",
        Probe(probe_adamw, ("flat", w0, torch.zeros_like(w0), steps, lr, decay)),
        judge,
    )


def _moments_case(params: dict) -> Case:
    w0 = torch.zeros(4, dtype=torch.float64)
    slopes, steps, lr = torch.tensor([1.0, -1.0, 1.0, -1.0], dtype=torch.float64), 4, 0.01
    expected = w0 - steps * lr * slopes

    def judge(path) -> Verdict:
        try:
            got = _last_of(path)
        except ValueError:
            return _PATH_NEEDED
        if close(got, expected, 1e-6):
            return Verdict(True)
        return Verdict(
            False,
            f"{steps} steps of exactly lr against a constant gradient: {describe(expected)}",
            describe(got),
            "m and v start again from zero at every step, so the bias correction for step t "
            "divides averages that hold one gradient, not t of them. Create the moments once, "
            "before the loop, and carry them from step to step",
            "with a gradient that never changes, m-hat should equal it at every step: does it?",
        )

    return Case(
        "probe B: four steps against a constant gradient",
        Probe(probe_adamw, ("linear", w0, slopes, steps, lr, 0.0)),
        judge,
    )


def _units_case(params: dict) -> Case:
    w0 = torch.zeros(4, dtype=torch.float64)
    slopes, lr = torch.tensor([4.0, -4.0, 4.0, 4.0], dtype=torch.float64), 0.01
    expected = w0 - lr * slopes.sign()

    def judge(path) -> Verdict:
        try:
            got = _last_of(path)
        except ValueError:
            return _PATH_NEEDED
        if close(got, expected, 1e-6):
            return Verdict(True)
        if close(got, w0 - lr * slopes / slopes**2, 1e-6):
            hint = (
                "your first step is lr / |g|, not lr: you divide by v-hat, which has the units "
                "of a gradient squared. Divide by its square root, so the step has the units of "
                "lr whatever the gradient's scale"
            )
        else:
            hint = "Adam's first step moves every weight by about lr against its gradient's sign"
        return Verdict(
            False,
            f"a first step of lr against each gradient: {describe(expected)}",
            describe(got),
            hint,
            "double every gradient: should Adam's step change?",
        )

    return Case(
        "probe C: one step, gradients of size 4",
        Probe(probe_adamw, ("linear", w0, slopes, 1, lr, 0.0)),
        judge,
    )


def _zeroing_case(params: dict) -> Case:
    w0 = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    scales = torch.tensor([1.0, 3.0, 10.0], dtype=torch.float64)

    def judge(report) -> Verdict:
        if all(report):
            return Verdict(True)
        return Verdict(
            False,
            "each backward's gradient alone in .grad",
            f"gradients piled up from step {report.index(False) + 1} on",
            "backward() adds to the .grad already there, so every step used the sum of all "
            "gradients so far. Clear the gradient after each step",
            "what does backward() do to a .grad that already holds a value?",
        )

    return Case(
        "probe D: the gradient in .grad after each backward",
        Probe(probe_adamw_zeroing, (w0, scales, 3, 0.01)),
        judge,
    )


def _torch_adamw_path(w0, curvature, centre, steps, lr, weight_decay, decay_after=False):
    """Where torch.optim.AdamW ends on the bowl, from w0.

    With ``decay_after``, where it would end if the decay came after Adam's step (torch's Adam
    without decay, then the shrinking).
    """
    w = w0.clone().requires_grad_(True)
    if decay_after:
        optimizer = torch.optim.Adam([w], lr=lr)
    else:
        optimizer = torch.optim.AdamW([w], lr=lr, weight_decay=weight_decay)
    for _ in range(steps):
        optimizer.zero_grad()
        offset = w - centre
        (0.5 * offset @ curvature @ offset).backward()
        optimizer.step()
        if decay_after:
            with torch.no_grad():
                w.mul_(1 - lr * weight_decay)
    return w.detach()


def _adamw_outcome_case(params: dict) -> Case:
    generator = torch.Generator().manual_seed(params["seed"])
    size, steps, lr, decay = 5, params["steps"], 0.05, 0.1
    basis = torch.linalg.qr(torch.randn(size, size, generator=generator, dtype=torch.float64))[0]
    curvature = basis @ torch.diag(torch.logspace(-1, 1, size, dtype=torch.float64)) @ basis.T
    centre, w0 = (torch.randn(size, generator=generator, dtype=torch.float64) for _ in range(2))
    inputs = (w0, curvature, centre, steps, lr, decay)
    expected = _torch_adamw_path(*inputs)

    def judge(path) -> Verdict:
        try:
            got = _last_of(path)
        except ValueError:
            return _PATH_NEEDED
        if len(path) != steps:
            return Verdict(False, f"{steps} entries", f"{len(path)} entries", "one entry per step")
        if close(got, expected, 1e-6):
            return Verdict(True)
        if close(got, _torch_adamw_path(*inputs, decay_after=True), 1e-6):
            return Verdict(
                False,
                f"where torch.optim.AdamW ends: {describe(expected)}",
                describe(got),
                "your decay comes after Adam's step, so it also shrinks the step; torch's AdamW "
                "shrinks the weights first, then takes the step",
                "in which order do the shrinking and Adam's step come?",
            )
        hint = "your AdamW and torch's part ways on a real loss: fix the cases above first"
        return Verdict(
            False, f"where torch.optim.AdamW ends: {describe(expected)}", describe(got), hint
        )

    return Case(
        f"the outcome: {steps} steps on a bowl end where torch.optim.AdamW does",
        Probe(probe_adamw_outcome, inputs),
        judge,
    )


def _fix_adamw_case(params: dict) -> Case:
    return {
        "decay": _decay_case,
        "moments": _moments_case,
        "units": _units_case,
        "zeroing": _zeroing_case,
        "outcome": _adamw_outcome_case,
    }[params["check"]](params)


# --- ch2.train_on_a_budget (experiment) ----------------------------------------------------------------

EXAMPLE_BUDGET = 3200  # examples through the model in training: about 3 epochs of 1077
TARGET_ACCURACY = 0.90


@functools.cache
def _digits(seed: int):
    """(train inputs, train targets, test inputs, test targets), images flattened to 64."""
    from course_lib.data import digits_splits

    train, _, test = digits_splits(seed=seed)
    return train.inputs.flatten(1), train.targets, test.inputs.flatten(1), test.targets


def _small_network(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


def prepare_digits(split_seed, model_seed, budget):
    """Load the split before the time limit starts."""
    _digits(split_seed)


def probe_digits(train_on_a_budget, split_seed, model_seed, budget):
    """Train the probe's network with the learner's function; count training examples.

    Returns the trained network's predicted classes on the test inputs (their labels stay in
    the grader) and the number of examples that went through the network with gradients on.
    """
    train_x, train_y, test_x, _ = _digits(split_seed)
    model = _small_network(model_seed)
    first_layer, seen = model[0], [0]

    def count(module, inputs):
        # every forward through the network passes its first layer, whoever calls it and how
        if module is not first_layer or not torch.is_grad_enabled():
            return
        if inputs and isinstance(inputs[0], torch.Tensor):
            seen[0] += len(inputs[0]) if inputs[0].dim() > 1 else 1

    hook = nn.modules.module.register_module_forward_pre_hook(count)
    try:
        train_on_a_budget(model, train_x.clone(), train_y.clone(), budget)
    finally:
        hook.remove()
    model.eval()
    with torch.no_grad():
        predictions = model(test_x).argmax(dim=1)
    return {"predictions": predictions, "examples": seen[0]}


def _train_on_a_budget_case(params: dict) -> Case:
    split_seed, model_seed, budget = params["split_seed"], params["model_seed"], EXAMPLE_BUDGET

    def judge(report) -> Verdict:
        labels = _digits(split_seed)[3]
        spent, predictions = report["examples"], report["predictions"]
        if spent > budget:
            return Verdict(
                False,
                f"at most {budget} training examples through the network",
                f"{spent}",
                f"over budget: every forward pass with gradients on costs its batch's size, "
                f"and all of them together may cost at most {budget}",
                "count the examples of every batch you train on",
            )
        if not isinstance(predictions, torch.Tensor) or predictions.shape != labels.shape:
            return Verdict(False, "class predictions", describe(predictions), "")
        accuracy = (predictions == labels).double().mean().item()
        got = f"{accuracy:.1%} on the hidden test split, {spent} training examples"
        wanted = f"at least {TARGET_ACCURACY:.0%} on the hidden test split"
        if spent == 0:  # trained by some route the count cannot see, or not at all
            return Verdict(False, wanted, got, *_digits_advice(accuracy, spent, budget))
        if accuracy >= TARGET_ACCURACY:
            return Verdict(True, f">= {TARGET_ACCURACY:.0%}", got)
        return Verdict(False, wanted, got, *_digits_advice(accuracy, spent, budget))

    return Case(
        f"digits split {split_seed}, network seed {model_seed}, {budget} examples",
        Probe(probe_digits, (split_seed, model_seed, budget), prepare=prepare_digits),
        judge,
    )


def _digits_advice(accuracy: float, spent: int, budget: int) -> tuple[str, str]:
    """(hint, nudge) for a network that missed the target."""
    if spent == 0:
        return (
            "the network was not trained: no example went through its layers with gradients "
            "on. Train the network you are given, in place, by calling it on batches",
            "train the network you are given, in place",
        )
    if spent < budget // 2:
        return (
            f"you used {spent} of {budget} examples: more training was on offer",
            "how many batches does the budget allow?",
        )
    if accuracy < 0.2:
        return (
            "near chance: the rate is far off, too small to move or so large the network "
            "collapsed to one class; section 5 measured how far apart good rates are",
            "try learning rates a factor of ten apart, on the validation split",
        )
    return (
        "trained, but not far enough in the budget: section 5 found the learning rate matters "
        "more than the optimizer. Your learning rate is likely too small for this budget: "
        "tune it on a log scale on the validation split",
        "which learning rates did you try, and how far apart?",
    )


# --- the exercises ----------------------------------------------------------------------------------

EXERCISES = [
    Exercise(
        id="ch2.momentum_step",
        title="A momentum step",
        function_name="momentum_step",
        points=1,
        make_case=_momentum_step_case,
        public_params=[{"seed": 0, "shape": [3], "lr": 0.1, "beta": 0.9}],
        nudge="the velocity remembers past gradients, decayed by beta; the step follows the "
        "velocity, not the gradient",
        praise="your velocity decays by beta and adds the whole gradient, and the step follows it.",
        next_step="run your step on the chapter 1 bowl with beta = 0.9 and 0.99 and count the "
        "overshoots.",
        kind="implement",
        minutes=4,
    ),
    Exercise(
        id="ch2.nesterov_step",
        title="Nesterov, from its description",
        function_name="nesterov_step",
        points=2,
        make_case=_nesterov_case,
        public_params=[
            {"seed": 0, "size": 2, "lr": 0.1, "beta": 0.9},
            {"seed": 1, "size": 4, "lr": 0.05, "beta": 0.5},
        ],
        nudge="section 1 describes Nesterov for a velocity of gradients; here the velocity "
        "holds steps. Where does this velocity carry the weights if nothing else changes?",
        praise="you translated Nesterov's look-ahead into a convention the chapter did not "
        "use, and finished with a momentum step in it.",
        next_step="show that your step and torch's SGD with nesterov=True, run side by side, "
        "follow the same path one look-ahead apart, once you convert the velocities.",
        kind="derive",
        minutes=8,
    ),
    Exercise(
        id="ch2.adam_step",
        title="An Adam step with bias correction",
        function_name="adam_step",
        points=2,
        make_case=_adam_step_case,
        public_params=[
            {"seed": 0, "shape": [4], "t": 1, "lr": 1e-3},
            {"seed": 1, "shape": [2, 3], "t": 5, "lr": 1e-2},
        ],
        nudge="m and v are moving averages of the gradient and of its square, and both start "
        "at zero: what does that do to the first steps?",
        praise="your moving averages, their bias correction and the step all match torch's Adam.",
        next_step="print the size of your first ten steps on a constant gradient, with and "
        "without the correction: which steps does it change, and by how much?",
        kind="implement",
        minutes=8,
    ),
    Exercise(
        id="ch2.fix_adamw",
        title="Fix AdamW",
        function_name="adamw",
        points=2,
        make_case=_fix_adamw_case,
        public_params=[
            {"check": "decay"},
            {"check": "moments"},
            {"check": "units"},
            {"check": "zeroing"},
            {"check": "outcome", "seed": 0, "steps": 30},
        ],
        nudge="feed it losses whose answer you know: a zero gradient, a constant one, one "
        "step; and compare with torch.optim.AdamW",
        praise="you found all four: moments that forgot, decay inside the adaptive step, a "
        "step in the wrong units, and gradients that piled up, and wrote AdamW yourself.",
        next_step="switch the decay into the gradient on purpose and rerun section 3's noise "
        "experiment with your function.",
        kind="debug",
        minutes=12,
    ),
    Exercise(
        id="ch2.train_on_a_budget",
        title="Digits on a budget",
        function_name="train_on_a_budget",
        points=2,
        make_case=_train_on_a_budget_case,
        public_params=[{"split_seed": 0, "model_seed": 0}],
        nudge="section 5: at a fixed budget, which choice mattered most? Try it on the "
        "validation split before you check",
        praise="you chose the rate for the budget you had, and the network generalises to "
        "digits you never saw.",
        next_step="halve the budget: which optimizer and rate still reach 90%?",
        kind="experiment",
        minutes=12,
    ),
]
