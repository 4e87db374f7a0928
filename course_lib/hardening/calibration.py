"""Calibration: does a confidence of 0.9 mean right 9 times in 10?

- :func:`reliability_bins` groups predictions by confidence (the top softmax probability)
  into equal-width bins and gives each bin's mean confidence and accuracy.
- :func:`expected_calibration_error` (ECE) is the gap between the two, weighted by how many
  predictions fall in each bin::

      ECE = sum_b (n_b / N) * |accuracy_b - confidence_b|

- :func:`fit_temperature` fits one number, the temperature ``T``, on validation data:
  ``softmax(logits / T)`` with ``T > 1`` softens overconfident predictions, ``T < 1`` sharpens
  them. Dividing every logit by the same ``T`` never changes the predicted class, so accuracy
  stays the same; only the confidences move (Guo et al., 2017).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["reliability_bins", "expected_calibration_error", "fit_temperature"]


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
    correct = (predicted == targets).double()
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


def expected_calibration_error(
    probabilities: torch.Tensor, targets: torch.Tensor, bins: int = 10
) -> float:
    """ECE: the mean |accuracy - confidence| over confidence bins, weighted by their counts."""
    table = reliability_bins(probabilities, targets, bins)
    filled = table["count"] > 0
    gaps = (table["accuracy"] - table["confidence"]).abs()[filled]
    return (table["count"][filled] * gaps).sum().item() / len(targets)


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
