"""Training a network: ``fit`` records everything, ``evaluate`` measures it.

    history = fit(model, train, val, optimizer=torch.optim.Adam(model.parameters()),
                  loss_fn=nn.CrossEntropyLoss(), epochs=10)
    history.plot()

``train`` and ``val`` are :class:`course_lib.data.Split` objects (inputs and targets) or any
map-style torch Dataset of ``(input, target)`` pairs. Batches are drawn by ``fit`` itself,
from a generator seeded with ``seed``, so a run can be checkpointed and resumed exactly.
"""

from __future__ import annotations

import math
import os
import random
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn
from tqdm.auto import tqdm

from course_lib.augment import BatchAugmentation

__all__ = [
    "LearningRateSearch", "find_learning_rate", "confusion_matrix",
    "History", "fit", "evaluate", "Callback", "EarlyStopping", "LearningRateSchedule", "Checkpoint",
    "NonFiniteLossError", "load_checkpoint",
]  # fmt: skip


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; ``history`` holds everything recorded until then."""

    def __init__(self, message: str, history: History):
        super().__init__(message)
        self.history = history


@dataclass
class History:
    """What happened during training, per epoch and per step."""

    epochs: list[dict] = field(
        default_factory=list
    )  # epoch, train_loss, val_loss, *_accuracy, lr, seconds
    steps: list[dict] = field(default_factory=list)  # step, epoch, loss, lr
    stop_reason: str = ""

    def __getitem__(self, key: str) -> list:
        """Per-epoch values of ``key``, e.g. ``history["val_loss"]``."""
        if not self.epochs or key not in self.epochs[0]:
            known = sorted(self.epochs[0]) if self.epochs else []
            raise KeyError(f"no per-epoch value {key!r}; recorded: {known}")
        return [epoch[key] for epoch in self.epochs]

    def plot(self) -> Figure:
        """Loss per step and per epoch (left), accuracy per epoch (middle), learning rate (right)."""
        figure = Figure(figsize=(12, 3.4), layout="constrained")
        losses, accuracy, rates = figure.subplots(1, 3)
        if self.steps:
            per_epoch = len(self.steps) / max(len(self.epochs), 1)
            x = [(s["step"] + 1) / per_epoch for s in self.steps]
            losses.plot(
                x,
                [s["loss"] for s in self.steps],
                color="0.75",
                linewidth=0.8,
                label="train (per step)",
            )
        epochs = [e["epoch"] for e in self.epochs]
        for key, style in (("train_loss", "o-"), ("val_loss", "s-")):
            if self.epochs and key in self.epochs[0]:
                losses.plot(epochs, self[key], style, label=key.replace("_", " "))
        losses.set(xlabel="epoch", ylabel="loss", title="Loss", yscale="log")
        for key, style in (("train_accuracy", "o-"), ("val_accuracy", "s-")):
            if self.epochs and key in self.epochs[0]:
                accuracy.plot(epochs, self[key], style, label=key.replace("_", " "))
        accuracy.set(xlabel="epoch", ylabel="accuracy", title="Accuracy")
        rates.plot([s["step"] for s in self.steps], [s["lr"] for s in self.steps])
        rates.set(xlabel="step", ylabel="learning rate", title="Learning rate")
        for axes in (losses, accuracy):
            axes.grid(True, alpha=0.3)
            if axes.lines:
                axes.legend(fontsize=8)
        rates.grid(True, alpha=0.3)
        return figure


class Callback:
    """Hooks into ``fit``; return True from ``on_epoch_end`` to stop training.

    ``on_train_end`` runs once after the last epoch (also after an early stop).
    """

    def on_step_end(self, state: TrainingState) -> None: ...

    def on_epoch_end(self, state: TrainingState) -> bool:
        return False

    def on_train_end(self, state: TrainingState) -> None: ...

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None: ...


@dataclass
class TrainingState:
    model: nn.Module
    optimizer: torch.optim.Optimizer
    history: History
    epoch: int = 0  # epochs completed
    step: int = 0  # optimizer steps taken
    callbacks: Sequence[Callback] = ()
    generator: torch.Generator | None = None


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by ``min_delta`` for ``patience`` epochs.

    With ``restore_best`` the model gets back the weights of its best epoch, when it stops
    early and also when training reaches its last epoch without stopping.
    """

    def __init__(self, monitor: str = "val_loss", patience: int = 3, min_delta: float = 0.0,
                 mode: str = "min", restore_best: bool = True):  # fmt: skip
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        self.monitor, self.patience, self.min_delta = monitor, patience, min_delta
        self.mode, self.restore_best = mode, restore_best
        self.best, self.best_epoch, self.best_weights, self.waited = None, 0, None, 0

    def on_epoch_end(self, state: TrainingState) -> bool:
        value = state.history.epochs[-1].get(self.monitor)
        if value is None:
            raise ValueError(f"EarlyStopping monitors {self.monitor!r}, which fit did not record "
                             f"(recorded: {sorted(state.history.epochs[-1])}); pass val_data to fit?")  # fmt: skip
        sign = 1 if self.mode == "min" else -1
        if self.best is None or sign * (self.best - value) > self.min_delta:
            self.best, self.best_epoch, self.waited = value, state.epoch, 0
            if self.restore_best:
                self.best_weights = {
                    k: v.detach().clone() for k, v in state.model.state_dict().items()
                }
            return False
        self.waited += 1
        if self.waited < self.patience:
            return False
        state.history.stop_reason = (
            f"early stopping: {self.monitor} did not improve for {self.patience} epochs "
            f"(best {self.best:.4g} at epoch {self.best_epoch})"
        )
        return True

    def on_train_end(self, state: TrainingState) -> None:
        if self.restore_best and self.best_weights is not None:
            state.model.load_state_dict(self.best_weights)

    def state_dict(self) -> dict:
        return {
            "best": self.best,
            "best_epoch": self.best_epoch,
            "waited": self.waited,
            "best_weights": self.best_weights,
        }

    def load_state_dict(self, state: dict) -> None:
        self.best, self.best_epoch = state["best"], state["best_epoch"]
        self.waited, self.best_weights = state["waited"], state["best_weights"]


class LearningRateSchedule(Callback):
    """Step a ``torch.optim.lr_scheduler`` after every epoch (default) or every optimizer step."""

    def __init__(self, scheduler, interval: str = "epoch"):
        if interval not in ("epoch", "step"):
            raise ValueError(f"interval must be 'epoch' or 'step', got {interval!r}")
        self.scheduler, self.interval = scheduler, interval

    def on_step_end(self, state: TrainingState) -> None:
        if self.interval == "step":
            self.scheduler.step()

    def on_epoch_end(self, state: TrainingState) -> bool:
        if self.interval == "epoch":
            self.scheduler.step()
        return False

    def state_dict(self) -> dict:
        return self.scheduler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.scheduler.load_state_dict(state)


class Checkpoint(Callback):
    """Save everything needed to resume after every ``every`` epochs, atomically, to ``path``."""

    def __init__(self, path: str | os.PathLike, every: int = 1):
        self.path, self.every = Path(path), every

    def on_epoch_end(self, state: TrainingState) -> bool:
        if state.epoch % self.every == 0:
            save_checkpoint(self.path, state)
        return False


def save_checkpoint(path: Path, state: TrainingState) -> None:
    """Model, optimizer, callbacks (schedules, early stopping), epoch, history and every RNG state.

    Written to a temporary file in the same folder, then renamed over ``path``: a crash
    mid-write leaves the previous checkpoint intact.
    """
    payload = {
        "model": state.model.state_dict(),
        "optimizer": state.optimizer.state_dict(),
        "callbacks": [callback.state_dict() for callback in state.callbacks],
        "epoch": state.epoch,
        "step": state.step,
        "history": {"epochs": state.history.epochs, "steps": state.history.steps},
        "rng": {
            "torch": torch.get_rng_state(),
            "numpy": np.random.get_state(),
            "python": random.getstate(),
            "batches": state.generator.get_state() if state.generator is not None else None,
        },
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            torch.save(payload, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a checkpoint written by :class:`Checkpoint` (python, numpy and torch objects only)."""
    # weights_only=False is needed for numpy's and python's RNG states; checkpoints are
    # files this course wrote itself. Never load checkpoints from others this way (chapter 6).
    return torch.load(path, map_location="cpu", weights_only=False)


def _restore(state: TrainingState, checkpoint: dict) -> None:
    state.model.load_state_dict(checkpoint["model"])
    state.optimizer.load_state_dict(checkpoint["optimizer"])
    if len(checkpoint["callbacks"]) != len(state.callbacks):
        raise ValueError(f"the checkpoint has {len(checkpoint['callbacks'])} callbacks' state, "
                         f"but fit got {len(state.callbacks)} callbacks: pass the same callbacks to resume")  # fmt: skip
    for callback, callback_state in zip(state.callbacks, checkpoint["callbacks"], strict=True):
        callback.load_state_dict(callback_state)
    state.epoch, state.step = checkpoint["epoch"], checkpoint["step"]
    state.history.epochs = list(checkpoint["history"]["epochs"])
    state.history.steps = list(checkpoint["history"]["steps"])
    torch.set_rng_state(checkpoint["rng"]["torch"])
    np.random.set_state(checkpoint["rng"]["numpy"])
    random.setstate(checkpoint["rng"]["python"])
    if checkpoint["rng"]["batches"] is not None:
        state.generator.set_state(checkpoint["rng"]["batches"])


# --- data handling -------------------------------------------------------------------------


def _as_tensors(data, name: str) -> tuple[torch.Tensor, torch.Tensor]:
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
        raise ValueError(f"{name} has {len(inputs)} inputs but {len(targets)} targets: "
                         "every input needs exactly one target")  # fmt: skip
    return inputs, targets


def _check_loss_fits(
    model: nn.Module, loss_fn, inputs: torch.Tensor, targets: torch.Tensor
) -> None:
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


def _tracks_accuracy(targets: torch.Tensor, accuracy: bool | None) -> bool:
    """Accuracy is measured for class-index targets, unless the caller says otherwise."""
    return (not targets.is_floating_point()) if accuracy is None else accuracy


# --- the loop ------------------------------------------------------------------------------


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
) -> History:
    """Train ``model`` for ``epochs`` epochs of shuffled mini-batches; return the History.

    Records the loss and learning rate of every step, and per epoch the training loss (the
    mean over the epoch's batches), validation loss, accuracy (for class-index targets, unless
    ``accuracy=False``) and seconds. ``resume_from`` continues a run saved by a Checkpoint
    callback: the final weights equal those of an uninterrupted run. ``augment`` (a
    ``course_lib.augment.BatchAugmentation``, fast, or any per-image transform such as
    ``augmentation(...)``) transforms each training image anew every time it is drawn;
    validation data is never augmented.

    Raises:
        ValueError: empty data, inputs and targets of different lengths, or a model output
            that does not fit the loss and targets (the message gives the shapes).
        NonFiniteLossError: the loss became NaN or infinite (the message gives step and lr).
    """
    inputs, targets = _as_tensors(train_data, "train_data")
    validation = _as_tensors(val_data, "val_data") if val_data is not None else None
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    _check_loss_fits(model, loss_fn, inputs, targets)
    track_accuracy = _tracks_accuracy(targets, accuracy)
    state = TrainingState(model, optimizer, History(), callbacks=list(callbacks),
                          generator=torch.Generator().manual_seed(seed))  # fmt: skip
    if resume_from is not None:
        _restore(state, load_checkpoint(resume_from))
    bar = tqdm(total=epochs * math.ceil(len(inputs) / batch_size), initial=state.step,
               disable=not progress, desc="training", unit="step", leave=False)  # fmt: skip
    try:
        while state.epoch < epochs:
            if _run_epoch(
                state,
                inputs,
                targets,
                validation,
                loss_fn,
                batch_size,
                track_accuracy,
                bar,
                augment,
            ):
                break
        for callback in state.callbacks:
            callback.on_train_end(state)  # e.g. early stopping puts back the best weights
    finally:
        bar.close()
    return state.history


def _run_epoch(
    state, inputs, targets, validation, loss_fn, batch_size, track_accuracy, bar, augment
) -> bool:
    """One epoch; True when a callback asks to stop."""
    started = time.perf_counter()
    model, optimizer = state.model, state.optimizer
    model.train()
    total_loss = 0.0
    order = torch.randperm(len(inputs), generator=state.generator)
    predictions = []  # predicted classes per batch: compared with the targets once per epoch
    for batch in order.split(batch_size):
        optimizer.zero_grad()
        batch_inputs = inputs[batch]
        if augment is not None:  # a fresh random transform per image, every time it is drawn
            batch_inputs = _augmented(augment, batch_inputs)
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
        if track_accuracy:
            predictions.append(output.argmax(dim=1))
        state.history.steps.append(
            {"step": state.step, "epoch": state.epoch + 1, "loss": value, "lr": lr}
        )
        state.step += 1
        bar.update(1)
        for callback in state.callbacks:
            callback.on_step_end(state)
    state.epoch += 1
    record = {"epoch": state.epoch, "train_loss": total_loss / len(inputs)}
    if track_accuracy:
        record["train_accuracy"] = (torch.cat(predictions) == targets[order]).float().mean().item()
    if validation is not None:
        record.update(
            {f"val_{k}": v for k, v in evaluate(model, validation, loss_fn, track_accuracy).items()}
        )
    record["lr"] = optimizer.param_groups[0]["lr"]
    record["seconds"] = time.perf_counter() - started
    state.history.epochs.append(record)
    bar.set_postfix({k: f"{v:.4g}" for k, v in record.items() if k.endswith(("loss", "accuracy"))})
    stop = False
    for callback in state.callbacks:
        stop = callback.on_epoch_end(state) or stop
    return stop


def _augmented(augment, images: torch.Tensor) -> torch.Tensor:
    if isinstance(augment, BatchAugmentation):
        return augment(images)  # draws one transform per image itself, in one call
    return torch.stack(
        [augment(image) for image in images]
    )  # a torchvision transform: image by image


@torch.no_grad()
def evaluate(model: nn.Module, data, loss_fn=None, accuracy: bool | None = None,
             batch_size: int = 512) -> dict[str, float]:  # fmt: skip
    """Loss (if ``loss_fn``) and accuracy (for class-index targets) of ``model`` on ``data``, in eval mode."""
    inputs, targets = _as_tensors(data, "data")
    track_accuracy = _tracks_accuracy(targets, accuracy)
    was_training = model.training
    model.eval()
    total_loss, correct = 0.0, 0
    for start in range(0, len(inputs), batch_size):
        output = model(inputs[start : start + batch_size])
        batch_targets = targets[start : start + batch_size]
        if loss_fn is not None:
            total_loss += loss_fn(output, batch_targets).item() * len(batch_targets)
        if track_accuracy:
            correct += int((output.argmax(dim=1) == batch_targets).sum())
    model.train(was_training)
    result = {}
    if loss_fn is not None:
        result["loss"] = total_loss / len(inputs)
    if track_accuracy:
        result["accuracy"] = correct / len(inputs)
    return result


# --- looking at a model and its training -----------------------------------------------------


@torch.no_grad()
def confusion_matrix(model: nn.Module, data, classes: int | None = None) -> torch.Tensor:
    """``matrix[true, predicted]``: how many examples of each class went to each prediction (eval mode)."""
    inputs, targets = _as_tensors(data, "data")
    was_training = model.training
    model.eval()
    predicted = torch.cat(
        [model(inputs[i : i + 512]).argmax(1) for i in range(0, len(inputs), 512)]
    )
    model.train(was_training)
    classes = classes or int(max(targets.max(), predicted.max())) + 1
    return torch.bincount(targets * classes + predicted, minlength=classes * classes).reshape(
        classes, classes
    )


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
        axes.set(xscale="log", xlabel="learning rate (log scale)", ylabel="smoothed training loss",
                 title="Learning-rate range test")  # fmt: skip
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
    inputs, targets = _as_tensors(train_data, "train_data")
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
