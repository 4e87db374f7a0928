"""Exercises of chapter 2: optimizers (solutions/02_optimizers.ipynb)."""

from __future__ import annotations

import torch

from course_lib.grading.spec import Case, Exercise, Mistake, compare_with_reference


def _momentum_reference(w, grad, velocity, lr, beta):
    velocity = beta * velocity + grad
    return w - lr * velocity, velocity


def _momentum_step_case(params: dict) -> Case:
    generator = torch.Generator().manual_seed(params["seed"])
    shape = params["shape"]
    w, grad, velocity = (torch.randn(shape, generator=generator) for _ in range(3))
    lr, beta = params["lr"], params["beta"]
    check = compare_with_reference(
        (w, grad, velocity, lr, beta),
        reference=_momentum_reference,
        mistakes=[
            Mistake(
                lambda w, g, v, lr, b: (w - lr * g, b * v + g),
                "you step along the gradient, not along the new velocity",
            ),
            Mistake(
                lambda w, g, v, lr, b: (w - lr * (b * v + (1 - b) * g), b * v + (1 - b) * g),
                "this is the dampened average b*v + (1-b)*g; heavy-ball momentum adds the full gradient: b*v + g",
            ),
            Mistake(
                lambda w, g, v, lr, b: (w - lr * (b * v + g), v),
                "the returned velocity is the old one: return the updated velocity",
            ),
        ],
        shape_hint="return a pair (new_w, new_velocity)",
    )
    return Case(f"shape {tuple(shape)}, lr = {lr}, beta = {beta}", check)


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
    check = compare_with_reference(
        inputs,
        reference=_adam_reference,
        mistakes=[
            Mistake(
                lambda *a: _adam_reference(*a, correct_m=False),
                f"bias correction missing for m: {first}; divide m by (1 - beta1**t)",
            ),
            Mistake(
                lambda *a: _adam_reference(*a, correct_v=False),
                "bias correction missing for v: divide v by (1 - beta2**t) before the square root",
            ),
            Mistake(
                lambda *a: _adam_reference(*a, correct_m=False, correct_v=False),
                "bias correction missing for both m and v: the first step is about 3x too large",
            ),
            Mistake(
                lambda w, g, m, v, t, lr, b1, b2, eps: _adam_reference(
                    w, g, m, v, t + 1, lr, b1, b2, eps
                ),
                "off by one in t: the first step uses t = 1 in 1 - beta**t",
            ),
        ],
        shape_hint="return a triple (new_w, new_m, new_v)",
    )
    return Case(f"step t = {t}, shape {tuple(shape)}, lr = {lr}", check)


EXERCISES = [
    Exercise(
        id="ch2.momentum_step",
        title="A momentum step",
        function_name="momentum_step",
        points=1,
        make_case=_momentum_step_case,
        public_params=[{"seed": 0, "shape": [3], "lr": 0.1, "beta": 0.9}],
        general_hint="velocity = beta * velocity + grad, then w - lr * velocity",
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
        general_hint="m and v are moving averages of g and g**2; divide by 1 - beta**t before stepping",
    ),
]
