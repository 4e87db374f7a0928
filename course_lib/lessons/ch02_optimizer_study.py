"""Optimizers compared on data: a small MLP on scikit-learn's digits, and least squares.

Every comparison fixes the seed of initial weights and batch order, so two optimizers see
exactly the same data in the same order.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from course_lib.data import Split
from course_lib.trajectory import optimizer_step

__all__ = [
    "small_mlp",
    "training_curve",
    "epochs_to_reach",
    "LeastSquares",
    "least_squares_problem",
    "MinibatchRun",
    "minibatch_run",
]


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
) -> MinibatchRun:
    """Minimize ``problem`` from w = 0 with mini-batches of ``batch_size`` drawn without replacement.

    Each evaluation (a loss and its gradient) draws a new batch, also inside the line search
    of closure-based optimizers (ConjugateGradient, LBFGS): that is what mini-batch training
    would do to them. ``batch_size`` equal to the number of samples is full-batch.
    """
    samples = len(problem.targets)
    if not 1 <= batch_size <= samples:
        raise ValueError(f"batch_size must be between 1 and {samples}, got {batch_size}")
    weights = torch.zeros(problem.inputs.shape[1], dtype=torch.float64, requires_grad=True)
    optimizer = optimizer_class([weights], **hyperparameters)
    order = torch.Generator().manual_seed(seed)
    evaluations = 0

    def closure() -> torch.Tensor:
        nonlocal evaluations
        evaluations += 1
        optimizer.zero_grad()
        rows = torch.randperm(samples, generator=order)[:batch_size]
        loss = problem.loss(weights, rows)
        loss.backward()
        return loss

    losses = []
    for _ in range(steps):
        optimizer_step(optimizer, closure)
        losses.append(problem.loss(weights.detach()).item())
    return MinibatchRun(losses, evaluations, evaluations * batch_size)
