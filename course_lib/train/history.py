"""What training recorded: per-epoch and per-step values, and the error for a diverged run."""

from __future__ import annotations

from dataclasses import dataclass, field

from matplotlib.figure import Figure

__all__ = ["History", "NonFiniteLossError"]


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; ``history`` holds everything recorded until then."""

    def __init__(self, message: str, history: History):
        super().__init__(message)
        self.history = history


@dataclass
class History:
    """What happened during training, per epoch and per step."""

    # epoch, train_loss, val_loss, *_accuracy, lr, seconds
    epochs: list[dict] = field(default_factory=list)
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
