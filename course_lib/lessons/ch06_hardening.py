"""Chapter 6's calibration experiment: is a few-label head overconfident, and does a temperature fix it?

Chapter 6 keeps the bundled backbone frozen and trains only the linear head, on cached
features (:func:`course_lib.transfer.extract_features`), so a head costs a fraction of a
second. :func:`train_head` trains one; :func:`calibration_over_seeds` trains one per seed on
a few labelled examples per class, fits a temperature on the validation features
(:func:`course_lib.hardening.fit_temperature`) and measures the expected calibration error on
the test features before and after. Accuracy is the same before and after: dividing the
logits by one positive number keeps each prediction's top class.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from course_lib.data import Split, per_class_subset
from course_lib.hardening.calibration import expected_calibration_error, fit_temperature
from course_lib.reproducibility import seed_everything
from course_lib.train import fit

__all__ = ["train_head", "calibration_over_seeds"]


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
    ``temperature``, ``accuracy``, ``ece_before`` and ``ece_after``.
    """
    rows = []
    for seed in seeds:
        head = train_head(per_class_subset(features["train"], per_class, seed=seed), seed=seed)
        with torch.no_grad():
            val_logits, test_logits = head(features["val"].inputs), head(features["test"].inputs)
        temperature = fit_temperature(val_logits, features["val"].targets)
        targets = features["test"].targets
        rows.append(
            {
                "seed": seed,
                "temperature": temperature,
                "accuracy": (test_logits.argmax(dim=1) == targets).double().mean().item(),
                "ece_before": expected_calibration_error(test_logits.softmax(dim=1), targets, bins),
                "ece_after": expected_calibration_error(
                    (test_logits / temperature).softmax(dim=1), targets, bins
                ),
            }
        )
    return rows
