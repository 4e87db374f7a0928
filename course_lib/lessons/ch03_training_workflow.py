"""Chapter 3's experiments: one small network trained on the digits, its choices measured.

:func:`train_and_validate` is the chapter's one training run (``mlp`` + Adam + ``fit`` for a
fixed number of epochs); :func:`tune_learning_rate` repeats it over a grid of learning rates
and seeds, so that every activation, loss or shape is compared at *its own* best rate, with
the spread over seeds. The rest are the measurements the chapter explains its results with:

- :func:`logit_gradient`: how hard each loss pushes on the logits of one example, e.g. one
  that is confidently wrong (:func:`confident_logits`);
- :func:`hidden_signal`: how much each hidden layer's output still depends on the input, and
  :func:`signal_during_training`: the same after a few steps of Adam;
- :func:`softmax_twice_loss_floor`: the lowest loss reachable when a softmax is put before
  ``nn.CrossEntropyLoss`` (which applies its own).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter
from torch import nn

from course_lib.data import Split
from course_lib.models import mlp
from course_lib.train import History, evaluate, fit

__all__ = [
    "LOSSES",
    "Run",
    "train_and_validate",
    "LearningRateStudy",
    "tune_learning_rate",
    "mean_and_range",
    "tuning_figure",
    "confident_logits",
    "loss_of_logits",
    "logit_gradient",
    "LayerSignal",
    "hidden_signal",
    "signal_during_training",
    "softmax_twice_loss_floor",
]

LOSSES = ("cross-entropy", "MSE on logits", "MSE on softmax")


class _MSEOnSoftmax(nn.Module):
    """``mean((softmax(z) - onehot)^2)``: the Brier score (up to a factor), a proper scoring rule."""

    def forward(self, logits: torch.Tensor, one_hot: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(logits.softmax(dim=-1), one_hot)


def _xavier_hidden_layers(network: nn.Sequential, gain: float) -> None:
    """Xavier-uniform weights with ``gain`` (``U(-a, a)``, ``a = gain * sqrt(6 / (fan_in + fan_out))``)
    and zero biases in every hidden block's Linear layer; the head keeps PyTorch's default."""
    for block in network:
        if isinstance(block, nn.Sequential):
            nn.init.xavier_uniform_(block[0].weight, gain=gain)
            nn.init.zeros_(block[0].bias)


@dataclass(frozen=True)
class Run:
    """One trained network: its validation and training accuracy after the last epoch."""

    val_accuracy: float
    train_accuracy: float
    history: History
    model: nn.Module


def train_and_validate(
    train: Split,
    val: Split,
    lr: float,
    *,
    activation: str = "relu",
    hidden: Sequence[int] = (64,),
    loss: str = "cross-entropy",
    epochs: int = 15,
    seed: int = 0,
    init_gain: float | None = None,
) -> Run:
    """Train ``mlp(64, hidden, 10)`` with Adam at ``lr`` for ``epochs`` epochs; measure it.

    ``loss`` is ``"cross-entropy"`` (class indices), ``"MSE on logits"`` (the raw outputs
    compared with one-hot vectors) or ``"MSE on softmax"`` (the softmax of the outputs compared
    with one-hot vectors). The initial weights and the batch order follow ``seed``. The weights
    start as PyTorch's default for ``nn.Linear`` (``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``, a
    standard deviation of ``1/sqrt(3 fan_in)``) unless ``init_gain`` is given: then the hidden
    layers start Xavier-uniform with that gain (the usual advice for sigmoid is 4).
    """
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {list(LOSSES)}, got {loss!r}")
    torch.manual_seed(seed)
    features = train.inputs[0].numel()
    classes = int(train.targets.max()) + 1
    network = mlp(features, list(hidden), classes, activation=activation)
    if init_gain is not None:
        _xavier_hidden_layers(network, init_gain)
    optimizer = torch.optim.Adam(network.parameters(), lr=lr)
    if loss == "cross-entropy":
        data, loss_fn = train, nn.CrossEntropyLoss()
    else:
        data = Split(train.inputs, F.one_hot(train.targets, classes).float())
        loss_fn = nn.MSELoss() if loss == "MSE on logits" else _MSEOnSoftmax()
    history = fit(
        network,
        data,
        optimizer=optimizer,
        loss_fn=loss_fn,
        epochs=epochs,
        seed=seed,
        progress=False,
    )
    return Run(
        val_accuracy=evaluate(network, val)["accuracy"],
        train_accuracy=evaluate(network, train)["accuracy"],
        history=history,
        model=network,
    )


@dataclass(frozen=True)
class LearningRateStudy:
    """Runs of one configuration: ``runs[lr]`` holds one :class:`Run` per seed."""

    runs: dict[float, list[Run]]

    def mean(self, lr: float) -> float:
        """Mean validation accuracy over the seeds at ``lr``."""
        return statistics.fmean(run.val_accuracy for run in self.runs[lr])

    @property
    def best_lr(self) -> float:
        """The learning rate with the best mean validation accuracy (the smaller one on a tie)."""
        return max(sorted(self.runs), key=self.mean)

    @property
    def best(self) -> list[Run]:
        """The runs (one per seed) at the best learning rate."""
        return self.runs[self.best_lr]

    def accuracies(self, lr: float | None = None) -> list[float]:
        """Validation accuracy per seed at ``lr`` (default: the best rate)."""
        return [run.val_accuracy for run in self.runs[self.best_lr if lr is None else lr]]


def tune_learning_rate(
    train: Split, val: Split, rates: Sequence[float], seeds: Sequence[int] = (0, 1, 2), **config
) -> LearningRateStudy:
    """:func:`train_and_validate` for every rate and seed (``config``: activation, hidden, loss, epochs)."""
    if not rates or not seeds:
        raise ValueError("give at least one learning rate and one seed")
    return LearningRateStudy(
        {
            lr: [train_and_validate(train, val, lr, seed=seed, **config) for seed in seeds]
            for lr in rates
        }
    )


def mean_and_range(values: Sequence[float]) -> str:
    """``"0.972 [0.963-0.978]"``: the mean, then the smallest and largest value."""
    return f"{statistics.fmean(values):.3f} [{min(values):.3f}-{max(values):.3f}]"


def tuning_figure(studies: dict[str, dict[str, LearningRateStudy]], *, title: str) -> Figure:
    """One panel per group (e.g. per depth), one line per configuration: mean validation accuracy
    against the learning rate, with bars from the worst to the best seed."""
    figure = Figure(figsize=(4.2 * len(studies), 3.6), layout="constrained")
    panels = figure.subplots(1, len(studies), sharey=True, squeeze=False)[0]
    for axes, (group, by_name) in zip(panels, studies.items(), strict=True):
        for name, study in by_name.items():
            rates = sorted(study.runs)
            means = [study.mean(lr) for lr in rates]
            # max(0, ...): the mean of equal values can differ from them in the last bit
            low = [
                max(0.0, m - min(study.accuracies(lr))) for m, lr in zip(means, rates, strict=True)
            ]
            high = [
                max(0.0, max(study.accuracies(lr)) - m) for m, lr in zip(means, rates, strict=True)
            ]
            axes.errorbar(rates, means, yerr=[low, high], marker="o", capsize=3, label=name)
        axes.set_xscale("log")
        axes.set_xticks(rates, [f"{lr:g}" for lr in rates])
        axes.xaxis.set_minor_formatter(NullFormatter())
        axes.set_ylim(0, 1)
        axes.set_xlabel("learning rate")
        axes.set_title(group)
        axes.grid(alpha=0.3)
    panels[0].set_ylabel("validation accuracy")
    panels[-1].legend(loc="lower left")
    figure.suptitle(title)
    return figure


def confident_logits(margin: float, predicted: int, classes: int = 10) -> torch.Tensor:
    """Logits of shape (classes,): 0 everywhere except ``margin`` at class ``predicted``.

    With ``margin`` 10 the softmax gives ``predicted`` a probability of 0.9996: confident.
    """
    if not 0 <= predicted < classes:
        raise ValueError(f"predicted must be a class in 0..{classes - 1}, got {predicted}")
    logits = torch.zeros(classes)
    logits[predicted] = margin
    return logits


def loss_of_logits(name: str, logits: torch.Tensor, target: int) -> torch.Tensor:
    """One example's loss from its logits of shape (classes,) and its class ``target``.

    - ``"cross-entropy"``: ``-log softmax(z)[target]``;
    - ``"MSE on logits"``: ``mean((z - onehot)^2)`` (what ``nn.MSELoss`` on raw outputs computes);
    - ``"MSE on softmax"``: ``mean((softmax(z) - onehot)^2)``.
    """
    one_hot = F.one_hot(torch.tensor(target), len(logits)).float()
    if name == "cross-entropy":
        return F.cross_entropy(logits.unsqueeze(0), torch.tensor([target]))
    if name == "MSE on logits":
        return F.mse_loss(logits, one_hot)
    if name == "MSE on softmax":
        return F.mse_loss(logits.softmax(0), one_hot)
    raise ValueError(f"unknown loss {name!r}; choose one of {list(LOSSES)}")


def logit_gradient(name: str, logits: torch.Tensor, target: int) -> torch.Tensor:
    """The gradient of :func:`loss_of_logits` with respect to the logits, shape (classes,).

    Cross-entropy: ``softmax(z) - onehot`` (each entry between -1 and 1). MSE on logits:
    ``2 (z - onehot) / classes``, growing with the error. MSE on softmax: the softmax's
    Jacobian times ``2 (p - onehot) / classes``, which vanishes when the softmax saturates.
    """
    logits = logits.detach().clone().requires_grad_(True)
    loss_of_logits(name, logits, target).backward()
    return logits.grad


@dataclass(frozen=True)
class LayerSignal:
    """One hidden layer's output on a batch of inputs.

    ``mean``: the average output; ``spread``: the standard deviation over the examples,
    averaged over the units (how much the output still depends on the input);
    ``saturated``: the fraction of pre-activations ``z`` with ``|z| > 2.5``, where
    sigmoid's slope is below 0.07 and tanh's below 0.03.
    """

    mean: float
    spread: float
    saturated: float


@torch.no_grad()
def hidden_signal(model: nn.Sequential, inputs: torch.Tensor) -> list[LayerSignal]:
    """:class:`LayerSignal` of each hidden block of an ``mlp`` (inputs: (N, ...) images or vectors)."""
    *body, _head = model
    signals, x = [], inputs
    for layer in body:
        if isinstance(layer, nn.Sequential):  # a dense block: Linear first, then the activation
            z = layer[0](x)
            x = layer(x)
            signals.append(
                LayerSignal(
                    mean=x.mean().item(),
                    spread=x.std(dim=0).mean().item(),
                    saturated=(z.abs() > 2.5).float().mean().item(),
                )
            )
        else:
            x = layer(x)
    return signals


def signal_during_training(
    model: nn.Sequential,
    train: Split,
    lr: float,
    steps: Sequence[int],
    *,
    batch_size: int = 64,
    seed: int = 0,
) -> dict[int, list[LayerSignal]]:
    """:func:`hidden_signal` on ``train.inputs`` after each number of Adam steps in ``steps``.

    Trains ``model`` in place with cross-entropy, on mini-batches of a seeded shuffle of
    ``train``; ``0`` in ``steps`` measures the untrained model.
    """
    if not steps or min(steps) < 0:
        raise ValueError(f"steps must be numbers of steps >= 0, got {list(steps)}")
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
    batches = order.split(batch_size)
    signals, done = {}, 0
    for target in sorted(steps):
        while done < target:
            batch = batches[done % len(batches)]
            optimizer.zero_grad()
            loss_fn(model(train.inputs[batch]), train.targets[batch]).backward()
            optimizer.step()
            done += 1
        signals[target] = hidden_signal(model, train.inputs)
    return signals


def softmax_twice_loss_floor(classes: int) -> float:
    """The smallest cross-entropy a model can reach when its outputs are already probabilities.

    ``nn.CrossEntropyLoss`` applies a softmax itself; fed probabilities ``p`` (each in [0, 1]),
    its loss is ``-log(e^{p_y} / sum_k e^{p_k})``, smallest for ``p_y = 1`` and the rest 0:
    ``log(1 + (classes - 1) / e)``, 1.46 for 10 classes, far above 0.
    """
    if classes < 2:
        raise ValueError(f"classes must be >= 2, got {classes}")
    return math.log(1 + (classes - 1) / math.e)
