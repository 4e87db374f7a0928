"""Callbacks: what ``fit`` calls after each step and epoch, and checkpoints to resume from.

A callback sees the :class:`TrainingState` (model, optimizer, history, epoch and step) and
may ask training to stop. Checkpoints hold everything a run needs to resume exactly: weights,
optimizer, callbacks' state, history and every random generator.
"""

from __future__ import annotations

import os
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from course_lib.files import write_atomically
from course_lib.train.history import History

__all__ = [
    "Callback",
    "TrainingState",
    "EarlyStopping",
    "LearningRateSchedule",
    "Checkpoint",
    "save_checkpoint",
    "load_checkpoint",
    "restore_checkpoint",
]


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

    def __init__(
        self,
        monitor: str = "val_loss",
        patience: int = 3,
        min_delta: float = 0.0,
        mode: str = "min",
        restore_best: bool = True,
    ):
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        self.monitor, self.patience, self.min_delta = monitor, patience, min_delta
        self.mode, self.restore_best = mode, restore_best
        self.best, self.best_epoch, self.best_weights, self.waited = None, 0, None, 0

    def on_epoch_end(self, state: TrainingState) -> bool:
        value = state.history.epochs[-1].get(self.monitor)
        if value is None:
            raise ValueError(
                f"EarlyStopping monitors {self.monitor!r}, which fit did not record "
                f"(recorded: {sorted(state.history.epochs[-1])}); pass val_data to fit?"
            )
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
    write_atomically(path, lambda file: torch.save(payload, file))


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a checkpoint written by :class:`Checkpoint` (python, numpy and torch objects only)."""
    # weights_only=False is needed for numpy's and python's RNG states; checkpoints are
    # files this course wrote itself. Never load checkpoints from others this way (chapter 6).
    return torch.load(path, map_location="cpu", weights_only=False)


def restore_checkpoint(state: TrainingState, checkpoint: dict) -> None:
    state.model.load_state_dict(checkpoint["model"])
    state.optimizer.load_state_dict(checkpoint["optimizer"])
    if len(checkpoint["callbacks"]) != len(state.callbacks):
        raise ValueError(
            f"the checkpoint has {len(checkpoint['callbacks'])} callbacks' state, "
            f"but fit got {len(state.callbacks)} callbacks: pass the same callbacks to resume"
        )
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
