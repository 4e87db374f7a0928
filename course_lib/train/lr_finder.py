"""The learning-rate range test (Smith, 2017): train briefly with a growing learning rate."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from matplotlib.figure import Figure
from torch import nn

from course_lib.train.checks import as_tensors

__all__ = ["LearningRateSearch", "find_learning_rate"]


@dataclass(frozen=True)
class LearningRateSearch:
    """The learning-rate range test: smoothed loss against an exponentially growing learning rate."""

    learning_rates: list[float]
    losses: list[float]

    @property
    def suggestion(self) -> float:
        """A tenth of the learning rate at the lowest smoothed loss: still fast, safely below blow-up."""
        best = min(range(len(self.losses)), key=self.losses.__getitem__)
        return self.learning_rates[best] / 10

    def plot(self) -> Figure:
        figure = Figure(figsize=(6.5, 3.6), layout="constrained")
        axes = figure.subplots()
        axes.plot(self.learning_rates, self.losses)
        axes.axvline(
            self.suggestion,
            color="tab:red",
            linestyle="--",
            label=f"suggestion {self.suggestion:.2g}",
        )
        axes.set(
            xscale="log",
            xlabel="learning rate (log scale)",
            ylabel="smoothed training loss",
            title="Learning-rate range test",
        )
        axes.grid(True, which="both", alpha=0.3)
        axes.legend()
        return figure


def find_learning_rate(
    model: nn.Module,
    train_data,
    *,
    loss_fn,
    optimizer_class=torch.optim.SGD,
    start: float = 1e-5,
    end: float = 10.0,
    steps: int = 100,
    batch_size: int = 64,
    seed: int = 0,
    **optimizer_options,
) -> LearningRateSearch:
    """Train a *copy* of ``model`` for ``steps`` mini-batches while the learning rate grows from
    ``start`` to ``end`` exponentially; record the smoothed loss; stop once it blows up.

    The loss first barely moves (too small), then falls fastest, then explodes (too large).
    A good learning rate sits on the falling part, about a tenth of the rate at the minimum.
    ``model`` itself is not changed.
    """
    import copy

    if not 0 < start < end:
        raise ValueError(f"need 0 < start < end, got start={start}, end={end}")
    inputs, targets = as_tensors(train_data, "train_data")
    trial = copy.deepcopy(model)
    trial.train()
    optimizer = optimizer_class(trial.parameters(), lr=start, **optimizer_options)
    generator = torch.Generator().manual_seed(seed)
    factor = (end / start) ** (1 / max(steps - 1, 1))
    rates, losses, average, best = [], [], 0.0, math.inf
    for step in range(steps):
        lr = start * factor**step
        for group in optimizer.param_groups:
            group["lr"] = lr
        batch = torch.randint(len(inputs), (batch_size,), generator=generator)
        optimizer.zero_grad()
        loss = loss_fn(trial(inputs[batch]), targets[batch])
        loss.backward()
        optimizer.step()
        average = 0.9 * average + 0.1 * loss.item()
        smoothed = average / (1 - 0.9 ** (step + 1))  # bias correction, as in Adam
        if not math.isfinite(smoothed) or smoothed > 4 * best:
            break
        best = min(best, smoothed)
        rates.append(lr)
        losses.append(smoothed)
    return LearningRateSearch(rates, losses)
