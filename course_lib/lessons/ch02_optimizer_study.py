"""Optimizers compared: on a rotated bowl, on weight decay, on least squares and on the digits.

Every comparison fixes the seed of initial weights and batch order, so two optimizers see
exactly the same data in the same order; comparisons over several seeds report the spread.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
from matplotlib.figure import Figure
from torch import nn

from course_lib.data import Split
from course_lib.landscapes import Landscape, quadratic_bowl
from course_lib.trajectory import optimizer_step
from course_lib.viz import COLORS

__all__ = [
    "turned",
    "turned_bowl",
    "steps_to_reach",
    "fewest_steps",
    "mean_weight_after_decay",
    "small_mlp",
    "training_curve",
    "LearningCurves",
    "learning_curves",
    "late_loss",
    "log_grid",
    "ranking_per_seed",
    "LrSweep",
    "lr_sweep",
    "lr_sensitivity_figure",
    "epochs_to_reach",
    "LeastSquares",
    "least_squares_problem",
    "MinibatchRun",
    "minibatch_run",
]


def turned(point: tuple[float, float], angle_degrees: float) -> tuple[float, float]:
    """``point`` rotated counter-clockwise by ``angle_degrees`` about the origin."""
    cos, sin = math.cos(math.radians(angle_degrees)), math.sin(math.radians(angle_degrees))
    x, y = point
    return (cos * x - sin * y, sin * x + cos * y)


def turned_bowl(condition_number: float = 10.0, angle_degrees: float = 0.0) -> Landscape:
    """``quadratic_bowl(condition_number, angle_degrees)`` with its start point turned with it.

    The bowl ``½(u² + κv²)`` is written in coordinates (u, v) turned by ``angle_degrees``;
    turning the start point too puts it at the same (u, v), so the start loss, and the whole
    run of any rotation-invariant method (gradient descent, momentum, conjugate gradient), is
    the same at every angle. Only the per-coordinate methods (Adagrad, RMSprop, Adam, ...) see
    the rotation. The plot window is widened to a square that holds every turned start.
    """
    bowl = quadratic_bowl(condition_number, angle_degrees)
    if angle_degrees == 0:
        return bowl
    return replace(
        bowl,
        start=turned(bowl.start, angle_degrees),
        x_range=(-5.0, 5.0),
        y_range=(-5.0, 5.0),
    )


def steps_to_reach(
    landscape: Landscape,
    optimizer_class: type[torch.optim.Optimizer],
    target: float,
    *,
    max_steps: int = 500,
    **hyperparameters,
) -> int | None:
    """Steps until ``landscape``'s loss is <= ``target`` from its start; None if not within
    ``max_steps`` or if the run diverges. Stops as soon as it gets there (float64)."""
    point = torch.tensor(landscape.start, dtype=torch.float64, requires_grad=True)
    optimizer = optimizer_class([point], **hyperparameters)
    for step in range(max_steps + 1):
        optimizer.zero_grad()
        loss = landscape(point)
        if loss.item() <= target:
            return step
        if not math.isfinite(loss.item()) or loss.item() > 1e12:
            return None
        loss.backward()
        optimizer.step()
    return None


def fewest_steps(
    landscape: Landscape,
    optimizer_class: type[torch.optim.Optimizer],
    lrs: Sequence[float],
    target: float,
    *,
    max_steps: int = 500,
    **hyperparameters,
) -> tuple[int, float] | None:
    """``(steps, lr)``: the fewest :func:`steps_to_reach` over the learning rates ``lrs``
    (ties go to the smaller lr); None if no lr gets there within ``max_steps``."""
    reached = []
    limit = max_steps  # a run that cannot beat the fewest so far stops there
    for lr in sorted(lrs, reverse=True):  # large rates first: they diverge or finish fast
        steps = steps_to_reach(
            landscape, optimizer_class, target, max_steps=limit, lr=lr, **hyperparameters
        )
        if steps is not None:
            reached.append((steps, lr))
            limit = min(limit, steps)
    return min(reached) if reached else None


def mean_weight_after_decay(
    optimizer_class: type[torch.optim.Optimizer],
    gradient_scale: float,
    *,
    lr: float = 1e-2,
    weight_decay: float = 0.1,
    steps: int = 200,
    weights: int = 2000,
    seed: int = 0,
) -> float:
    """Mean of ``weights`` independent weights, each started at 1, after ``steps`` noisy steps.

    Each weight's gradient is zero-mean noise, ``gradient_scale`` times a standard normal
    (seeded): the loss carries no information, so whatever pulls the mean towards 0 is the
    weight decay alone. Adam's update is an odd function of the gradients and the noise is
    symmetric, so without decay the mean stays at 1 up to sampling noise (about 0.01 here).
    Decoupled decay (AdamW) promises a mean of ``(1 - lr·weight_decay)**steps``.
    """
    generator = torch.Generator().manual_seed(seed)
    w = torch.ones(weights, dtype=torch.float64, requires_grad=True)
    optimizer = optimizer_class([w], lr=lr, weight_decay=weight_decay)
    for _ in range(steps):
        noise = torch.randn(weights, generator=generator, dtype=torch.float64)
        w.grad = gradient_scale * noise
        optimizer.step()
    return w.detach().mean().item()


def small_mlp(
    inputs: int = 64, hidden: int = 32, classes: int = 10, seed: int = 0
) -> nn.Sequential:
    """``course_lib.models.mlp`` with one hidden layer, initialized from ``seed`` (every optimizer starts equal)."""
    from course_lib.models import mlp

    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    model = mlp(inputs, [hidden], classes)
    torch.random.set_rng_state(generator_state)
    return model


def training_curve(
    optimizer_class: type[torch.optim.Optimizer],
    hyperparameters: dict,
    train: Split,
    *,
    epochs: int = 20,
    batch_size: int = 64,
    seed: int = 0,
) -> list[float]:
    """Train ``small_mlp`` with mini-batches; return the full training loss after each epoch.

    The model's initial weights and the batch order depend on ``seed`` only, so two
    optimizers compared with the same seed see exactly the same data in the same order.
    """
    model = small_mlp(inputs=train.inputs.shape[1], seed=seed)
    optimizer = optimizer_class(model.parameters(), **hyperparameters)
    loss_fn = nn.CrossEntropyLoss()
    order = torch.Generator().manual_seed(seed)
    losses = []
    for _ in range(epochs):
        for batch in torch.randperm(len(train), generator=order).split(batch_size):
            optimizer.zero_grad()
            loss_fn(model(train.inputs[batch]), train.targets[batch]).backward()
            optimizer.step()
        with torch.no_grad():
            losses.append(loss_fn(model(train.inputs), train.targets).item())
    return losses


@dataclass(frozen=True)
class LearningCurves:
    """Loss on the whole training split and on the validation split after each epoch."""

    train: list[float]
    validation: list[float]


def learning_curves(
    optimizer_class: type[torch.optim.Optimizer],
    hyperparameters: dict,
    train: Split,
    validation: Split,
    *,
    epochs: int = 12,
    batch_size: int = 64,
    seed: int = 0,
) -> LearningCurves:
    """Train ``small_mlp`` on ``train`` with mini-batches; both losses after each epoch.

    Inputs of any shape are flattened (the digits' (N, 1, 8, 8) images become (N, 64)). A run
    that diverges reports ``inf`` from there on. Initial weights and batch order depend on
    ``seed`` only.
    """
    train_inputs = train.inputs.reshape(len(train), -1)
    validation_inputs = validation.inputs.reshape(len(validation), -1)
    model = small_mlp(inputs=train_inputs.shape[1], seed=seed)
    optimizer = optimizer_class(model.parameters(), **hyperparameters)
    loss_fn = nn.CrossEntropyLoss()
    order = torch.Generator().manual_seed(seed)
    curves = LearningCurves([], [])
    for _ in range(epochs):
        for batch in torch.randperm(len(train), generator=order).split(batch_size):
            optimizer.zero_grad()
            loss_fn(model(train_inputs[batch]), train.targets[batch]).backward()
            optimizer.step()
        with torch.no_grad():
            for losses, inputs, targets in (
                (curves.train, train_inputs, train.targets),
                (curves.validation, validation_inputs, validation.targets),
            ):
                loss = loss_fn(model(inputs), targets).item()
                losses.append(loss if math.isfinite(loss) else math.inf)
    return curves


def late_loss(losses: Sequence[float], last: int = 4) -> float:
    """The median of the last ``last`` epochs' losses: a score that one spike cannot move."""
    if not 1 <= last <= len(losses):
        raise ValueError(f"last must be between 1 and {len(losses)}, got {last}")
    return statistics.median(losses[-last:])


@dataclass(frozen=True)
class LrSweep:
    """One optimizer over a grid of learning rates and several seeds.

    ``scores[i][s]`` is the late validation loss (:func:`late_loss`) at ``lrs[i]``, seed ``s``;
    ``curves[i][s]`` the full :class:`LearningCurves`. ``lrs`` is increasing.
    """

    lrs: tuple[float, ...]
    scores: tuple[tuple[float, ...], ...]
    curves: tuple[tuple[LearningCurves, ...], ...]

    def _index(self, lr: float) -> int:
        for index, grid_lr in enumerate(self.lrs):
            if math.isclose(lr, grid_lr, rel_tol=1e-6):
                return index
        raise ValueError(f"lr {lr:g} is not on the grid {[f'{x:g}' for x in self.lrs]}")

    def median(self, lr: float) -> float:
        """The median score over seeds at ``lr`` (a grid point)."""
        return statistics.median(self.scores[self._index(lr)])

    @property
    def best_lr(self) -> float:
        """The grid learning rate with the lowest median score."""
        return min(self.lrs, key=self.median)

    @property
    def best_loss(self) -> float:
        return self.median(self.best_lr)

    @property
    def best_at_edge(self) -> bool:
        """True when the best learning rate is the grid's first or last: widen the grid."""
        return self.best_lr in (self.lrs[0], self.lrs[-1])

    def spread_at_best(self) -> tuple[float, float]:
        """(lowest, highest) score over seeds at the best learning rate."""
        scores = self.scores[self._index(self.best_lr)]
        return min(scores), max(scores)

    def robust_range(self, factor: float = 3.0) -> tuple[float, float]:
        """The widest run of adjacent grid lrs around the best whose median score is within
        ``factor`` times the best: ``(lowest lr, highest lr)``. Its width, high / low, says
        how forgiving the optimizer is of a learning rate that is off."""
        if factor < 1:
            raise ValueError(f"factor must be >= 1, got {factor}")
        limit = factor * self.best_loss
        low = high = self._index(self.best_lr)
        while low > 0 and self.median(self.lrs[low - 1]) <= limit:
            low -= 1
        while high < len(self.lrs) - 1 and self.median(self.lrs[high + 1]) <= limit:
            high += 1
        return self.lrs[low], self.lrs[high]

    def robust_width(self, factor: float = 3.0) -> float:
        """high / low of :meth:`robust_range`: 1 means only the best grid point qualifies."""
        low, high = self.robust_range(factor)
        return high / low

    def range_clipped(self, factor: float = 3.0) -> bool:
        """True when :meth:`robust_range` reaches an end of the grid (it might extend further)."""
        return not set(self.robust_range(factor)).isdisjoint({self.lrs[0], self.lrs[-1]})

    def penalty(self, off_by: float = 10.0) -> float:
        """How much worse a learning rate ``off_by`` times too small or too large is: the larger
        of the two median scores, divided by the best. Both lrs must be on the grid."""
        return max(self.penalty_sides(off_by))

    def penalty_sides(self, off_by: float = 10.0) -> tuple[float, float]:
        """``(too small, too large)``: the median score at ``best_lr / off_by`` and at
        ``best_lr * off_by``, each divided by the best. Both lrs must be on the grid."""
        best = self.best_lr
        return (
            self.median(best / off_by) / self.best_loss,
            self.median(best * off_by) / self.best_loss,
        )

    def best_lr_of_seed(self, seed_index: int) -> float:
        """The grid learning rate with the lowest score for one seed alone."""
        return min(self.lrs, key=lambda lr: self.scores[self._index(lr)][seed_index])


def ranking_per_seed(sweeps: dict[str, LrSweep]) -> list[list[str]]:
    """For each seed, the optimizers ordered by that seed's score at each one's ``best_lr``
    (the learning rate chosen on the median over all seeds), best first."""
    seeds = len(next(iter(sweeps.values())).scores[0])
    return [
        sorted(
            sweeps,
            key=lambda name: sweeps[name].scores[sweeps[name]._index(sweeps[name].best_lr)][seed],
        )
        for seed in range(seeds)
    ]


def log_grid(low: float, high: float, per_decade: int = 2) -> tuple[float, ...]:
    """Learning rates from ``low`` to ``high`` (powers of ten), ``per_decade`` per factor of 10.

    >>> log_grid(1e-2, 1)      # (0.01, 0.0316..., 0.1, 0.316..., 1.0)
    """
    if not 0 < low <= high:
        raise ValueError(f"need 0 < low <= high, got low={low}, high={high}")
    first, last = (round(math.log10(x) * per_decade) for x in (low, high))
    return tuple(10 ** (k / per_decade) for k in range(first, last + 1))


def lr_sweep(
    optimizer_class: type[torch.optim.Optimizer],
    hyperparameters: dict,
    lrs: Sequence[float],
    train: Split,
    validation: Split,
    *,
    seeds: Sequence[int] = (0, 1, 2),
    epochs: int = 12,
    last: int = 4,
) -> LrSweep:
    """:func:`learning_curves` at every lr of ``lrs`` and every seed; score = late validation loss.

    ``hyperparameters`` are the optimizer's other settings (momentum, ...); seed ``s`` fixes
    the initial weights and the batch order, the same for every optimizer and lr.
    """
    lrs = tuple(sorted(lrs))
    curves = tuple(
        tuple(
            learning_curves(
                optimizer_class,
                {**hyperparameters, "lr": lr},
                train,
                validation,
                epochs=epochs,
                seed=seed,
            )
            for seed in seeds
        )
        for lr in lrs
    )
    scores = tuple(
        tuple(late_loss(run.validation, last) for run in per_seed) for per_seed in curves
    )
    return LrSweep(lrs, scores, curves)


def lr_sensitivity_figure(sweeps: dict[str, LrSweep], factor: float = 3.0) -> Figure:
    """Median late validation loss against learning rate, one small panel per optimizer.

    Dots are single seeds; the shaded band is the robust range (within ``factor`` times the best).
    """

    columns = 5
    rows = math.ceil(len(sweeps) / columns)
    figure = Figure(figsize=(2.6 * columns, 2.3 * rows), layout="constrained")
    panels = figure.subplots(rows, columns, sharey=True, squeeze=False).ravel()
    for axes, (name, sweep), color in zip(panels, sweeps.items(), COLORS * 3, strict=False):
        medians = [sweep.median(lr) for lr in sweep.lrs]
        for lr, scores in zip(sweep.lrs, sweep.scores, strict=True):
            axes.plot([lr] * len(scores), scores, ".", color=color, alpha=0.5, markersize=4)
        axes.plot(sweep.lrs, medians, "-o", color=color, markersize=3)
        low, high = sweep.robust_range(factor)
        axes.axvspan(low, high, color=color, alpha=0.15)
        axes.axhline(factor * sweep.best_loss, color="0.4", linestyle=":", linewidth=1)
        axes.set(xscale="log", yscale="log", title=name, xlabel="learning rate")
        axes.grid(True, which="major", alpha=0.3)
    for axes in panels[len(sweeps) :]:
        axes.set_visible(False)
    for axes in panels[::columns]:
        axes.set_ylabel("validation loss")
    figure.suptitle(f"Late validation loss (median of seeds); band: within {factor:g}x of the best")
    return figure


def epochs_to_reach(losses: list[float], target: float) -> int | None:
    """The first epoch (1-based) whose loss is <= ``target``; None if none is."""
    for epoch, loss in enumerate(losses, start=1):
        if loss <= target:
            return epoch
    return None


@dataclass(frozen=True)
class LeastSquares:
    """Linear regression: find w minimizing mean((X w - y)^2). X is (samples, features), float64."""

    inputs: torch.Tensor
    targets: torch.Tensor

    def loss(self, weights: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """Mean squared error on all samples, or on the given ``rows`` (a mini-batch)."""
        inputs, targets = (
            (self.inputs, self.targets) if rows is None else (self.inputs[rows], self.targets[rows])
        )
        return ((inputs @ weights - targets) ** 2).mean()

    @property
    def best_loss(self) -> float:
        """The lowest loss any w can reach (from the exact least-squares solution)."""
        solution = torch.linalg.lstsq(self.inputs, self.targets.unsqueeze(1)).solution.squeeze(1)
        return self.loss(solution).item()


def least_squares_problem(
    samples: int = 2000, features: int = 20, noise: float = 0.5, seed: int = 0
) -> LeastSquares:
    """y = X w* + noise, with X and w* standard normal: a smooth, convex, seeded problem."""
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(samples, features, generator=generator, dtype=torch.float64)
    true_weights = torch.randn(features, generator=generator, dtype=torch.float64)
    targets = inputs @ true_weights + noise * torch.randn(
        samples, generator=generator, dtype=torch.float64
    )
    return LeastSquares(inputs, targets)


@dataclass(frozen=True)
class MinibatchRun:
    """Full-data loss after each step, and how many examples' gradients were computed."""

    losses: list[float]
    evaluations: int
    examples_seen: int


def minibatch_run(
    problem: LeastSquares,
    optimizer_class: type[torch.optim.Optimizer],
    hyperparameters: dict,
    *,
    batch_size: int,
    steps: int,
    seed: int = 0,
    new_batch_per: str = "step",
) -> MinibatchRun:
    """Minimize ``problem`` from w = 0 with mini-batches of ``batch_size`` drawn without replacement.

    ``new_batch_per="step"`` (the default) draws one batch per step: every evaluation of a
    closure-based optimizer's line search (ConjugateGradient, LBFGS) within that step sees the
    same examples, so the line search works on one well-defined function, and only
    conjugacy across steps meets different batches. ``new_batch_per="evaluation"`` draws a
    new batch at every evaluation, inside the line search too: the function changes under
    the search's feet. Step-by-step optimizers (SGD, ...) evaluate once per step, so for them
    the two agree. ``batch_size`` equal to the number of samples is full-batch.
    """
    samples = len(problem.targets)
    if not 1 <= batch_size <= samples:
        raise ValueError(f"batch_size must be between 1 and {samples}, got {batch_size}")
    if new_batch_per not in ("step", "evaluation"):
        raise ValueError(f"new_batch_per must be 'step' or 'evaluation', got {new_batch_per!r}")
    weights = torch.zeros(problem.inputs.shape[1], dtype=torch.float64, requires_grad=True)
    optimizer = optimizer_class([weights], **hyperparameters)
    order = torch.Generator().manual_seed(seed)
    evaluations = 0
    rows = torch.arange(batch_size)

    def draw() -> torch.Tensor:
        return torch.randperm(samples, generator=order)[:batch_size]

    def closure() -> torch.Tensor:
        nonlocal evaluations, rows
        evaluations += 1
        if new_batch_per == "evaluation":
            rows = draw()
        optimizer.zero_grad()
        loss = problem.loss(weights, rows)
        loss.backward()
        return loss

    losses = []
    for _ in range(steps):
        if new_batch_per == "step":
            rows = draw()
        optimizer_step(optimizer, closure)
        losses.append(problem.loss(weights.detach()).item())
    return MinibatchRun(losses, evaluations, evaluations * batch_size)
