"""Data sets the course ships or builds offline. Nothing here downloads anything."""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["Split", "digits_split"]


@dataclass(frozen=True)
class Split:
    """Inputs and integer class targets of one split; ``inputs`` is (N, features) or (N, C, H, W)."""

    inputs: torch.Tensor
    targets: torch.Tensor

    def __len__(self) -> int:
        return len(self.targets)


def digits_split(
    *, test_fraction: float = 0.25, seed: int = 0, flatten: bool = True
) -> tuple[Split, Split]:
    """scikit-learn's 1,797 handwritten digits (8x8, real data, shipped with scikit-learn).

    Returns ``(train, test)``: a seeded, stratified split. Pixels are scaled from 0..16 to
    0..1; ``flatten`` gives (N, 64) inputs, otherwise (N, 1, 8, 8).
    """
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be between 0 and 1, got {test_fraction}")
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32) / 16.0
    targets = torch.tensor(digits.target, dtype=torch.long)
    inputs = images.reshape(len(images), -1) if flatten else images.unsqueeze(1)
    train_idx, test_idx = train_test_split(
        torch.arange(len(targets)).numpy(), test_size=test_fraction, random_state=seed,
        stratify=targets.numpy(),
    )  # fmt: skip
    return Split(inputs[train_idx], targets[train_idx]), Split(inputs[test_idx], targets[test_idx])
