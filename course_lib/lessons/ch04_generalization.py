"""Chapter 4's experiment: train one network on a small training set with each regularizer, alone and together.

A :class:`Recipe` says which techniques a run uses; :func:`train_with` turns it into the
usual ``mlp`` + ``AdamW`` + ``fit`` call, so each technique is one visible argument:

- data augmentation: ``fit(..., augment=BatchAugmentation(...))``
- dropout: ``mlp(..., dropout=p)``
- weight decay: ``torch.optim.AdamW(..., weight_decay=lam)``
- early stopping: ``fit(..., callbacks=[EarlyStopping(patience=k)])``
- a cosine learning-rate schedule: ``callbacks=[LearningRateSchedule(CosineAnnealingLR(...))]``

:func:`compare_recipes` runs every recipe with several seeds and measures test accuracy.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

import ipywidgets as widgets
import torch
from matplotlib.figure import Figure
from torch import nn
from tqdm.auto import tqdm

from course_lib.augment import BatchAugmentation
from course_lib.data import Split
from course_lib.models import mlp
from course_lib.train import EarlyStopping, History, LearningRateSchedule, evaluate, fit
from course_lib.widgets import Controls

__all__ = [
    "Recipe",
    "technique_recipes",
    "train_with",
    "compare_recipes",
    "RecipeResult",
    "results_table",
    "results_figure",
    "augmentation_controls",
]


@dataclass(frozen=True)
class Recipe:
    """The techniques of one training run; the defaults switch everything off."""

    augment: BatchAugmentation | None = None
    dropout: float = 0.0
    weight_decay: float = 0.0
    early_stopping_patience: int | None = None
    cosine_schedule: bool = False


def technique_recipes(
    *, augment: BatchAugmentation, dropout: float, weight_decay: float, early_stopping_patience: int
) -> dict[str, Recipe]:
    """Plain training, each technique alone, and all of them combined, by name."""
    return {
        "nothing": Recipe(),
        "augmentation": Recipe(augment=augment),
        "dropout": Recipe(dropout=dropout),
        "weight decay": Recipe(weight_decay=weight_decay),
        "early stopping": Recipe(early_stopping_patience=early_stopping_patience),
        "cosine schedule": Recipe(cosine_schedule=True),
        "all combined": Recipe(augment, dropout, weight_decay, early_stopping_patience, True),
    }


def train_with(
    recipe: Recipe,
    train: Split,
    val: Split,
    *,
    hidden: Sequence[int] = (256, 256),
    epochs: int = 100,
    lr: float = 1e-3,
    batch_size: int = 32,
    seed: int = 0,
) -> tuple[nn.Module, History]:
    """Train an MLP on ``train`` (images or vectors) with ``recipe``; return the model and its History.

    The model, the batch order and the augmentations all follow ``seed``. Early stopping
    watches the validation loss and puts back the weights of the best epoch.
    """
    torch.manual_seed(seed)
    features = train.inputs[0].numel()
    classes = int(torch.cat([train.targets, val.targets]).max()) + 1
    model = mlp(features, list(hidden), classes, dropout=recipe.dropout)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=recipe.weight_decay)
    callbacks = []
    if recipe.early_stopping_patience is not None:
        callbacks.append(EarlyStopping("val_loss", patience=recipe.early_stopping_patience))
    if recipe.cosine_schedule:
        callbacks.append(
            LearningRateSchedule(
                torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
            )
        )
    history = fit(
        model,
        train,
        val,
        optimizer=optimizer,
        loss_fn=nn.CrossEntropyLoss(),
        epochs=epochs,
        batch_size=batch_size,
        callbacks=callbacks,
        seed=seed,
        progress=False,
        augment=recipe.augment,
    )
    return model, history


@dataclass(frozen=True)
class RecipeResult:
    """Test accuracy and epochs trained, one entry per seed."""

    test_accuracy: list[float]
    epochs: list[int]

    @property
    def mean(self) -> float:
        return statistics.fmean(self.test_accuracy)


def compare_recipes(
    recipes: dict[str, Recipe],
    train: Split,
    val: Split,
    test: Split,
    *,
    seeds: Sequence[int] = (0, 1, 2),
    progress: bool = True,
    **training,
) -> dict[str, RecipeResult]:
    """Train every recipe once per seed (``training`` goes to :func:`train_with`); measure test accuracy."""
    if not recipes or not seeds:
        raise ValueError("give at least one recipe and one seed")
    results = {}
    with tqdm(total=len(recipes) * len(seeds), desc="training runs", disable=not progress) as bar:
        for name, recipe in recipes.items():
            accuracies, epochs = [], []
            for seed in seeds:
                model, history = train_with(recipe, train, val, seed=seed, **training)
                accuracies.append(evaluate(model, test)["accuracy"])
                epochs.append(len(history.epochs))
                bar.update(1)
            results[name] = RecipeResult(accuracies, epochs)
    return results


def results_table(results: dict[str, RecipeResult], baseline: str = "nothing") -> str:
    """A text table: mean test accuracy, its range over seeds, and the gain over ``baseline``."""
    reference = results[baseline].mean if baseline in results else None
    lines = [
        f"{'technique':<16} {'test accuracy':>13} {'seeds: min - max':>17} {'gain':>7} {'epochs':>11}"
    ]
    for name, result in results.items():
        gain = f"{100 * (result.mean - reference):+.1f}" if reference is not None else ""
        span = f"{min(result.test_accuracy):.3f} - {max(result.test_accuracy):.3f}"
        epochs = "/".join(str(e) for e in result.epochs)
        lines.append(f"{name:<16} {result.mean:>13.3f} {span:>17} {gain:>7} {epochs:>11}")
    lines.append("gain: points of test accuracy over '" + baseline + "'; epochs: trained per seed")
    return "\n".join(lines)


def results_figure(results: dict[str, RecipeResult], title: str = "") -> Figure:
    """Horizontal bars of mean test accuracy, with one dot per seed."""
    names = list(results)
    figure = Figure(figsize=(7, 0.45 * len(names) + 1.2), layout="constrained")
    axes = figure.subplots()
    positions = range(len(names))
    axes.barh(positions, [results[n].mean for n in names], color="#9ecae1")
    for position, name in zip(positions, names, strict=True):
        scores = results[name].test_accuracy
        axes.plot(scores, [position] * len(scores), "o", color="#08519c", markersize=4)
    axes.set_yticks(list(positions), names)
    axes.invert_yaxis()
    low = min(min(r.test_accuracy) for r in results.values())
    axes.set_xlim(max(0.0, low - 0.05), 1.0)
    axes.set_xlabel("test accuracy (bar: mean; dots: one per seed)")
    if title:
        axes.set_title(title)
    return figure


def augmentation_controls() -> Controls:
    """Sliders and a checkbox for ``course_lib.augment.augmentation``: the explorer of chapter 4."""
    style, layout = {"description_width": "110px"}, widgets.Layout(width="420px")
    return Controls(
        shear_intensity=widgets.FloatSlider(
            value=0.2,
            min=0,
            max=0.8,
            step=0.05,
            description="shear (rad)",
            style=style,
            layout=layout,
        ),
        zoom_amount=widgets.FloatSlider(
            value=0.2, min=0, max=0.6, step=0.05, description="zoom ±", style=style, layout=layout
        ),
        rotation_degrees=widgets.FloatSlider(
            value=0, min=0, max=45, step=5, description="rotation (°)", style=style, layout=layout
        ),
        flip=widgets.Checkbox(
            value=True, description="horizontal flip", style=style, layout=layout
        ),
    )
