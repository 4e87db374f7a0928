"""Chapter 6's calibration experiment: is a few-label head overconfident, and does a temperature fix it?

Chapter 6 keeps the bundled backbone frozen and trains only the linear head, on cached
features (:func:`course_lib.transfer.extract_features`), so a head costs a fraction of a
second. :func:`train_head` trains one; :func:`calibration_over_seeds` trains one per seed on
a few labelled examples per class, fits a temperature on the validation features
(:func:`course_lib.hardening.fit_temperature`) and measures the expected calibration error on
the test features before and after, next to the negative log-likelihood and the ECE a
perfectly calibrated model would score (:func:`course_lib.hardening.ece_noise_floor`).
Accuracy is the same before and after: dividing the logits by one positive number keeps each
prediction's top class. :func:`bootstrap_temperatures` shows how well the validation set pins
the temperature down.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from course_lib.data import Split, per_class_subset
from course_lib.hardening.calibration import (
    ece_noise_floor,
    expected_calibration_error,
    fit_temperature,
    negative_log_likelihood,
)
from course_lib.reproducibility import seed_everything
from course_lib.train import fit

__all__ = ["train_head", "calibration_over_seeds", "bootstrap_temperatures"]


def train_head(
    features: Split, *, seed: int, num_classes: int = 10, epochs: int = 30, lr: float = 1e-2
) -> nn.Linear:
    """A fresh ``nn.Linear(features, num_classes)`` trained with Adam on cached features, in eval mode.

    ``features.inputs`` is (N, D), the backbone's embeddings; ``features.targets`` (N,).
    """
    seed_everything(seed)
    head = nn.Linear(features.inputs.shape[1], num_classes)
    fit(
        head,
        features,
        optimizer=torch.optim.Adam(head.parameters(), lr=lr),
        loss_fn=nn.CrossEntropyLoss(),
        epochs=epochs,
        batch_size=64,
        seed=seed,
        progress=False,
    )
    return head.eval()


def calibration_over_seeds(
    features: dict[str, Split], *, per_class: int, seeds: Sequence[int], bins: int = 10
) -> list[dict]:
    """Per seed: train a head on ``per_class`` examples per class of ``features["train"]``.

    The seed draws the examples and initialises the head. The temperature is fitted on
    ``features["val"]``; ``features["test"]`` is read once per seed, for the accuracy and the
    ECE before (T = 1) and after (the fitted T). Returns one dict per seed with ``seed``,
    ``temperature``, ``accuracy``, ``ece_before``, ``ece_after``, ``ece_floor_after`` (the
    median ECE of a perfectly calibrated model with the scaled confidences), ``nll_before``
    and ``nll_after`` (test negative log-likelihood).
    """
    rows = []
    for seed in seeds:
        head = train_head(per_class_subset(features["train"], per_class, seed=seed), seed=seed)
        with torch.no_grad():
            val_logits, test_logits = head(features["val"].inputs), head(features["test"].inputs)
        temperature = fit_temperature(val_logits, features["val"].targets)
        targets = features["test"].targets
        scaled = (test_logits / temperature).softmax(dim=1)
        rows.append(
            {
                "seed": seed,
                "temperature": temperature,
                "accuracy": (test_logits.argmax(dim=1) == targets).double().mean().item(),
                "ece_before": expected_calibration_error(test_logits.softmax(dim=1), targets, bins),
                "ece_after": expected_calibration_error(scaled, targets, bins),
                "ece_floor_after": ece_noise_floor(scaled, bins, seed=seed),
                "nll_before": negative_log_likelihood(test_logits, targets),
                "nll_after": negative_log_likelihood(test_logits, targets, temperature),
            }
        )
    return rows


def bootstrap_temperatures(
    logits: torch.Tensor,
    targets: torch.Tensor,
    *,
    draws: int = 200,
    seed: int = 0,
    grid: torch.Tensor | None = None,
) -> list[float]:
    """The temperature fitted on each of ``draws`` bootstrap resamples of ``(logits, targets)``.

    A resample draws ``len(targets)`` rows with replacement. Each resample's ``T`` minimises
    its mean cross-entropy of ``softmax(logits / T)`` over ``grid`` (default: 801 values of
    ``T`` from 0.1 to 10, evenly spaced in ``log T``, so 0.6% apart), all resamples at once:
    milliseconds, where one L-BFGS fit per resample would take seconds. The spread of the
    temperatures shows how precisely the data determine ``T``: with few errors, poorly.
    """
    if grid is None:
        grid = torch.logspace(-1, 1, 801, dtype=torch.float64)
    logits = logits.detach().double()
    # per_row[g, i]: cross-entropy of row i at temperature grid[g]
    scaled = logits.unsqueeze(0) / grid.view(-1, 1, 1)
    per_row = torch.logsumexp(scaled, dim=2) - scaled.gather(
        2, targets.view(1, -1, 1).expand(len(grid), -1, 1)
    ).squeeze(2)
    generator = torch.Generator().manual_seed(seed)
    rows = torch.randint(len(targets), (draws, len(targets)), generator=generator)
    counts = torch.zeros(draws, len(targets), dtype=torch.float64)
    counts.scatter_add_(1, rows, torch.ones_like(rows, dtype=torch.float64))
    losses = counts @ per_row.T  # (draws, grid): each resample's summed loss at each T
    return grid[losses.argmin(dim=1)].tolist()
