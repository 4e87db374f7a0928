"""Chapter 5's experiment: six ways to train a digit classifier, from scratch to gradual unfreezing.

Every strategy gets the same budget (a fixed number of optimizer steps, batch up to 32) on
the same labelled examples, and is scored on the same held-out test set. Only what is
trained, and with which learning rates, changes:

====================  ==========================================================================
scratch               random weights, everything trained (lr 1e-3)
features (live)       pretrained backbone frozen, only a new head trained (lr 1e-2)
features (cached)     the same, on embeddings computed once with ``extract_features``
layer4 + fc           pretrained; layer4 and the head trained (lr 1e-3), the rest frozen
all, per-block lr     pretrained; everything trained, earlier blocks slower (1e-3 head .. 1e-4)
gradual unfreezing    head first, layer4 after a third of the epochs, layer3 after two thirds
====================  ==========================================================================
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from matplotlib.figure import Figure
from torch import nn
from tqdm.auto import tqdm

from course_lib.data import Split, per_class_subset
from course_lib.train import Callback, TrainingState, evaluate, fit
from course_lib.transfer import (
    GradualUnfreezing,
    extract_features,
    load_backbone,
    param_groups,
    replace_head,
    trainable_parameters,
)

__all__ = ["STRATEGIES", "TransferRun", "train_strategy", "compare_strategies", "strategy_table",
           "learning_curve", "learning_curve_figure", "convergence_figure", "transfer_controls",
           "transfer_figure"]  # fmt: skip

STRATEGIES = ("scratch", "features (live)", "features (cached)", "layer4 + fc",
              "all, per-block lr", "gradual unfreezing")  # fmt: skip
BLOCKS = ("conv1", "bn1", "layer1", "layer2", "layer3", "layer4", "fc")
PER_BLOCK_LR = {"fc": 1e-3, "layer4": 3e-4, "layer3": 1e-4, "layer2": 1e-4, "layer1": 1e-4,
                "bn1": 1e-4, "conv1": 1e-4}  # fmt: skip


@dataclass
class TransferRun:
    """One training run: its final test accuracy, cost, and accuracy along the way."""

    strategy: str
    test_accuracy: float
    train_accuracy: float  # on the labelled examples it trained on
    trainable: int
    seconds_per_epoch: float  # median over epochs, training only (no evaluation)
    epochs: int
    curve: list[tuple[int, float]] = field(default_factory=list)  # (step, validation accuracy)

    def epochs_to(self, target: float, steps_per_epoch: int) -> int | None:
        """The first epoch at whose end validation accuracy reached ``target`` (None: never)."""
        for step, accuracy in self.curve:
            if accuracy >= target:
                return math.ceil(step / steps_per_epoch)
        return None


class _AccuracyEvery(Callback):
    """Validation accuracy every ``every`` steps (evaluation does not count in an epoch's seconds)."""

    def __init__(self, data: Split, every: int):
        self.data, self.every, self.curve = data, every, []

    def on_step_end(self, state: TrainingState) -> None:
        if state.step % self.every == 0:
            self.curve.append((state.step, evaluate(state.model, self.data)["accuracy"]))


def _model_and_groups(strategy: str, classes: int, epochs: int, lr: float | None,
                      blocks: Sequence[str] | None):  # fmt: skip
    """The network, the optimizer's parameter groups and any callbacks of one strategy."""
    if strategy == "scratch":
        model = replace_head(load_backbone("small_resnet"), classes)
        return model, [{"params": list(model.parameters()), "lr": lr or 1e-3}], []
    model = replace_head(load_backbone("bundled"), classes)
    if strategy in ("features (live)", "features (cached)"):
        return model, param_groups(model, {"fc": lr or 1e-2}), []
    if strategy == "layer4 + fc":
        trained = blocks if blocks is not None else ("layer4",)
        return (
            model,
            param_groups(model, {"fc": lr or 1e-3, **{b: lr or 1e-3 for b in trained}}),
            [],
        )
    if strategy == "all, per-block lr":
        scale = (lr or 1e-3) / 1e-3
        return model, param_groups(model, {b: r * scale for b, r in PER_BLOCK_LR.items()}), []
    if strategy == "gradual unfreezing":
        groups = param_groups(
            model, {"fc": lr or 1e-3, "layer4": lr or 1e-3, "layer3": (lr or 1e-3) / 3}
        )
        schedule = {0: ["fc"], max(1, epochs // 3): ["layer4"], max(2, 2 * epochs // 3): ["layer3"]}
        return model, groups, [GradualUnfreezing(model, schedule)]
    raise ValueError(f"unknown strategy {strategy!r}; choose one of {list(STRATEGIES)}")


def train_strategy(strategy: str, train: Split, val: Split, test: Split, *, steps: int = 100,
                   seed: int = 0, lr: float | None = None, blocks: Sequence[str] | None = None,
                   curve_every: int | None = None) -> TransferRun:  # fmt: skip
    """Train with one of STRATEGIES for ``steps`` optimizer steps and measure it.

    ``lr`` replaces the strategy's head learning rate (other blocks keep their ratio to it);
    ``blocks`` are the backbone blocks "layer4 + fc" trains (default: layer4 only).
    ``curve_every`` records validation accuracy every so many steps.
    """
    batch_size = min(32, len(train))
    steps_per_epoch = math.ceil(len(train) / batch_size)
    epochs = math.ceil(steps / steps_per_epoch)
    torch.manual_seed(seed)
    classes = int(test.targets.max()) + 1
    model, groups, callbacks = _model_and_groups(strategy, classes, epochs, lr, blocks)
    if strategy == "features (cached)":  # from here on, only the head and stored embeddings
        train, val, test = (extract_features(model, split) for split in (train, val, test))
        model = model.fc
    recorder = _AccuracyEvery(val, curve_every) if curve_every else None
    history = fit(model, train, optimizer=torch.optim.Adam(groups), loss_fn=nn.CrossEntropyLoss(),
                  epochs=epochs, batch_size=batch_size, seed=seed, progress=False,
                  callbacks=[*callbacks, *([recorder] if recorder else [])])  # fmt: skip
    return TransferRun(
        strategy=strategy,
        test_accuracy=evaluate(model, test)["accuracy"],
        train_accuracy=evaluate(model, train)["accuracy"],
        trainable=trainable_parameters(model),  # at the end (gradual unfreezing adds blocks)
        seconds_per_epoch=statistics.median(history["seconds"]),
        epochs=epochs,
        curve=recorder.curve if recorder else [],
    )


def compare_strategies(strategies: Sequence[str], splits_by_seed: dict[int, tuple[Split, Split, Split]],
                       per_class: int, *, steps: int = 100, curve_every: int | None = None,
                       progress: bool = True) -> dict[str, list[TransferRun]]:  # fmt: skip
    """Every strategy on ``per_class`` labelled examples per class, once per seed (same data for all)."""
    runs: dict[str, list[TransferRun]] = {s: [] for s in strategies}
    jobs = [(seed, s) for seed in splits_by_seed for s in strategies]
    for seed, strategy in tqdm(jobs, desc="training", disable=not progress, leave=False):
        train, val, test = splits_by_seed[seed]
        labelled = per_class_subset(train, per_class, seed=seed)
        runs[strategy].append(train_strategy(strategy, labelled, val, test, steps=steps,
                                             seed=seed, curve_every=curve_every))  # fmt: skip
    return runs


def _mean(runs: list[TransferRun]) -> float:
    return statistics.fmean(r.test_accuracy for r in runs)


def strategy_table(
    runs: dict[str, list[TransferRun]], *, target: float, steps_per_epoch: int
) -> str:
    """Test accuracy and seconds per epoch (means over seeds), trainable parameters, epochs to ``target``."""
    lines = [f"{'strategy':<20} {'test accuracy':>13} {'trainable':>10} {'per epoch':>10} "
             f"{'epochs to ' + format(target, '.0%'):>13}"]  # fmt: skip
    for name, seeds in runs.items():
        reached = [r.epochs_to(target, steps_per_epoch) for r in seeds]
        epochs = "/".join("-" if e is None else str(e) for e in reached)
        milliseconds = 1000 * statistics.fmean(r.seconds_per_epoch for r in seeds)
        lines.append(f"{name:<20} {_mean(seeds):>13.3f} {seeds[0].trainable:>10,} "
                     f"{milliseconds:>7.2f} ms {epochs:>13}")  # fmt: skip
    lines.append(f"epochs to {target:.0%}: first epoch with validation accuracy >= {target:.0%}, per seed "
                 "('-': not within the budget)")  # fmt: skip
    return "\n".join(lines)


def learning_curve(strategies: Sequence[str], splits_by_seed: dict[int, tuple[Split, Split, Split]],
                   shots: Sequence[int | None], *, steps: int = 100,
                   progress: bool = True) -> dict[str, dict[int | None, list[float]]]:  # fmt: skip
    """Test accuracy per strategy and labelled examples per class (None: the whole training split)."""
    curves: dict[str, dict[int | None, list[float]]] = {
        s: {k: [] for k in shots} for s in strategies
    }
    jobs = [(seed, k, s) for seed in splits_by_seed for k in shots for s in strategies]
    for seed, k, strategy in tqdm(jobs, desc="training", disable=not progress, leave=False):
        train, val, test = splits_by_seed[seed]
        labelled = train if k is None else per_class_subset(train, k, seed=seed)
        run = train_strategy(strategy, labelled, val, test, steps=steps, seed=seed)
        curves[strategy][k].append(run.test_accuracy)
    return curves


def learning_curve_figure(
    curves: dict[str, dict[int | None, list[float]]], full_size: int
) -> Figure:
    """Test accuracy against labelled examples per class (log axis); one line per strategy."""
    figure = Figure(figsize=(6.5, 4), layout="constrained")
    axes = figure.subplots()
    for strategy, by_shots in curves.items():
        shots = [full_size if k is None else k for k in by_shots]
        means = [statistics.fmean(v) for v in by_shots.values()]
        axes.plot(shots, means, "o-", label=strategy)
    axes.set_xscale("log")
    axes.set_xticks(shots, [str(k) for k in shots])
    axes.minorticks_off()
    axes.set_xlabel("labelled examples per class (log scale; the last point: all of them)")
    axes.set_ylabel("test accuracy (mean over seeds)")
    axes.set_title("Less data: how many labels each strategy needs")
    axes.grid(alpha=0.3)
    axes.legend()
    return figure


def convergence_figure(runs: dict[str, list[TransferRun]]) -> Figure:
    """Validation accuracy against optimizer steps, first seed of each strategy."""
    figure = Figure(figsize=(6.5, 4), layout="constrained")
    axes = figure.subplots()
    for strategy, seeds in runs.items():
        if seeds[0].curve:
            steps, accuracy = zip(*seeds[0].curve, strict=True)
            style = "--" if strategy == "features (cached)" else "-"  # same numbers as live
            axes.plot(steps, accuracy, style, label=strategy)
    axes.set_xlabel("optimizer steps")
    axes.set_ylabel("validation accuracy")
    axes.set_ylim(0, 1)
    axes.set_title("Faster: accuracy along the way")
    axes.grid(alpha=0.3)
    axes.legend()
    return figure


# --- the explorer widget ------------------------------------------------------------------------


def transfer_controls():
    """Sliders for :func:`transfer_figure`: start, trained blocks, labels per class, learning rate."""
    import ipywidgets as widgets

    from course_lib.widgets import Controls

    return Controls(
        start=widgets.ToggleButtons(
            options=["pretrained", "scratch"], value="pretrained", description="weights"
        ),  # fmt: skip
        blocks=widgets.SelectMultiple(
            options=["layer1", "layer2", "layer3", "layer4"],
            value=["layer4"],
            description="also train",
            rows=4,
        ),  # fmt: skip
        per_class=widgets.SelectionSlider(
            options=[1, 2, 5, 10, 20, 50], value=5, description="labels/class"
        ),  # fmt: skip
        lr=widgets.FloatLogSlider(
            value=1e-3, base=10, min=-4, max=-1, step=0.5, description="learning rate"
        ),  # fmt: skip
    )


def transfer_figure(splits: tuple[Split, Split, Split], *, start: str = "pretrained",
                    blocks: Sequence[str] = ("layer4",), per_class: int = 5, lr: float = 1e-3,
                    steps: int = 60, seed: int = 0) -> Figure:  # fmt: skip
    """Train once with the chosen settings and plot validation accuracy along the way.

    ``start="scratch"`` trains every block from random weights; "pretrained" trains the head
    and ``blocks`` (none: feature extraction), the rest frozen.
    """
    train, val, test = splits
    labelled = per_class_subset(train, per_class, seed=seed)
    strategy = "scratch" if start == "scratch" else "layer4 + fc"
    run = train_strategy(strategy, labelled, val, test, steps=steps, seed=seed, lr=lr,
                         blocks=list(blocks), curve_every=5)  # fmt: skip
    figure = Figure(figsize=(6.5, 3.6), layout="constrained")
    axes = figure.subplots()
    steps_seen, accuracy = zip(*run.curve, strict=True)
    axes.plot(steps_seen, accuracy, "o-", color="#08519c")
    trained = "everything" if start == "scratch" else " + ".join([*blocks, "fc"])
    axes.set_title(f"{start}, training {trained}: test accuracy {run.test_accuracy:.3f} "
                   f"({run.trainable:,} parameters trained)", fontsize=10)  # fmt: skip
    axes.set_xlabel("optimizer steps")
    axes.set_ylabel("validation accuracy")
    axes.set_ylim(0, 1)
    axes.grid(alpha=0.3)
    return figure
