"""Chapter 4's experiment: one network on a small training set with each regularizer, alone and together.

A :class:`Recipe` says which techniques a run uses; :func:`train_with` turns it into the
usual ``mlp`` + ``AdamW`` + ``fit`` call, so each technique is one visible argument:

- data augmentation: ``fit(..., augment=BatchAugmentation(...))``
- dropout: ``mlp(..., dropout=p)``
- weight decay: ``torch.optim.AdamW(..., weight_decay=lam)``
- early stopping: ``fit(..., callbacks=[EarlyStopping(patience=k)])``
- a cosine learning-rate schedule: ``callbacks=[LearningRateSchedule(CosineAnnealingLR(...))]``

A fair comparison makes every choice on validation data and reads the test set once, at the
end. :class:`RecipeStudy` trains each (recipe, seed) once and keeps the run, so the chapter's
sections share runs: :meth:`RecipeStudy.choose` picks a setting (dropout p, weight decay
lambda) by mean validation accuracy over the seeds (the weakest within half a point of the
best), and :meth:`RecipeStudy.test_results` measures the chosen recipes on the test set.
Early stopping is the stopping epoch chosen on validation: the weights of the epoch with the
lowest validation loss, which a recipe without early stopping trains through anyway, so both
share one run.
"""

from __future__ import annotations

import copy
import dataclasses
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

import ipywidgets as widgets
import torch
from matplotlib.figure import Figure
from torch import nn

from course_lib.augment import BatchAugmentation
from course_lib.data import Split
from course_lib.models import evaluation_mode, mlp
from course_lib.train import (
    Callback,
    EarlyStopping,
    History,
    LearningRateSchedule,
    TrainingState,
    fit,
)
from course_lib.widgets import Controls

__all__ = [
    "Recipe",
    "technique_recipes",
    "train_with",
    "stopping_epoch",
    "Run",
    "RecipeStudy",
    "RecipeResult",
    "learning_rate_area",
    "memorised_fraction",
    "paired_bootstrap",
    "results_table",
    "results_figure",
    "curves_figure",
    "augmentation_controls",
]


@dataclass(frozen=True)
class Recipe:
    """The techniques of one training run; the defaults switch everything off (AdamW at lr 0.001).

    ``early_stopping`` keeps the weights of the epoch with the lowest validation loss.
    """

    augment: BatchAugmentation | None = None
    dropout: float = 0.0
    weight_decay: float = 0.0
    early_stopping: bool = False
    cosine_schedule: bool = False
    lr: float = 1e-3

    def training_run(self) -> Recipe:
        """The recipe whose run this one uses: early stopping only picks an epoch of that run."""
        return dataclasses.replace(self, early_stopping=False)


def technique_recipes(
    *,
    augment: BatchAugmentation,
    dropout: float,
    weight_decay: float,
    combined: Recipe | None = None,
) -> dict[str, Recipe]:
    """Plain training, each technique alone, and all four regularizers combined, by name.

    The cosine schedule lowers the learning rate, so it comes with a constant rate of about
    the same area (the same sum of step sizes): half the rate, ``lr / 2``. ``combined`` is
    the recipe of all four regularizers (default: the single settings, together, with early
    stopping); settings chosen one at a time may be too strong together, so choose it too.
    """
    if combined is None:
        combined = Recipe(augment, dropout, weight_decay, early_stopping=True)
    return {
        "nothing": Recipe(),
        "augmentation": Recipe(augment=augment),
        "dropout": Recipe(dropout=dropout),
        "weight decay": Recipe(weight_decay=weight_decay),
        "early stopping": Recipe(early_stopping=True),
        "cosine schedule": Recipe(cosine_schedule=True),
        "constant lr / 2": Recipe(lr=Recipe().lr / 2),
        "all combined": combined,
    }


def _model_and_optimizer(recipe: Recipe, train: Split, val: Split, hidden: Sequence[int]):
    features = train.inputs[0].numel()
    classes = int(torch.cat([train.targets, val.targets]).max()) + 1
    model = mlp(features, list(hidden), classes, dropout=recipe.dropout)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay
    )
    return model, optimizer


def _fit(recipe: Recipe, train, val, model, optimizer, callbacks, *, epochs, batch_size, seed):
    if recipe.cosine_schedule:
        cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
        callbacks = [*callbacks, LearningRateSchedule(cosine)]
    return fit(
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


def train_with(
    recipe: Recipe,
    train: Split,
    val: Split,
    *,
    hidden: Sequence[int] = (256, 256),
    epochs: int = 50,
    batch_size: int = 32,
    seed: int = 0,
    patience: int | None = None,
) -> tuple[nn.Module, History]:
    """Train an MLP on ``train`` (images or vectors) with ``recipe``; return the model and its History.

    The model, the batch order and the augmentations all follow ``seed``. With early
    stopping, ``EarlyStopping`` watches the validation loss, stops after ``patience`` epochs
    without improvement (None: never stops, watches the whole run) and puts back the weights
    of the best epoch.
    """
    torch.manual_seed(seed)
    model, optimizer = _model_and_optimizer(recipe, train, val, hidden)
    callbacks = []
    if recipe.early_stopping:
        callbacks.append(EarlyStopping("val_loss", patience=patience or epochs))
    history = _fit(
        recipe,
        train,
        val,
        model,
        optimizer,
        callbacks,
        epochs=epochs,
        batch_size=batch_size,
        seed=seed,
    )
    return model, history


def stopping_epoch(val_losses: Sequence[float], patience: int) -> int | None:
    """The epoch (from 1) at which ``EarlyStopping(patience=patience)`` stops, None if it never does.

    It stops once the lowest loss so far (the first epoch that reached it) is ``patience``
    epochs old.
    """
    if patience < 1:
        raise ValueError(f"patience must be >= 1, got {patience}")
    best, best_epoch = float("inf"), 0
    for epoch, loss in enumerate(val_losses, start=1):
        if loss < best:
            best, best_epoch = loss, epoch
        elif epoch - best_epoch >= patience:
            return epoch
    return None


class _LowestValidationLoss(Callback):
    """Remember the epoch with the lowest validation loss and its weights; change nothing."""

    def __init__(self):
        self.best, self.epoch, self.weights = float("inf"), 0, None

    def on_epoch_end(self, state: TrainingState) -> bool:
        loss = state.history.epochs[-1]["val_loss"]
        if loss < self.best:  # the same rule as EarlyStopping: the first epoch of the lowest loss
            self.best, self.epoch = loss, state.epoch
            self.weights = {k: v.detach().clone() for k, v in state.model.state_dict().items()}
        return False


@dataclass
class Run:
    """One trained (recipe, seed): the model after the last epoch, its History, and its best epoch."""

    model: nn.Module
    history: History
    best_epoch: int  # from 1: the epoch with the lowest validation loss
    best_weights: dict[str, torch.Tensor]

    def kept_model(self, early_stopping: bool) -> nn.Module:
        """The last epoch's model, or (early stopping) a copy with the best epoch's weights."""
        if not early_stopping:
            return self.model
        model = copy.deepcopy(self.model)
        model.load_state_dict(self.best_weights)
        return model

    def val_accuracy(self, early_stopping: bool) -> float:
        epoch = self.best_epoch if early_stopping else len(self.history.epochs)
        return self.history.epochs[epoch - 1]["val_accuracy"]


@dataclass(frozen=True)
class RecipeResult:
    """Validation and test accuracy and the epoch whose weights were kept, one entry per seed.

    ``test_correct`` holds, per seed, whether each test image was classified right (for
    :func:`paired_bootstrap`); ``memorised`` the fraction of wrong training labels the kept
    weights predict (:func:`memorised_fraction`), when the study was given the clean labels.
    """

    val_accuracy: list[float]
    test_accuracy: list[float]
    epochs: list[int]
    test_correct: list[list[bool]] = field(default_factory=list, repr=False)
    memorised: list[float] = field(default_factory=list)

    @property
    def mean(self) -> float:
        """Mean test accuracy over the seeds."""
        return statistics.fmean(self.test_accuracy)


class RecipeStudy:
    """Train each (recipe, seed) once on ``train``, watch ``val``, keep every run.

    Recipes that differ only in ``early_stopping`` share their runs. Nothing here reads a
    test set except :meth:`test_results`, meant to be called once, for the chosen recipes.
    """

    def __init__(
        self,
        train: Split,
        val: Split,
        *,
        seeds: Sequence[int] = (0, 1, 2),
        epochs: int = 50,
        hidden: Sequence[int] = (256, 256),
        batch_size: int = 32,
    ):
        if not seeds:
            raise ValueError("give at least one seed")
        self.train, self.val, self.seeds = train, val, tuple(seeds)
        self.epochs, self.hidden, self.batch_size = epochs, tuple(hidden), batch_size
        self._runs: dict[tuple[Recipe, int], Run] = {}

    def runs(self, recipe: Recipe) -> list[Run]:
        """The runs of ``recipe``, one per seed, trained now if not trained before."""
        return [self._run(recipe.training_run(), seed) for seed in self.seeds]

    def _run(self, recipe: Recipe, seed: int) -> Run:
        if (recipe, seed) not in self._runs:
            torch.manual_seed(seed)
            model, optimizer = _model_and_optimizer(recipe, self.train, self.val, self.hidden)
            lowest = _LowestValidationLoss()
            history = _fit(
                recipe,
                self.train,
                self.val,
                model,
                optimizer,
                [lowest],
                epochs=self.epochs,
                batch_size=self.batch_size,
                seed=seed,
            )
            self._runs[recipe, seed] = Run(model, history, lowest.epoch, lowest.weights)
        return self._runs[recipe, seed]

    def val_accuracy(self, recipe: Recipe) -> list[float]:
        """Validation accuracy per seed of the weights ``recipe`` keeps."""
        return [run.val_accuracy(recipe.early_stopping) for run in self.runs(recipe)]

    def choose(self, candidates: Sequence[Recipe], tolerance: float = 0.005) -> Recipe:
        """The first candidate whose mean validation accuracy is within ``tolerance`` of the best.

        List the candidates from the weakest setting up: the order *is* the tie-break. A
        difference of a validation image or two is noise (and may flip on another CPU), and
        then the weaker setting wins. Half a point (the default) is a convention, not a test:
        a choice between candidates closer than the spread over seeds is arbitrary.
        """
        if not candidates:
            raise ValueError("give at least one candidate recipe")
        if tolerance < 0:
            raise ValueError(f"tolerance must be >= 0, got {tolerance}")
        scores = [statistics.fmean(self.val_accuracy(recipe)) for recipe in candidates]
        return next(
            r
            for r, score in zip(candidates, scores, strict=True)
            if score >= max(scores) - tolerance
        )

    def test_results(
        self, recipes: dict[str, Recipe], test: Split, clean_train: Split | None = None
    ) -> dict[str, RecipeResult]:
        """Validation and test accuracy of each recipe's kept weights, per seed: the one read of ``test``.

        With ``clean_train`` (the training images with their correct labels), each result
        also holds the fraction of wrong training labels its kept weights memorised.
        """
        if not recipes:
            raise ValueError("give at least one recipe")
        results = {}
        for name, recipe in recipes.items():
            runs = self.runs(recipe)
            models = [run.kept_model(recipe.early_stopping) for run in runs]
            correct = [_predictions(model, test.inputs) == test.targets for model in models]
            results[name] = RecipeResult(
                val_accuracy=self.val_accuracy(recipe),
                test_accuracy=[c.float().mean().item() for c in correct],
                epochs=[
                    run.best_epoch if recipe.early_stopping else len(run.history.epochs)
                    for run in runs
                ],
                test_correct=[c.tolist() for c in correct],
                memorised=[]
                if clean_train is None
                else [memorised_fraction(m, self.train, clean_train) for m in models],
            )
        return results


def learning_rate_area(history: History) -> float:
    """The sum of the learning rates of every step: how far, in all, the optimizer was told to move."""
    return sum(step["lr"] for step in history.steps)


@torch.no_grad()
def memorised_fraction(model: nn.Module, noisy: Split, clean: Split) -> float:
    """Of the training images whose label ``noisy`` changed, the fraction where ``model`` predicts the wrong label.

    No pattern predicts a label that was changed at random: a model that predicts it has
    memorised that image. ``noisy`` and ``clean`` hold the same inputs in the same order.
    """
    changed = noisy.targets != clean.targets
    if len(noisy) != len(clean) or not changed.any():
        raise ValueError("give the same images twice, with some labels changed in `noisy`")
    predicted = _predictions(model, noisy.inputs[changed])
    return (predicted == noisy.targets[changed]).float().mean().item()


@torch.no_grad()
def _predictions(model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    with evaluation_mode(model):
        return model(inputs).argmax(dim=1)


def paired_bootstrap(
    a: RecipeResult,
    b: RecipeResult,
    *,
    resamples: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Mean test accuracy of ``a`` minus ``b``, and a bootstrap interval over the test images.

    Each image scores the fraction of seeds that got it right, for each recipe; the
    difference ``d_i = score_a(i) - score_b(i)`` is paired (the same image on both sides).
    Resampling the images with replacement ``resamples`` times gives the spread of
    ``mean(d)`` a different test set of the same size would show; the interval is its
    central ``level`` quantile range. It measures the test set's noise, not the seeds'.
    """
    if not a.test_correct or not b.test_correct:
        raise ValueError("both results need test_correct (from RecipeStudy.test_results)")
    score_a = torch.tensor(a.test_correct, dtype=torch.float64).mean(dim=0)
    score_b = torch.tensor(b.test_correct, dtype=torch.float64).mean(dim=0)
    if score_a.shape != score_b.shape:
        raise ValueError("the two results were measured on different test sets")
    if not 0 < level < 1:
        raise ValueError(f"level must be between 0 and 1, got {level}")
    differences = score_a - score_b
    generator = torch.Generator().manual_seed(seed)
    picks = torch.randint(len(differences), (resamples, len(differences)), generator=generator)
    means = differences[picks].mean(dim=1)
    tail = (1 - level) / 2
    low, high = torch.quantile(means, torch.tensor([tail, 1 - tail], dtype=torch.float64))
    return differences.mean().item(), low.item(), high.item()


def results_table(results: dict[str, RecipeResult], baseline: str = "nothing") -> str:
    """A text table: mean validation and test accuracy, the test range over seeds, the gain over ``baseline``.

    A ``memorised`` column (mean over seeds) appears when every result has it.
    """
    reference = results[baseline].mean if baseline in results else None
    memorised = all(result.memorised for result in results.values())
    header = f"{'recipe':<18} {'val acc':>7} {'test acc':>8} {'seeds: min - max':>17} {'gain':>6}"
    lines = [header + (f" {'memorised':>9}" if memorised else "") + "  epochs kept"]
    for name, result in results.items():
        gain = f"{100 * (result.mean - reference):+.1f}" if reference is not None else ""
        span = f"{min(result.test_accuracy):.3f} - {max(result.test_accuracy):.3f}"
        epochs = "/".join(str(e) for e in result.epochs)
        val = statistics.fmean(result.val_accuracy)
        row = f"{name:<18} {val:>7.3f} {result.mean:>8.3f} {span:>17} {gain:>6}"
        if memorised:
            row += f" {statistics.fmean(result.memorised):>9.0%}"
        lines.append(f"{row}  {epochs}")
    lines.append(
        f"val, test: means over seeds; gain: points of mean test accuracy over '{baseline}'; "
        + ("memorised: wrong training labels predicted; " if memorised else "")
        + "epochs kept: per seed"
    )
    return "\n".join(lines)


def results_figure(
    results: dict[str, RecipeResult], baseline: str = "nothing", title: str = ""
) -> Figure:
    """Test accuracy minus the baseline's mean, in points: bars the mean, lines the range, dots the seeds."""
    if baseline not in results:
        raise ValueError(f"no baseline {baseline!r} in the results: {list(results)}")
    names = [name for name in results if name != baseline]
    reference = results[baseline].mean
    figure = Figure(figsize=(7, 0.45 * len(names) + 1.4), layout="constrained")
    axes = figure.subplots()
    for position, name in enumerate(names):
        gains = [100 * (a - reference) for a in results[name].test_accuracy]
        mean = statistics.fmean(gains)
        axes.barh(position, mean, color="#9ecae1")
        axes.plot([min(gains), max(gains)], [position, position], color="#08519c", linewidth=1.5)
        axes.plot(gains, [position] * len(gains), "o", color="#08519c", markersize=4)
    low = [100 * (a - reference) for a in results[baseline].test_accuracy]
    axes.axvspan(
        min(low), max(low), color="0.85", zorder=0, label=f"'{baseline}': its seeds' range"
    )
    axes.axvline(0, color="black", linewidth=0.8)
    axes.set_yticks(range(len(names)), names)
    axes.invert_yaxis()
    axes.set_xlabel(
        f"test accuracy minus the mean of '{baseline}' (points)\n"
        "bar: mean over seeds; line: min to max over seeds; dots: one per seed"
    )
    axes.legend(loc="lower right", fontsize=8)
    axes.grid(True, axis="x", alpha=0.3)
    if title:
        axes.set_title(title)
    return figure


def curves_figure(study: RecipeStudy, recipes: dict[str, Recipe]) -> Figure:
    """Learning rate per step, then training and validation accuracy per epoch (mean over seeds), per recipe."""
    figure = Figure(figsize=(12, 3.4), layout="constrained")
    rates, train_axes, val_axes = figure.subplots(1, 3)
    for name, recipe in recipes.items():
        histories = [run.history for run in study.runs(recipe)]
        (line,) = rates.plot([s["lr"] for s in histories[0].steps], label=name)
        epochs = range(1, len(histories[0].epochs) + 1)
        for axes, key in ((train_axes, "train_accuracy"), (val_axes, "val_accuracy")):
            mean = [
                statistics.fmean(values)
                for values in zip(*(h[key] for h in histories), strict=True)
            ]
            axes.plot(epochs, mean, color=line.get_color(), label=name)
    rates.set(xlabel="step", ylabel="learning rate", title="Learning rate", ylim=(0, None))
    train_axes.set(
        xlabel="epoch",
        ylabel="accuracy",
        title="Training accuracy (noisy labels)\nrunning mean over the epoch, training mode",
    )
    val_axes.set(xlabel="epoch", ylabel="accuracy", title="Validation accuracy")
    for axes in (rates, train_axes, val_axes):
        axes.grid(True, alpha=0.3)
    rates.legend(fontsize=8)
    figure.suptitle(f"mean over {len(study.seeds)} seeds", fontsize=9)
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
