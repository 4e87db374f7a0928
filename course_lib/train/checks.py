"""Checks on what ``fit`` and ``evaluate`` are given, failing early with a message to act on,
and the two sanity checks to run before a long training: the loss at the start
(:func:`chance_level_loss`) and overfitting one small batch (:func:`overfit_one_batch`)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from course_lib.models import evaluation_mode

__all__ = [
    "as_tensors",
    "check_loss_fits",
    "tracks_accuracy",
    "chance_level_loss",
    "OverfitResult",
    "overfit_one_batch",
]


def as_tensors(data, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, targets) from a Split, a (inputs, targets) pair, or a map-style Dataset."""
    if hasattr(data, "inputs") and hasattr(data, "targets"):
        inputs, targets = data.inputs, data.targets
    elif (
        isinstance(data, tuple | list)
        and len(data) == 2
        and all(isinstance(t, torch.Tensor) for t in data)
    ):
        inputs, targets = data
    elif isinstance(data, torch.utils.data.Dataset):
        if len(data) == 0:
            raise ValueError(f"{name} is empty: it has no examples to train or evaluate on")
        pairs = [data[i] for i in range(len(data))]
        inputs = torch.stack([torch.as_tensor(x) for x, _ in pairs])
        targets = torch.stack([torch.as_tensor(y) for _, y in pairs])
    else:
        raise TypeError(
            f"{name} must be a course_lib.data.Split, an (inputs, targets) pair of tensors or a "
            f"map-style Dataset of (input, target) pairs; got {type(data).__name__}"
        )
    if len(inputs) == 0:
        raise ValueError(f"{name} is empty: it has no examples to train or evaluate on")
    if len(inputs) != len(targets):
        raise ValueError(
            f"{name} has {len(inputs)} inputs but {len(targets)} targets: "
            "every input needs exactly one target"
        )
    return inputs, targets


def check_loss_fits(model: nn.Module, loss_fn, inputs: torch.Tensor, targets: torch.Tensor) -> None:
    """Fail early, with the shapes, when the model's output and the targets cannot meet in the loss."""
    with torch.no_grad():
        output = model(inputs[:2])
    sample_targets = targets[:2]
    is_class_index = not sample_targets.is_floating_point()
    if isinstance(loss_fn, nn.BCELoss | nn.BCEWithLogitsLoss) and is_class_index:
        classes = output.shape[-1] if output.dim() > 1 else 2
        raise ValueError(
            f"{type(loss_fn).__name__} needs float targets of the output's shape {tuple(output.shape)}, "
            f"but the targets are class indices of shape {tuple(sample_targets.shape)}. For {classes} "
            "classes use nn.CrossEntropyLoss on raw logits (no softmax before it)."
        )
    if isinstance(loss_fn, nn.CrossEntropyLoss) and is_class_index:
        if output.dim() != 2 or output.shape[0] != sample_targets.shape[0]:
            raise ValueError(
                f"nn.CrossEntropyLoss needs model output of shape (batch, classes) for targets of shape "
                f"(batch,); the model gives {tuple(output.shape[1:])} per example and the targets are "
                f"{tuple(sample_targets.shape[1:]) or 'scalars'} per example"
            )
        classes, largest = output.shape[1], int(targets.max())
        if largest >= classes:
            raise ValueError(
                f"the targets go up to class {largest}, but the model outputs only {classes} scores "
                f"per example: its last layer needs {largest + 1} outputs"
            )
        if classes > largest + 1:
            raise ValueError(
                f"the model outputs {classes} scores per example, but the targets use only {largest + 1} "
                f"classes: is the classification head attached? The last layer should have {largest + 1} outputs"
            )
        return
    if isinstance(loss_fn, nn.MSELoss | nn.L1Loss | nn.SmoothL1Loss | nn.HuberLoss):
        if output.shape != sample_targets.shape:
            raise ValueError(
                f"{type(loss_fn).__name__} compares element by element: the model gives output of shape "
                f"{tuple(output.shape)} but the targets have shape {tuple(sample_targets.shape)}, which "
                "would broadcast into a wrong loss. Make them the same shape (e.g. targets.unsqueeze(1))."
            )
        return
    try:
        loss_fn(output, sample_targets)
    except (RuntimeError, ValueError) as exc:
        raise ValueError(
            f"{type(loss_fn).__name__} cannot compare model output of shape {tuple(output.shape)} with "
            f"targets of shape {tuple(sample_targets.shape)} ({str(exc).splitlines()[0]})"
        ) from None


def tracks_accuracy(targets: torch.Tensor, accuracy: bool | None) -> bool:
    """Accuracy is measured for class-index targets, unless the caller says otherwise."""
    return (not targets.is_floating_point()) if accuracy is None else accuracy


def chance_level_loss(classes: int) -> float:
    """The cross-entropy of a model that gives every class the same probability: ``ln(classes)``.

    A freshly initialized classifier has small, nearly equal logits, so its mean loss on
    any data should be close to this (2.303 for 10 classes). Far above it, the initial
    logits are too large (a bad initialization or unscaled inputs); far below it, the
    measurement is wrong (the loss compares the wrong things, or the model was already trained).
    """
    if isinstance(classes, bool) or not isinstance(classes, int) or classes < 2:
        raise ValueError(f"classes must be a whole number >= 2, got {classes!r}")
    return math.log(classes)


@dataclass(frozen=True)
class OverfitResult:
    """``losses``: the loss of every step (on the one batch); ``accuracy``: the batch's accuracy
    after the last step, in evaluation mode."""

    losses: list[float]
    accuracy: float


def overfit_one_batch(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    *,
    optimizer: torch.optim.Optimizer,
    loss_fn,
    steps: int,
) -> OverfitResult:
    """Train ``model`` (in place) on one fixed batch for ``steps`` steps; return the losses.

    Every step is the plain loop's ``zero_grad, forward, loss, backward, step`` on the same
    ``inputs`` (N, ...) and class-index ``targets`` (N,). A network that can learn at all
    drives the loss of a few dozen examples towards 0 and gets all of them right; if it
    cannot, the bug is in the model, the loss or the optimizer, not in the data's difficulty.

    Raises:
        ValueError: ``steps`` < 1, or inputs and targets of different lengths.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    inputs, targets = as_tensors((inputs, targets), "the batch")
    model.train()
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = loss_fn(model(inputs), targets)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    with torch.no_grad(), evaluation_mode(model):
        accuracy = (model(inputs).argmax(dim=1) == targets).float().mean().item()
    return OverfitResult(losses=losses, accuracy=accuracy)
