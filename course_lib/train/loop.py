"""The training loop: ``fit`` trains and records, ``evaluate`` measures in eval mode."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from course_lib.augment import BatchAugmentation
from course_lib.models import evaluation_mode
from course_lib.train.callbacks import Callback, TrainingState, load_checkpoint, restore_checkpoint
from course_lib.train.checks import as_tensors, check_loss_fits, tracks_accuracy
from course_lib.train.history import History, NonFiniteLossError

__all__ = ["fit", "evaluate", "confusion_matrix"]


def fit(
    model: nn.Module,
    train_data,
    val_data=None,
    *,
    optimizer: torch.optim.Optimizer,
    loss_fn,
    epochs: int,
    batch_size: int = 64,
    callbacks: Sequence[Callback] = (),
    seed: int = 0,
    resume_from: str | os.PathLike | None = None,
    progress: bool = True,
    accuracy: bool | None = None,
    augment=None,
    drop_last: bool = False,
) -> History:
    """Train ``model`` for ``epochs`` epochs of shuffled mini-batches; return the History.

    Records the loss and learning rate of every step, and per epoch the training loss (the
    mean over the epoch's batches), validation loss, accuracy (for class-index targets, unless
    ``accuracy=False``) and seconds. ``resume_from`` continues a run saved by a Checkpoint
    callback: the final weights equal those of an uninterrupted run. ``augment`` (a
    ``course_lib.augment.BatchAugmentation``, fast, or any per-image transform such as
    ``augmentation(...)``) transforms each training image anew every time it is drawn;
    validation data is never augmented. ``drop_last=True`` leaves out each epoch's last batch
    when it is smaller than ``batch_size`` (as fastai and ``DataLoader(drop_last=True)`` do): a
    ragged batch of a few examples gives BatchNorm layers in train mode noisy statistics. The
    examples left out differ from epoch to epoch, since every epoch is shuffled anew.

    Raises:
        ValueError: empty data, inputs and targets of different lengths, a model output
            that does not fit the loss and targets (the message gives the shapes), or
            ``drop_last`` with fewer examples than one batch.
        NonFiniteLossError: the loss became NaN or infinite (the message gives step and lr).
    """
    inputs, targets = as_tensors(train_data, "train_data")
    validation = as_tensors(val_data, "val_data") if val_data is not None else None
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if drop_last and len(inputs) < batch_size:
        raise ValueError(
            f"drop_last=True with {len(inputs)} examples and batch_size={batch_size} leaves no batch"
        )
    check_loss_fits(model, loss_fn, inputs, targets)
    steps_per_epoch = (
        len(inputs) // batch_size if drop_last else math.ceil(len(inputs) / batch_size)
    )
    state = TrainingState(
        model,
        optimizer,
        History(),
        callbacks=list(callbacks),
        generator=torch.Generator().manual_seed(seed),
    )
    if resume_from is not None:
        restore_checkpoint(state, load_checkpoint(resume_from))
    bar = tqdm(
        total=epochs * steps_per_epoch,
        initial=state.step,
        disable=not progress,
        desc="training",
        unit="step",
        leave=False,
    )
    epoch = _Epoch(
        inputs=inputs,
        targets=targets,
        validation=validation,
        loss_fn=loss_fn,
        batch_size=batch_size,
        track_accuracy=tracks_accuracy(targets, accuracy),
        augment=augment,
        bar=bar,
        drop_last=drop_last,
    )
    try:
        while state.epoch < epochs:
            if _run_epoch(state, epoch):
                break
        for callback in state.callbacks:
            callback.on_train_end(state)  # e.g. early stopping puts back the best weights
    finally:
        bar.close()
    return state.history


@dataclass(frozen=True)
class _Epoch:
    """What stays the same from one epoch of a ``fit`` call to the next."""

    inputs: torch.Tensor
    targets: torch.Tensor
    validation: tuple[torch.Tensor, torch.Tensor] | None
    loss_fn: Callable
    batch_size: int
    track_accuracy: bool
    augment: Callable | None
    bar: tqdm
    drop_last: bool = False


def _run_epoch(state: TrainingState, epoch: _Epoch) -> bool:
    """One epoch; True when a callback asks to stop."""
    inputs, targets, loss_fn = epoch.inputs, epoch.targets, epoch.loss_fn
    started = time.perf_counter()
    model, optimizer = state.model, state.optimizer
    model.train()
    total_loss = 0.0
    order = torch.randperm(len(inputs), generator=state.generator)
    if epoch.drop_last:  # only whole batches: the last few examples wait for another epoch
        order = order[: len(order) - len(order) % epoch.batch_size]
    predictions = []  # predicted classes per batch: compared with the targets once per epoch
    for batch in order.split(epoch.batch_size):
        optimizer.zero_grad()
        batch_inputs = inputs[batch]
        if epoch.augment is not None:  # a fresh random transform per image, each time it is drawn
            batch_inputs = _augmented(epoch.augment, batch_inputs)
        output = model(batch_inputs)
        loss = loss_fn(output, targets[batch])
        loss.backward()
        optimizer.step()
        value = loss.item()
        lr = optimizer.param_groups[0]["lr"]
        if not math.isfinite(value):
            state.history.stop_reason = f"loss became {value} at step {state.step}"
            raise NonFiniteLossError(
                f"the loss became {value} at step {state.step} (epoch {state.epoch + 1}) with lr = {lr:g}: "
                "training diverged. Lower the learning rate, or check the inputs for NaN/inf.",
                state.history,
            )
        total_loss += value * len(batch)
        if epoch.track_accuracy:
            predictions.append(output.argmax(dim=1))
        state.history.steps.append(
            {"step": state.step, "epoch": state.epoch + 1, "loss": value, "lr": lr}
        )
        state.step += 1
        epoch.bar.update(1)
        for callback in state.callbacks:
            callback.on_step_end(state)
    state.epoch += 1
    record = {"epoch": state.epoch, "train_loss": total_loss / len(order)}
    if epoch.track_accuracy:
        record["train_accuracy"] = (torch.cat(predictions) == targets[order]).float().mean().item()
    if epoch.validation is not None:
        measured = evaluate(model, epoch.validation, loss_fn, epoch.track_accuracy)
        record.update({f"val_{k}": v for k, v in measured.items()})
    record["lr"] = optimizer.param_groups[0]["lr"]
    record["seconds"] = time.perf_counter() - started
    state.history.epochs.append(record)
    epoch.bar.set_postfix(
        {k: f"{v:.4g}" for k, v in record.items() if k.endswith(("loss", "accuracy"))}
    )
    stop = False
    for callback in state.callbacks:
        stop = callback.on_epoch_end(state) or stop
    return stop


def _augmented(augment, images: torch.Tensor) -> torch.Tensor:
    if isinstance(augment, BatchAugmentation):
        return augment(images)  # draws one transform per image itself, in one call
    # a torchvision transform: image by image
    return torch.stack([augment(image) for image in images])


@torch.no_grad()
def evaluate(
    model: nn.Module, data, loss_fn=None, accuracy: bool | None = None, batch_size: int = 512
) -> dict[str, float]:
    """Loss (if ``loss_fn``) and accuracy (for class-index targets) of ``model`` on ``data``, in eval mode."""
    inputs, targets = as_tensors(data, "data")
    track_accuracy = tracks_accuracy(targets, accuracy)
    total_loss, correct = 0.0, 0
    with evaluation_mode(model):
        for start in range(0, len(inputs), batch_size):
            output = model(inputs[start : start + batch_size])
            batch_targets = targets[start : start + batch_size]
            if loss_fn is not None:
                total_loss += loss_fn(output, batch_targets).item() * len(batch_targets)
            if track_accuracy:
                correct += int((output.argmax(dim=1) == batch_targets).sum())
    result = {}
    if loss_fn is not None:
        result["loss"] = total_loss / len(inputs)
    if track_accuracy:
        result["accuracy"] = correct / len(inputs)
    return result


@torch.no_grad()
def confusion_matrix(model: nn.Module, data, classes: int | None = None) -> torch.Tensor:
    """``matrix[true, predicted]``: how many examples of each class went to each prediction (eval mode)."""
    inputs, targets = as_tensors(data, "data")
    with evaluation_mode(model):
        predicted = torch.cat(
            [model(inputs[i : i + 512]).argmax(1) for i in range(0, len(inputs), 512)]
        )
    classes = classes or int(max(targets.max(), predicted.max())) + 1
    return torch.bincount(targets * classes + predicted, minlength=classes * classes).reshape(
        classes, classes
    )
