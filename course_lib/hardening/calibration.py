"""Calibration: does a confidence of 0.9 mean right 9 times in 10?

- :func:`reliability_bins` groups predictions by confidence (the top softmax probability)
  into equal-width bins and gives each bin's mean confidence and accuracy.
- :func:`expected_calibration_error` (ECE) is the gap between the two, weighted by how many
  predictions fall in each bin::

      ECE = sum_b (n_b / N) * |accuracy_b - confidence_b|

  With 10 equal-width bins (the default here) and a few hundred predictions, ECE is biased
  upward: even a perfectly calibrated model scores above 0, because each bin's accuracy is a
  noisy estimate. :func:`ece_noise_floor` measures that floor by simulation.
- :func:`negative_log_likelihood` (NLL, the mean cross-entropy) is a proper scoring rule with
  no bins: lower is better, and it is what temperature scaling minimises on validation data.
- :func:`fit_temperature` fits one number, the temperature ``T``, on validation data:
  ``softmax(logits / T)`` with ``T > 1`` softens overconfident predictions, ``T < 1`` sharpens
  them. Dividing every logit by the same ``T`` never changes the predicted class, so accuracy
  stays the same; only the confidences move (Guo et al., 2017).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = [
    "reliability_bins",
    "expected_calibration_error",
    "ece_noise_floor",
    "negative_log_likelihood",
    "fit_temperature",
]


def reliability_bins(
    probabilities: torch.Tensor, targets: torch.Tensor, bins: int = 10
) -> dict[str, torch.Tensor]:
    """Per confidence bin of width ``1 / bins``: ``count``, mean ``confidence`` and ``accuracy``.

    ``probabilities`` is (N, classes), rows summing to 1; ``targets`` (N,) class indices.
    Empty bins have count 0 and NaN confidence and accuracy. ``edges`` has ``bins + 1`` values.
    """
    if probabilities.dim() != 2 or len(probabilities) != len(targets):
        raise ValueError(
            f"expected probabilities (N, classes) and targets (N,), got "
            f"{tuple(probabilities.shape)} and {tuple(targets.shape)}"
        )
    if bins < 1:
        raise ValueError(f"bins must be at least 1, got {bins}")
    confidence, predicted = probabilities.double().max(dim=1)
    return _bins(confidence, (predicted == targets).double(), bins)


def _bins(confidence: torch.Tensor, correct: torch.Tensor, bins: int) -> dict[str, torch.Tensor]:
    # bin b holds confidences in (b/bins, (b+1)/bins]; a confidence of exactly 0 goes to bin 0
    index = (torch.ceil(confidence * bins).long() - 1).clamp(0, bins - 1)
    count = torch.bincount(index, minlength=bins).double()
    sum_confidence = torch.bincount(index, weights=confidence, minlength=bins)
    sum_correct = torch.bincount(index, weights=correct, minlength=bins)
    return {
        "edges": torch.linspace(0, 1, bins + 1, dtype=torch.float64),
        "count": count,
        "confidence": sum_confidence / count,  # NaN where count is 0
        "accuracy": sum_correct / count,
    }


def _ece(table: dict[str, torch.Tensor], total: int) -> float:
    filled = table["count"] > 0
    gaps = (table["accuracy"] - table["confidence"]).abs()[filled]
    return (table["count"][filled] * gaps).sum().item() / total


def expected_calibration_error(
    probabilities: torch.Tensor, targets: torch.Tensor, bins: int = 10
) -> float:
    """ECE: the mean |accuracy - confidence| over confidence bins, weighted by their counts."""
    return _ece(reliability_bins(probabilities, targets, bins), len(targets))


def ece_noise_floor(
    probabilities: torch.Tensor, bins: int = 10, draws: int = 200, seed: int = 0
) -> float:
    """The median ECE of a *perfectly calibrated* model with the same confidences.

    Each draw makes every prediction right with probability equal to its confidence (the top
    softmax probability), as a calibrated model would be, and scores the ECE of that draw. An
    ECE near this floor is as good as ``len(probabilities)`` predictions can show.
    """
    confidence = probabilities.double().amax(dim=1)
    generator = torch.Generator().manual_seed(seed)
    eces = [
        _ece(
            _bins(confidence, torch.bernoulli(confidence, generator=generator), bins),
            len(confidence),
        )
        for _ in range(draws)
    ]
    return float(torch.tensor(eces).median())


def negative_log_likelihood(
    logits: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0
) -> float:
    """Mean cross-entropy of ``softmax(logits / temperature)`` on ``targets`` (nats)."""
    return F.cross_entropy(logits.detach().double() / temperature, targets).item()


def fit_temperature(logits: torch.Tensor, targets: torch.Tensor, steps: int = 50) -> float:
    """The temperature ``T`` that minimises the cross-entropy of ``softmax(logits / T)``.

    Fitted on held-out (validation) logits, never on the training data (where the model is
    overconfident by construction) nor on the test set. The search runs over ``log T`` with
    L-BFGS, so ``T`` stays positive; the loss is convex in ``1 / T``, so the minimum is unique.
    """
    if logits.dim() != 2 or len(logits) != len(targets):
        raise ValueError(
            f"expected logits (N, classes) and targets (N,), got "
            f"{tuple(logits.shape)} and {tuple(targets.shape)}"
        )
    logits = logits.detach().double()
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), targets)
        loss.backward()
        return loss

    optimizer.step(closure)
    return log_t.exp().item()
