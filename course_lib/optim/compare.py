"""The optimizers on a real network: one small MLP, scikit-learn's digits, the same seed for all."""

from __future__ import annotations

import torch
from torch import nn

from course_lib.data import Split


def small_mlp(
    inputs: int = 64, hidden: int = 32, classes: int = 10, seed: int = 0
) -> nn.Sequential:
    """Linear -> ReLU -> Linear, initialized from ``seed`` (so every optimizer starts equal)."""
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(inputs, hidden), nn.ReLU(), nn.Linear(hidden, classes))
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
