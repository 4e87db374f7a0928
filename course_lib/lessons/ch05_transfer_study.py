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
gradual unfreezing    head first, layer4 after a third of the epochs, layer3 (lr / 3) after two
                      thirds (lr 1e-3)
====================  ==========================================================================

Beside them: ``FEATURES_CONVERGED``, the cached-feature head trained to convergence instead of
for a number of steps (the learning curve's feature extraction), and the BatchNorm study
(``batchnorm_study``): what to do with BatchNorm's statistics under a frozen backbone.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from matplotlib.figure import Figure
from torch import nn
from tqdm.auto import tqdm

from course_lib.data import Split, per_class_subset
from course_lib.models import evaluation_mode
from course_lib.train import Callback, TrainingState, evaluate, fit
from course_lib.transfer import (
    GradualUnfreezing,
    extract_features,
    fit_linear_head,
    freeze,
    load_backbone,
    param_groups,
    reestimate_batchnorm,
    replace_head,
    trainable_parameters,
    unfreeze,
    unfreeze_batchnorm,
)

__all__ = [
    "Strategy",
    "fine_tune",
    "STRATEGY",
    "STRATEGIES",
    "FEATURES_CONVERGED",
    "BATCHNORM_CHOICES",
    "BatchNormRun",
    "batchnorm_study",
    "batchnorm_figure",
    "CHOSEN_BLOCKS",
    "TransferRun",
    "train_strategy",
    "embed_splits",
    "compare_strategies",
    "learning_rate_sweep",
    "sweep_table",
    "strategy_table",
    "learning_curve",
    "accuracies_by_shots",
    "learning_curve_figure",
    "convergence_figure",
    "transfer_controls",
    "transfer_figure",
]

PER_BLOCK_LR = {
    "fc": 1e-3,
    "layer4": 3e-4,
    "layer3": 1e-4,
    "layer2": 1e-4,
    "layer1": 1e-4,
    "bn1": 1e-4,
    "conv1": 1e-4,
}


@dataclass(frozen=True)
class Strategy:
    """One way to train on the new task: where the weights start, what trains, at which rates.

    ``learning_rates`` maps each trained block to its rate; the blocks it does not name stay
    frozen (``param_groups``). Empty means every parameter trains at ``head_lr``. A run may
    ask for another head rate: every block then keeps its ratio to the head's.
    """

    name: str
    pretrained: bool = True
    learning_rates: Mapping[str, float] = field(default_factory=dict)
    head_lr: float = 1e-3
    cached_features: bool = False  # train the head on embeddings computed once
    converged_head: bool = False  # on cached embeddings, to convergence (fit_linear_head), no steps
    gradual: bool = False  # fc first, then layer4 after a third of the epochs, layer3 after two

    def parameter_groups(self, model: nn.Module, lr: float | None = None) -> list[dict]:
        """The optimizer's groups for ``model``, with the head at ``lr`` (default: ``head_lr``)."""
        scale = (lr or self.head_lr) / self.head_lr
        if not self.learning_rates:
            return [{"params": list(model.parameters()), "lr": self.head_lr * scale}]
        return param_groups(model, {b: rate * scale for b, rate in self.learning_rates.items()})


def fine_tune(*blocks: str) -> Strategy:
    """Pretrained; the head and ``blocks`` train at 1e-3, every other block stays frozen."""
    name = " + ".join([*blocks, "fc"])
    return Strategy(name, learning_rates=dict.fromkeys(["fc", *blocks], 1e-3))


_SIX = (
    Strategy("scratch", pretrained=False, head_lr=3e-4),  # chosen on validation: the sweep
    Strategy("features (live)", learning_rates={"fc": 1e-2}, head_lr=1e-2),
    Strategy("features (cached)", learning_rates={"fc": 1e-2}, head_lr=1e-2, cached_features=True),
    fine_tune("layer4"),
    Strategy("all, per-block lr", learning_rates=PER_BLOCK_LR),
    Strategy(
        "gradual unfreezing",
        learning_rates={"fc": 1e-3, "layer4": 1e-3, "layer3": 1e-3 / 3},
        gradual=True,
    ),
)
STRATEGY = {strategy.name: strategy for strategy in _SIX}
STRATEGIES = tuple(STRATEGY)  # their names, as the tables and figures show them
# Feature extraction with the head trained to convergence: cheap on cached embeddings, so the
# head is not held to a step budget (the learning curve uses it).
FEATURES_CONVERGED = "features (converged)"
STRATEGY[FEATURES_CONVERGED] = Strategy(
    FEATURES_CONVERGED, cached_features=True, converged_head=True
)


@dataclass
class TransferRun:
    """One training run: its final test accuracy, cost, and accuracy along the way."""

    strategy: str
    test_accuracy: float | None  # None: the run did not look at the test set (the explorer)
    val_accuracy: float  # at the end: what a learner tuning may look at
    train_accuracy: float | None  # on the labelled examples it trained on (None: not measured)
    trainable: int
    seconds_per_epoch: float  # median over epochs, training only (evaluation time taken out)
    epochs: int
    steps_per_epoch: int
    curve: list[tuple[int, float]] = field(default_factory=list)  # (step, validation accuracy)

    def epochs_to(self, target: float) -> int | None:
        """The first epoch in which validation accuracy reached ``target`` (None: never)."""
        for step, accuracy in self.curve:
            if accuracy >= target:
                return math.ceil(step / self.steps_per_epoch)
        return None


class _AccuracyEvery(Callback):
    """Validation accuracy every ``every`` steps, and the seconds each epoch spent measuring it.

    fit() times whole epochs, this evaluation included; ``evaluation_seconds`` lets the
    study take it out again, so that seconds per epoch mean training only.
    """

    def __init__(self, data: Split, every: int):
        self.data, self.every, self.curve = data, every, []
        self.evaluation_seconds: list[float] = [0.0]  # per epoch

    def on_step_end(self, state: TrainingState) -> None:
        if state.step % self.every == 0:
            started = time.perf_counter()
            self.curve.append((state.step, evaluate(state.model, self.data)["accuracy"]))
            self.evaluation_seconds[-1] += time.perf_counter() - started

    def on_epoch_end(self, state: TrainingState) -> bool:
        self.evaluation_seconds.append(0.0)
        return False


def _model_and_groups(strategy: Strategy, classes: int, epochs: int, lr: float | None):
    """The network, the optimizer's parameter groups and any callbacks of one strategy."""
    backbone = load_backbone("bundled" if strategy.pretrained else "small_resnet")
    model = replace_head(backbone, classes)
    groups = strategy.parameter_groups(model, lr)
    if not strategy.gradual:
        return model, groups, []
    schedule = {0: ["fc"], max(1, epochs // 3): ["layer4"], max(2, 2 * epochs // 3): ["layer3"]}
    return model, groups, [GradualUnfreezing(model, schedule)]


def _as_strategy(strategy: str | Strategy) -> Strategy:
    if isinstance(strategy, Strategy):
        return strategy
    if strategy not in STRATEGY:
        raise ValueError(f"unknown strategy {strategy!r}; choose one of {list(STRATEGIES)}")
    return STRATEGY[strategy]


def train_strategy(
    strategy: str | Strategy,
    train: Split,
    val: Split,
    test: Split | None,
    *,
    steps: int = 100,
    seed: int = 0,
    lr: float | None = None,
    curve_every: int | None = None,
    embedded: bool = False,
    score_train: bool = True,
) -> TransferRun:
    """Train with a strategy (a ``Strategy``, or the name of one of STRATEGIES) for ``steps``
    optimizer steps and measure it.

    ``lr`` replaces the strategy's head learning rate (other blocks keep their ratio to it).
    ``curve_every`` records validation accuracy every so many steps (its cost is not counted
    in the seconds per epoch). Epochs are whole, so the steps are rounded up to whole epochs.
    ``test=None`` leaves the test set alone (``test_accuracy`` is None): what tuning should do.
    A ``converged_head`` strategy ignores ``steps``, ``lr`` and ``curve_every``: its head is
    fitted to convergence on the cached embeddings (``fit_linear_head``).
    ``embedded=True`` says the splits are already the bundled backbone's embeddings
    (``embed_splits``), for the cached-feature strategies only: computed once, shared by runs.
    ``score_train=False`` skips measuring training accuracy (``train_accuracy`` is None).
    """
    batch_size = min(32, len(train))
    steps_per_epoch = math.ceil(len(train) / batch_size)
    epochs = math.ceil(steps / steps_per_epoch)
    strategy = _as_strategy(strategy)
    torch.manual_seed(seed)
    classes = int(val.targets.max()) + 1
    if embedded and not strategy.cached_features:
        raise ValueError(f"{strategy.name!r} trains on images, not on embeddings")
    if strategy.converged_head:
        if not embedded:
            train, val, test = _embedded((train, val, test))
        return _converged_head_run(strategy, train, val, test, classes, score_train)
    model, groups, callbacks = _model_and_groups(strategy, classes, epochs, lr)
    trained = model
    if strategy.cached_features:  # from here on, only the head and stored embeddings
        if not embedded:
            train, val, test = _embedded((train, val, test), model)
        trained = model.fc
    elif _first_trained_block(strategy) > 0:  # frozen blocks below: their outputs, once
        prefix, trained = _split_at(model, _first_trained_block(strategy))
        train, val, test = _through(prefix, (train, val, test))
    recorder = _AccuracyEvery(val, curve_every) if curve_every else None
    history = fit(
        trained,
        train,
        optimizer=torch.optim.Adam(groups),
        loss_fn=nn.CrossEntropyLoss(),
        epochs=epochs,
        batch_size=batch_size,
        seed=seed,
        progress=False,
        callbacks=[*callbacks, *([recorder] if recorder else [])],
    )
    seconds = history["seconds"]
    if recorder:  # take the time spent measuring the curve out of each epoch
        seconds = [s - e for s, e in zip(seconds, recorder.evaluation_seconds, strict=False)]
    return TransferRun(
        strategy=strategy.name,
        test_accuracy=evaluate(trained, test)["accuracy"] if test is not None else None,
        val_accuracy=evaluate(trained, val)["accuracy"],
        train_accuracy=evaluate(trained, train)["accuracy"] if score_train else None,
        trainable=trainable_parameters(trained),  # at the end (gradual unfreezing adds blocks)
        seconds_per_epoch=statistics.median(seconds),
        epochs=epochs,
        steps_per_epoch=steps_per_epoch,
        curve=recorder.curve if recorder else [],
    )


# A ResNet's blocks in the order its forward pass runs them (relu, maxpool and avgpool have no
# weights); what comes before the first trained one is frozen, in eval mode under ``freeze``.
_RESNET_ORDER = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")


def _first_trained_block(strategy: Strategy) -> int:
    """Where the frozen start of the network ends (0: nothing frozen, or frozen only for now).

    Only strategies that fine-tune part of the backbone and keep the rest frozen throughout
    qualify: pretrained, every trained block named in ``learning_rates``, not gradual (its
    frozen blocks thaw on schedule). A head alone (features, live) keeps running the whole
    frozen backbone at every step, as its name says; the cached strategies store embeddings.
    """
    if not strategy.pretrained or strategy.gradual or strategy.cached_features:
        return 0
    named = [i for i, block in enumerate(_RESNET_ORDER) if block in strategy.learning_rates]
    return min(named, default=0)


def _split_at(model: nn.Module, index: int) -> tuple[nn.Module, nn.Module]:
    """(the blocks before ``_RESNET_ORDER[index]``, the rest up to the head): the same modules."""
    blocks = [getattr(model, name) for name in _RESNET_ORDER]
    rest = [*blocks[index:], model.avgpool, nn.Flatten(1), model.fc]
    return nn.Sequential(*blocks[:index]), nn.Sequential(*rest)


def _through(
    prefix: nn.Module, splits: tuple[Split, Split, Split | None], batch_size: int = 512
) -> tuple[Split, Split, Split | None]:
    """The splits' images after the frozen ``prefix`` (eval mode: fixed outputs), computed once.

    Layer4 + fc trains on layer3's outputs this way: the blocks below layer4 are frozen with
    their BatchNorm statistics kept, so they compute the same outputs at every step, and only
    layer4 and the head run for each batch. (Augmentation would make the outputs differ from
    one epoch to the next, and rule this out, as it rules out cached embeddings.)
    """
    with torch.no_grad(), evaluation_mode(prefix):
        return tuple(
            None
            if split is None
            else Split(
                torch.cat(
                    [
                        prefix(split.inputs[i : i + batch_size])
                        for i in range(0, len(split), batch_size)
                    ]
                ),
                split.targets,
            )
            for split in splits
        )


def _embedded(
    splits: tuple[Split, Split, Split | None], backbone: nn.Module | None = None
) -> tuple[Split, Split, Split | None]:
    """The splits as embeddings of the bundled backbone (``backbone``: a copy of it); None stays."""
    backbone = backbone if backbone is not None else load_backbone("bundled")
    return tuple(None if s is None else extract_features(backbone, s) for s in splits)


def embed_splits(
    splits_by_seed: Mapping[int, tuple[Split, Split, Split]],
) -> dict[int, tuple[Split, Split, Split]]:
    """Each seed's (train, val, test) as the bundled backbone's embeddings, computed once.

    A labelled subset of the embeddings is the embedding of the same subset of the images:
    ``per_class_subset`` picks examples by their labels and its seed only. So every
    cached-feature run of every seed and size can share these (``embeddings=`` of
    ``compare_strategies`` and ``learning_curve``) instead of running the backbone again.
    """
    backbone = load_backbone("bundled")
    return {seed: _embedded(splits, backbone) for seed, splits in splits_by_seed.items()}


def _converged_head_run(
    strategy: Strategy,
    train: Split,
    val: Split,
    test: Split | None,
    classes: int,
    score_train: bool = True,
) -> TransferRun:
    """A head fitted to convergence on embeddings (``train``, ``val``, ``test`` are embedded)."""
    started = time.perf_counter()
    head = fit_linear_head(train, classes)
    seconds = time.perf_counter() - started
    return TransferRun(
        strategy=strategy.name,
        test_accuracy=evaluate(head, test)["accuracy"] if test is not None else None,
        val_accuracy=evaluate(head, val)["accuracy"],
        train_accuracy=evaluate(head, train)["accuracy"] if score_train else None,
        trainable=trainable_parameters(head),
        seconds_per_epoch=seconds,  # the whole fit: it has no epochs
        epochs=1,
        steps_per_epoch=1,
    )


def _splits_for(
    strategy: str,
    seed: int,
    splits_by_seed: Mapping[int, tuple[Split, Split, Split]],
    embeddings: Mapping[int, tuple[Split, Split, Split]] | None,
) -> tuple[tuple[Split, Split, Split], bool]:
    """The seed's splits a strategy trains on, and whether they are embeddings already."""
    if embeddings is not None and _as_strategy(strategy).cached_features:
        return embeddings[seed], True
    return splits_by_seed[seed], False


def compare_strategies(
    strategies: Sequence[str],
    splits_by_seed: dict[int, tuple[Split, Split, Split]],
    per_class: int,
    *,
    steps: int = 100,
    curve_every: int | None = None,
    embeddings: Mapping[int, tuple[Split, Split, Split]] | None = None,
    progress: bool = True,
) -> dict[str, list[TransferRun]]:
    """Every strategy on ``per_class`` labelled examples per class, once per seed (same data for all).

    ``embeddings`` (``embed_splits(splits_by_seed)``) lets the cached-feature strategies reuse
    embeddings computed once instead of running the backbone for each run.
    """
    runs: dict[str, list[TransferRun]] = {s: [] for s in strategies}
    jobs = [(seed, s) for seed in splits_by_seed for s in strategies]
    for seed, strategy in tqdm(jobs, desc="training", disable=not progress, leave=False):
        (train, val, test), embedded = _splits_for(strategy, seed, splits_by_seed, embeddings)
        labelled = per_class_subset(train, per_class, seed=seed)
        runs[strategy].append(
            train_strategy(
                strategy,
                labelled,
                val,
                test,
                steps=steps,
                seed=seed,
                curve_every=curve_every,
                embedded=embedded,
            )
        )
    return runs


def learning_rate_sweep(
    rates: Mapping[str, Sequence[float]],
    labelled: Split,
    val: Split,
    *,
    seed: int = 0,
    steps: int = 100,
    known: Mapping[str, TransferRun] | None = None,
) -> dict[str, dict[float, float]]:
    """Validation accuracy of each strategy at each head learning rate (``rates[name]``).

    One run per strategy and rate, on ``labelled`` (scored on ``val``, never a test set): the
    data for choosing a rate. ``known[name]``, a run of that strategy at its own rate
    (``head_lr``) on the same data, seed and budget, is reused instead of trained again.
    """
    known = known or {}
    sweep: dict[str, dict[float, float]] = {}
    for name, strategy_rates in rates.items():
        own = _as_strategy(name).head_lr
        sweep[name] = {}
        for lr in strategy_rates:
            if name in known and math.isclose(lr, own):
                sweep[name][lr] = known[name].val_accuracy
            else:
                run = train_strategy(name, labelled, val, None, steps=steps, seed=seed, lr=lr)
                sweep[name][lr] = run.val_accuracy
    return sweep


def sweep_table(sweep: Mapping[str, Mapping[float, float]]) -> str:
    """The sweep as a table: one row per strategy, one column per learning rate, best marked *."""
    rates = sorted({lr for by_rate in sweep.values() for lr in by_rate})
    lines = [f"{'head learning rate':<20}" + "".join(f"{lr:>9g}" for lr in rates)]
    for name, by_rate in sweep.items():
        best = max(by_rate, key=by_rate.get)
        cells = [
            f"{by_rate[lr]:>8.3f}{'*' if lr == best else ' '}" if lr in by_rate else f"{'-':>8} "
            for lr in rates
        ]
        lines.append(f"{name:<20}" + "".join(cells))
    lines.append("validation accuracy after the same budget; *: the best rate of each strategy")
    return "\n".join(lines)


def _mean(runs: list[TransferRun]) -> float:
    return statistics.fmean(r.test_accuracy for r in runs)


def strategy_table(runs: dict[str, list[TransferRun]], *, target: float) -> str:
    """Test accuracy and seconds per epoch (means over seeds), trainable parameters, epochs to ``target``."""
    lines = [
        f"{'strategy':<20} {'test accuracy':>13} {'spread':>12} {'trainable':>10} "
        f"{'per epoch':>10} {'epochs to ' + format(target, '.0%'):>13}"
    ]
    for name, seeds in runs.items():
        reached = [r.epochs_to(target) for r in seeds]
        epochs = "/".join("-" if e is None else str(e) for e in reached)
        milliseconds = 1000 * statistics.fmean(r.seconds_per_epoch for r in seeds)
        accuracies = [r.test_accuracy for r in seeds]
        spread = f"{min(accuracies):.3f}-{max(accuracies):.3f}"
        lines.append(
            f"{name:<20} {_mean(seeds):>13.3f} {spread:>12} {seeds[0].trainable:>10,} "
            f"{milliseconds:>7.2f} ms {epochs:>13}"
        )
    counts = sorted({len(seeds) for seeds in runs.values()}, reverse=True)
    over = f"{counts[0]} seeds" if len(counts) == 1 else "/".join(map(str, counts)) + " seeds"
    lines.append(
        f"test accuracy: mean over {over} (as many as 'epochs to' lists), spread: lowest-highest; "
        f"epochs to {target:.0%}: first epoch at whose check validation accuracy reached "
        f"{target:.0%}, per seed ('-': not within the budget); per epoch: training only"
    )
    return "\n".join(lines)


def learning_curve(
    strategies: Sequence[str],
    splits_by_seed: dict[int, tuple[Split, Split, Split]],
    shots: Sequence[int | None],
    *,
    steps: int = 100,
    known: Mapping[int, Mapping[str, list[TransferRun]]] | None = None,
    embeddings: Mapping[int, tuple[Split, Split, Split]] | None = None,
    train_accuracy_at: Sequence[int | None] | None = None,
    seeds_at: Mapping[int | None, Sequence[int]] | None = None,
    progress: bool = True,
) -> dict[str, dict[int | None, list[TransferRun]]]:
    """The runs per strategy and labelled examples per class (None: the whole training split).

    One run per seed in ``splits_by_seed`` and number of labels. ``known`` gives runs already
    made with the same data, seeds (in the same order) and budget, by number of labels:
    ``known={10: compare_strategies(...)}`` reuses them instead of training them again.
    ``embeddings`` (``embed_splits``) are shared by the cached-feature runs.
    ``train_accuracy_at`` lists the numbers of labels whose runs measure training accuracy
    (None: all); the others leave it None, which saves a pass over 1,077 images.
    ``seeds_at`` runs some numbers of labels on fewer seeds (``{None: (0, 1)}``: the whole
    split on seeds 0 and 1 only); the others run on every seed of ``splits_by_seed``.
    """
    known = known or {}
    seeds = {k: list((seeds_at or {}).get(k, splits_by_seed)) for k in shots}
    curves: dict[str, dict[int | None, list[TransferRun]]] = {
        s: {k: list(known.get(k, {}).get(s, [])) for k in shots} for s in strategies
    }
    for strategy in strategies:
        for k in shots:
            if curves[strategy][k] and len(curves[strategy][k]) != len(seeds[k]):
                raise ValueError(f"known runs of {strategy!r} at {k} labels: one per seed needed")
    jobs = [
        (seed, k, s)
        for seed in splits_by_seed
        for k in shots
        for s in strategies
        if seed in seeds[k] and not curves[s][k]  # known runs are reused
    ]
    for seed, k, strategy in tqdm(jobs, desc="training", disable=not progress, leave=False):
        (train, val, test), embedded = _splits_for(strategy, seed, splits_by_seed, embeddings)
        labelled = train if k is None else per_class_subset(train, k, seed=seed)
        score_train = train_accuracy_at is None or k in train_accuracy_at
        run = train_strategy(
            strategy,
            labelled,
            val,
            test,
            steps=steps,
            seed=seed,
            embedded=embedded,
            score_train=score_train,
        )
        curves[strategy][k].append(run)
    return curves


def accuracies_by_shots(
    curves: dict[str, dict[int | None, list[TransferRun]]],
) -> dict[str, dict[int | None, list[float]]]:
    """The test accuracies of a learning curve's runs, per strategy and labels per class."""
    return {
        strategy: {k: [r.test_accuracy for r in runs] for k, runs in by_shots.items()}
        for strategy, by_shots in curves.items()
    }


def learning_curve_figure(
    curves: dict[str, dict[int | None, list[TransferRun]]], full_size: float
) -> Figure:
    """Test accuracy against labelled examples per class (log axis): the mean over seeds as a
    hollow marker on a line, each seed as a dot beside it, one colour per strategy.

    ``full_size`` is where "all labels" goes: the whole training split's labels per class
    (a mean, say 1,077 / 10); its tick reads "all" with that number rounded.
    """
    figure = Figure(figsize=(6.5, 4), layout="constrained")
    axes = figure.subplots()
    seeds = set()  # how many seeds the points have (the same for all, or fewer at some sizes)
    for index, (strategy, by_shots) in enumerate(accuracies_by_shots(curves).items()):
        shots = [full_size if k is None else k for k in by_shots]
        colour = f"C{index}"
        means = [statistics.fmean(v) for v in by_shots.values()]
        axes.plot(shots, means, "o-", color=colour, mfc="white", ms=8, label=strategy, zorder=2)
        # the seeds beside the mean (to its right, each strategy a little further), outlined
        nudge = 1.05 + 0.05 * index
        for x, values in zip(shots, by_shots.values(), strict=True):
            axes.plot(
                [x * nudge] * len(values),
                values,
                "o",
                color=colour,
                mec="black",
                mew=0.5,
                ms=4,
                zorder=3,
                linestyle="none",
            )
            seeds.add(len(values))
    axes.set_xscale("log")
    labels = [f"all\n(about {full_size:,.0f})" if k is None else str(k) for k in by_shots]
    axes.set_xticks(shots, labels)
    axes.minorticks_off()
    axes.set_xlabel("labelled examples per class (log scale; the last point: all of them)")
    counts = "/".join(str(n) for n in sorted(seeds, reverse=True))
    axes.set_ylabel(f"test accuracy (hollow: mean of {counts} seeds; dots: each seed)")
    axes.set_title("Less data: how many labels each strategy needs")
    axes.grid(alpha=0.3)
    axes.legend()
    return figure


# --- BatchNorm: what to do with its statistics when the backbone is frozen -------------------------

BATCHNORM_CHOICES = (
    "kept (freeze: eval mode)",
    "re-estimated, then kept",
    "drift (requires_grad only)",
    "trained (train_bn)",
)


@dataclass
class BatchNormRun:
    """A head trained on a frozen backbone under one BatchNorm choice."""

    choice: str
    val_accuracy: float
    # largest change of layer3's first running mean while the head trained, in units of that
    # channel's running standard deviation before training (1.0: a whole standard deviation)
    drift: float


def _layer3_statistics(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    layer = model.layer3[0].bn1
    return layer.running_mean.clone(), (layer.running_var + layer.eps).sqrt()


def _batchnorm_run(
    choice: str,
    head: dict,
    labelled: Split,
    val: Split,
    *,
    epochs: int,
    lr: float,
    seed: int,
    batch_size: int = 32,
    drop_last: bool = False,
) -> BatchNormRun:
    """Train a head (starting from the weights ``head``) on the frozen backbone, one choice."""
    model = replace_head(load_backbone("bundled"), len(head["bias"]))
    model.fc.load_state_dict(head)
    if choice == BATCHNORM_CHOICES[1]:
        reestimate_batchnorm(model, labelled.inputs)  # the target images, labels not needed
    before, scale = _layer3_statistics(model)
    if choice == BATCHNORM_CHOICES[2]:  # the articles' freezing: gradients off, nothing else
        for name, parameter in model.named_parameters():
            parameter.requires_grad_(name.startswith("fc."))
    else:
        unfreeze(freeze(model), "fc")
    if choice == BATCHNORM_CHOICES[3]:
        unfreeze_batchnorm(model)
    trained, scored = model, (labelled, val)
    if choice in BATCHNORM_CHOICES[:2]:  # a fixed backbone: train the head on its embeddings
        trained, scored = model.fc, tuple(extract_features(model, s) for s in (labelled, val))
    fit(
        trained,
        scored[0],
        optimizer=torch.optim.Adam([p for p in trained.parameters() if p.requires_grad], lr=lr),
        loss_fn=nn.CrossEntropyLoss(),
        epochs=epochs,
        batch_size=batch_size,
        seed=seed,
        progress=False,
        drop_last=drop_last,
    )
    drift = ((_layer3_statistics(model)[0] - before).abs() / scale).max().item()
    return BatchNormRun(choice, evaluate(trained, scored[1])["accuracy"], drift)


def batchnorm_study(
    splits_by_seed: dict[int, tuple[Split, Split, Split]],
    per_class: int = 10,
    *,
    epochs: int = 25,
    lr: float = 1e-2,
    batch_size: int = 32,
    drop_last: bool = False,
    choices: Sequence[str] = BATCHNORM_CHOICES,
    progress: bool = True,
) -> dict[str, list[BatchNormRun]]:
    """Each BatchNorm choice (of ``choices``), once per seed: a new head on the frozen backbone.

    Within a seed every choice gets the same labelled images, the same head initialisation,
    the same batches (``batch_size``; ``drop_last=True`` leaves out each epoch's ragged last
    batch, as fastai does) and the same optimizer (Adam, ``lr``, for all trained parameters:
    the head, plus the BatchNorm scales and shifts for "trained"); only what happens to
    BatchNorm differs:

    - kept: ``freeze``, statistics of the pretraining data, eval mode throughout;
    - re-estimated: statistics recomputed on the labelled target images (no labels used,
      ``reestimate_batchnorm``), then kept;
    - drift: ``requires_grad = False`` only; train mode normalises with each batch's
      statistics and moves the running ones;
    - trained: as drift, and the scales and shifts train too (``unfreeze_batchnorm``).

    Scored by validation accuracy: this is a choice to make, not a final result.
    """
    unknown = [choice for choice in choices if choice not in BATCHNORM_CHOICES]
    if unknown:
        raise ValueError(f"unknown BatchNorm choices {unknown}; choose from {BATCHNORM_CHOICES}")
    results: dict[str, list[BatchNormRun]] = {choice: [] for choice in choices}
    jobs = [(seed, choice) for seed in splits_by_seed for choice in choices]
    heads = {}
    for seed, choice in tqdm(jobs, desc="training", disable=not progress, leave=False):
        train, val, _ = splits_by_seed[seed]
        labelled = per_class_subset(train, per_class, seed=seed)
        if seed not in heads:
            torch.manual_seed(seed)
            heads[seed] = nn.Linear(128, int(val.targets.max()) + 1).state_dict()
        results[choice].append(
            _batchnorm_run(
                choice,
                heads[seed],
                labelled,
                val,
                epochs=epochs,
                lr=lr,
                seed=seed,
                batch_size=batch_size,
                drop_last=drop_last,
            )
        )
    return results


def batchnorm_figure(studies: Mapping[str, dict[str, list[BatchNormRun]]]) -> Figure:
    """Validation accuracy per BatchNorm choice, one panel per study (say, per batch size):
    one dot per seed, a bar at the mean, the same accuracy axis for every panel."""
    figure = Figure(figsize=(6.5, 1.1 + 1.0 * len(studies)), layout="constrained")
    panels = figure.subplots(len(studies), 1, sharex=True, squeeze=False)[:, 0]
    for axes, (label, results) in zip(panels, studies.items(), strict=True):
        names = list(results)
        for row, name in enumerate(names):
            values = [r.val_accuracy for r in results[name]]
            axes.plot(values, [row] * len(values), "o", color="#08519c", alpha=0.7)
            mean = statistics.fmean(values)
            axes.plot([mean, mean], [row - 0.3, row + 0.3], "-", color="black", lw=2)
        axes.set_yticks(range(len(names)), names)
        axes.set_ylim(len(names) - 0.5, -0.5)
        axes.set_title(label, fontsize=9, loc="left")
        axes.grid(alpha=0.3, axis="x")
    panels[-1].set_xlabel("validation accuracy (dots: seeds; bar: mean)")
    figure.suptitle("A new head on a frozen backbone: what to do with BatchNorm", fontsize=10)
    return figure


def convergence_figure(runs: dict[str, list[TransferRun]]) -> Figure:
    """Validation accuracy against optimizer steps, first seed of each strategy (extra runs dotted).

    Live and cached features compute the same numbers: when both are there, cached is dashed.
    """
    figure = Figure(figsize=(6.5, 4), layout="constrained")
    axes = figure.subplots()
    for strategy, seeds in runs.items():
        if seeds[0].curve:
            steps, accuracy = zip(*seeds[0].curve, strict=True)
            both = strategy == "features (cached)" and "features (live)" in runs
            style = "--" if both else "-"
            style = style if strategy in STRATEGIES else ":"  # an extra run, such as another lr
            axes.plot(steps, accuracy, style, label=strategy)
    axes.set_xlabel("optimizer steps")
    axes.set_ylabel("validation accuracy (first seed)")
    axes.set_ylim(0, 1)
    axes.set_title("Faster: accuracy along the way")
    axes.grid(alpha=0.3)
    axes.legend()
    return figure


# --- the explorer widget ------------------------------------------------------------------------


def transfer_controls():
    """Controls for :func:`transfer_figure`: strategy, blocks to fine-tune, labels per class, learning rate."""
    import ipywidgets as widgets

    from course_lib.widgets import Controls

    return Controls(
        strategy=widgets.Dropdown(
            options=[(_EXPLORER_LABELS.get(s, s), s) for s in _EXPLORER_STRATEGIES],
            value=CHOSEN_BLOCKS,
            description="strategy",
        ),
        blocks=widgets.SelectMultiple(
            options=["layer1", "layer2", "layer3", "layer4"],
            value=["layer4"],
            description="fine-tune",
            rows=4,
        ),
        per_class=widgets.SelectionSlider(
            options=[1, 2, 5, 10, 20, 50],
            value=5,
            description="labels/class",
            continuous_update=False,  # retrain once the slider is let go, not while dragging
        ),
        lr=widgets.FloatLogSlider(
            value=1e-3,
            base=10,
            min=-4,
            max=-1,
            step=0.5,
            description="learning rate",
            continuous_update=False,
        ),
    )


CHOSEN_BLOCKS = "chosen blocks + fc"  # the explorer's strategy: fine_tune(*blocks)
_EXPLORER_STRATEGIES = ("scratch", "features (cached)", CHOSEN_BLOCKS, *STRATEGIES[4:])
_EXPLORER_LABELS = {
    CHOSEN_BLOCKS: "fine-tune chosen blocks + fc",
    "features (cached)": "feature extraction",  # live features compute the same, slower
}


def transfer_figure(
    splits: tuple[Split, Split, Split],
    *,
    strategy: str = CHOSEN_BLOCKS,
    blocks: Sequence[str] = ("layer4",),
    per_class: int = 5,
    lr: float = 1e-3,
    steps: int = 60,
    seed: int = 0,
) -> Figure:
    """Train one strategy once and plot validation accuracy along the way.

    The title gives the validation accuracy at the end; the test split of ``splits`` is not
    even evaluated: a learner tuning with the explorer chooses on validation data, and reads
    the test set once, at the end.

    ``strategy`` is one of STRATEGIES, or CHOSEN_BLOCKS: fine-tune ``blocks`` with the head
    (none: the head alone, on a live frozen backbone). ``lr`` is the head's learning rate
    (other blocks keep their ratio to it; scratch trains everything at ``lr``).
    """
    chosen = fine_tune(*blocks) if strategy == CHOSEN_BLOCKS else _as_strategy(strategy)
    train, val, _ = splits  # the test split stays unread while tuning
    labelled = per_class_subset(train, per_class, seed=seed)
    run = train_strategy(chosen, labelled, val, None, steps=steps, seed=seed, lr=lr, curve_every=5)
    figure = Figure(figsize=(6.5, 3.6), layout="constrained")
    axes = figure.subplots()
    steps_seen, accuracy = zip(*run.curve, strict=True)
    axes.plot(steps_seen, accuracy, "o-", color="#08519c")
    name = (
        "fine-tune " + chosen.name
        if strategy == CHOSEN_BLOCKS
        else _EXPLORER_LABELS.get(strategy, strategy)
    )
    labels = "1 label" if per_class == 1 else f"{per_class} labels"
    axes.set_title(
        f"{name}, {labels}/class: validation accuracy {run.val_accuracy:.3f} "
        f"({run.trainable:,} parameters trained)",
        fontsize=10,
    )
    axes.set_xlabel("optimizer steps")
    axes.set_ylabel("validation accuracy")
    axes.set_ylim(0, 1)
    axes.grid(alpha=0.3)
    return figure
