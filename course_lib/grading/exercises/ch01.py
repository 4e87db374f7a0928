"""Exercises of chapter 1: gradient descent (solutions/01_gradient_descent.ipynb)."""

from __future__ import annotations

import torch

from course_lib.grading.spec import (
    Case,
    Exercise,
    Mistake,
    Verdict,
    compare_with_reference,
    describe,
)
from course_lib.landscapes import quadratic_bowl
from course_lib.optim import SGD
from course_lib.trajectory import run_on_landscape


def _gd_step_case(params: dict) -> Case:
    generator = torch.Generator().manual_seed(params["seed"])
    w = torch.randn(params["shape"], generator=generator)
    grad = torch.randn(params["shape"], generator=generator)
    lr = params["lr"]
    values = compare_with_reference(
        (w, grad, lr),
        reference=lambda w, g, lr: w - lr * g,
        mistakes=[
            Mistake(
                lambda w, g, lr: w + lr * g, "you stepped *up* the gradient: subtract lr * grad"
            ),
            Mistake(
                lambda w, g, lr: w - g, "the learning rate is missing: scale the gradient by lr"
            ),
            Mistake(
                lambda w, g, lr: -lr * g,
                "you returned the step, not the new parameters: w - lr * grad",
            ),
        ],
        shape_hint="the result must have the same shape as w",
    )

    def check(gd_step) -> Verdict:
        original = w.clone()
        verdict = values(gd_step)
        unchanged = w.clone()
        gd_step(unchanged, grad.clone(), lr)
        if not torch.equal(unchanged, original):
            return Verdict(False, "w left unchanged", "w was modified in place",
                           "build a new tensor (w - lr * grad), do not use w -= ...")
        return verdict

    return Case(f"w of shape {tuple(params['shape'])}, lr = {lr}", check)


def _pick_learning_rate_case(params: dict) -> Case:
    kappa, steps = params["condition_number"], params["steps"]
    bowl = quadratic_bowl(kappa)

    def check(pick_learning_rate) -> Verdict:
        lr = pick_learning_rate(kappa)
        if not isinstance(lr, float | int) or isinstance(lr, bool):
            return Verdict(False, "a number", describe(lr), "return the learning rate as a float")
        if lr <= 0:
            return Verdict(
                False, "a positive learning rate", describe(lr), "a learning rate must be > 0"
            )
        run = run_on_landscape(bowl, SGD, lr=float(lr), steps=steps)
        reached = run.steps_to(1e-6)
        expected = f"loss below 1e-6 within {steps} steps"
        if reached is not None:
            return Verdict(True)
        if run.diverged or run.final_loss > run.losses[0]:
            return Verdict(False, expected, f"lr = {lr:.4g}: the loss diverged",
                           f"too large: gradient descent diverges above 2/L = {2 / kappa:.4g} on this bowl")
        return Verdict(False, expected, f"lr = {lr:.4g}: loss {run.final_loss:.3g} after {steps} steps",
                       "converging, but too slowly: the best fixed rate balances both curvatures, 2/(1 + κ)")

    return Case(f"quadratic bowl with κ = {kappa}, {steps} steps", check)


EXERCISES = [
    Exercise(
        id="ch1.gd_step",
        title="One gradient-descent step",
        function_name="gd_step",
        points=1,
        make_case=_gd_step_case,
        public_params=[
            {"seed": 0, "shape": [2], "lr": 0.1},
            {"seed": 1, "shape": [3, 2], "lr": 0.5},
        ],
        general_hint="w_new = w - lr * grad",
    ),
    Exercise(
        id="ch1.pick_learning_rate",
        title="A learning rate that converges in time",
        function_name="pick_learning_rate",
        points=1,
        make_case=_pick_learning_rate_case,
        public_params=[{"condition_number": 20, "steps": 150}],
        general_hint="on a quadratic with curvatures 1 and κ, the best fixed rate is 2/(1 + κ)",
    ),
]
