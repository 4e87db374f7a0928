"""Validating predictions: check the input, notice inputs unlike the training data, resist small attacks.

- :class:`InputGuard` refuses what the model was never meant to see: wrong type, dtype or
  shape, NaN or infinity, values out of range, batches too large.
- Out-of-distribution (OOD) scores, higher meaning "looks like the training data": the
  maximum softmax probability and the (negative) energy ``T * logsumexp(logits / T)``. A
  threshold calibrated on validation data sets the share of normal inputs wrongly flagged;
  AUROC measures how well a score separates normal inputs from OOD ones.
- FGSM and PGD, two adversarial attacks: small changes to the pixels, chosen with the model's
  own gradient, that change its answer.
- :class:`GuardedPredictor` puts the three together and abstains, with a reason, instead of
  guessing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from course_lib.models import evaluation_mode

__all__ = [
    "InvalidInput",
    "InputGuard",
    "max_softmax_score",
    "energy_score",
    "calibrate_threshold",
    "auroc",
    "fgsm",
    "pgd",
    "accuracy_under_attack",
    "Prediction",
    "GuardedPredictor",
]


class InvalidInput(ValueError):
    """The input is not something the model can be asked about; the message says why."""


@dataclass(frozen=True)
class InputGuard:
    """What a valid input batch looks like: (N, *shape), ``dtype``, values in [low, high], N <= max_batch."""

    shape: tuple[int, ...] = (1, 16, 16)
    dtype: torch.dtype = torch.float32
    low: float = 0.0
    high: float = 1.0
    max_batch: int = 256

    def check(self, x) -> torch.Tensor:
        """Return ``x`` as a batch if it is valid; raise InvalidInput saying what is wrong otherwise."""
        x = self.check_structure(x)
        problems = self.problems(x)
        for index, problem in enumerate(problems):
            if problem:
                raise InvalidInput(f"input {index}: {problem}")
        return x

    def check_structure(self, x) -> torch.Tensor:
        """Type, dtype, shape and batch size; a single example gets a batch dimension."""
        if not isinstance(x, torch.Tensor):
            raise InvalidInput(f"expected a torch.Tensor, got {type(x).__name__}")
        if x.dtype != self.dtype:
            raise InvalidInput(
                f"expected dtype {self.dtype}, got {x.dtype} (convert with x.float() / 255 for images)"
            )
        if tuple(x.shape) == self.shape:
            x = x.unsqueeze(0)
        if tuple(x.shape[1:]) != self.shape:
            raise InvalidInput(
                f"expected shape (N, {', '.join(map(str, self.shape))}), got {tuple(x.shape)}"
            )
        if not 1 <= len(x) <= self.max_batch:
            raise InvalidInput(
                f"batch of {len(x)}: send between 1 and {self.max_batch} inputs at a time"
            )
        return x

    def problems(self, x: torch.Tensor) -> list[str | None]:
        """Per example: None if fine, otherwise what is wrong with its values."""
        flat = x.reshape(len(x), -1)
        result: list[str | None] = []
        for row in flat:
            if torch.isnan(row).any():
                result.append(_count(int(torch.isnan(row).sum()), "NaN value"))
            elif torch.isinf(row).any():
                result.append(_count(int(torch.isinf(row).sum()), "infinite value"))
            elif row.min() < self.low or row.max() > self.high:
                result.append(
                    f"values from {row.min():.3g} to {row.max():.3g}, outside [{self.low:g}, {self.high:g}]"
                )
            else:
                result.append(None)
        return result


def _count(number: int, thing: str) -> str:
    return f"{number} {thing}" + ("" if number == 1 else "s")


def max_softmax_score(logits: torch.Tensor) -> torch.Tensor:
    """The largest class probability: near 1 when the model is sure, near 1/classes when lost."""
    return logits.softmax(dim=1).amax(dim=1)


def energy_score(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Negative energy, ``T * logsumexp(logits / T)``: large for inputs like the training data."""
    return temperature * torch.logsumexp(logits / temperature, dim=1)


def calibrate_threshold(scores_in: torch.Tensor, false_positive_rate: float = 0.05) -> float:
    """The score below which only ``false_positive_rate`` of normal (validation) inputs fall."""
    if not 0 <= false_positive_rate < 1:
        raise ValueError(f"false_positive_rate must be in [0, 1), got {false_positive_rate}")
    return torch.quantile(scores_in.double(), false_positive_rate).item()


def auroc(scores_in: torch.Tensor, scores_out: torch.Tensor) -> float:
    """Area under the ROC curve: the chance that a normal input scores above an OOD one (ties count 1/2)."""
    inside, outside = scores_in.double().flatten(), scores_out.double().flatten()
    higher = (inside[:, None] > outside[None, :]).double().mean()
    ties = (inside[:, None] == outside[None, :]).double().mean()
    return (higher + ties / 2).item()


def fgsm(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    epsilon: float,
    low: float = 0.0,
    high: float = 1.0,
) -> torch.Tensor:
    """Fast gradient sign method: ``x + epsilon * sign(d loss / d x)``, clipped to [low, high]."""
    x = x.clone().requires_grad_(True)
    loss = F.cross_entropy(model(x), y)
    (gradient,) = torch.autograd.grad(loss, x)
    return (x + epsilon * gradient.sign()).clamp(low, high).detach()


def pgd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    epsilon: float,
    *,
    steps: int = 10,
    step_size: float | None = None,
    low: float = 0.0,
    high: float = 1.0,
    seed: int = 0,
) -> torch.Tensor:
    """Projected gradient descent: FGSM steps of ``step_size`` from a random start in the
    epsilon-ball, each projected back into it (``|x_adv - x| <= epsilon`` everywhere)."""
    step_size = step_size if step_size is not None else 2.5 * epsilon / steps
    generator = torch.Generator().manual_seed(seed)
    start = (torch.rand(x.shape, generator=generator) * 2 - 1) * epsilon
    adversarial = (x + start).clamp(low, high)
    for _ in range(steps):
        stepped = fgsm(model, adversarial, y, step_size, low, high)
        adversarial = torch.min(torch.max(stepped, x - epsilon), x + epsilon).clamp(low, high)
    return adversarial


def accuracy_under_attack(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    epsilons: Sequence[float],
    attack=fgsm,
) -> list[float]:
    """Accuracy on ``attack(model, inputs, targets, epsilon)`` for each epsilon (model in eval mode)."""
    accuracies = []
    with evaluation_mode(model):
        for epsilon in epsilons:
            attacked = attack(model, inputs, targets, epsilon) if epsilon > 0 else inputs
            with torch.no_grad():
                accuracies.append((model(attacked).argmax(1) == targets).float().mean().item())
    return accuracies


@dataclass(frozen=True)
class Prediction:
    """A label and its confidence, or an abstention with the reason."""

    label: int | None
    confidence: float
    abstained: bool = False
    reason: str | None = None


class GuardedPredictor:
    """``model`` behind an input guard and an OOD threshold: it answers, or says why it will not.

    ``threshold`` is on the maximum softmax probability (``score="msp"``) or the energy score
    (``score="energy"``); calibrate it with :func:`calibrate_threshold` on validation data.
    """

    def __init__(self, model: nn.Module, guard: InputGuard, threshold: float, score: str = "msp"):
        if score not in ("msp", "energy"):
            raise ValueError(f"score must be 'msp' or 'energy', got {score!r}")
        self.model, self.guard, self.threshold, self.score = model.eval(), guard, threshold, score

    @torch.no_grad()
    def predict(self, x) -> list[Prediction]:
        """One Prediction per input. Raises InvalidInput for a wrong type, dtype, shape or batch size."""
        batch = self.guard.check_structure(x)
        problems = self.guard.problems(batch)
        safe = torch.where(torch.isfinite(batch), batch, torch.zeros(())).clamp(
            self.guard.low, self.guard.high
        )
        logits = self.model(safe)
        confidence = max_softmax_score(logits)
        scores = confidence if self.score == "msp" else energy_score(logits)
        predictions = []
        for i, problem in enumerate(problems):
            if problem:
                predictions.append(Prediction(None, 0.0, True, f"invalid input: {problem}"))
            elif scores[i] < self.threshold:
                predictions.append(
                    Prediction(
                        None,
                        confidence[i].item(),
                        True,
                        f"unlike the training data: {self.score} score {scores[i]:.3g} "
                        f"< threshold {self.threshold:.3g}",
                    )
                )
            else:
                predictions.append(Prediction(int(logits[i].argmax()), confidence[i].item()))
        return predictions
