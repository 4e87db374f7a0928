"""Chapter 4's experiment helpers: recipes wire their technique, studies share runs and choose on validation."""

import pytest
import torch
from matplotlib.figure import Figure
from torch import nn

from course_lib.augment import BatchAugmentation
from course_lib.data import digits_splits, per_class_subset, with_wrong_labels
from course_lib.lessons.ch04_generalization import (
    Recipe,
    RecipeResult,
    RecipeStudy,
    curves_figure,
    learning_rate_area,
    memorised_fraction,
    paired_bootstrap,
    results_figure,
    results_table,
    stopping_epoch,
    technique_recipes,
    train_with,
)


@pytest.fixture(scope="module")
def data():
    train, val, test = digits_splits(seed=0)
    return per_class_subset(train, 5, seed=0), per_class_subset(val, 5, seed=0), test


RECIPES = technique_recipes(
    augment=BatchAugmentation(rotation_degrees=10), dropout=0.3, weight_decay=0.5
)


def test_each_recipe_turns_on_its_technique_and_all_combined_the_four_regularizers():
    assert RECIPES["nothing"] == Recipe()
    default = vars(Recipe())
    switched_on = {
        name: {field for field, value in vars(recipe).items() if value != default[field]}
        for name, recipe in RECIPES.items()
    }
    assert switched_on["cosine schedule"] == {"cosine_schedule"}
    assert switched_on["constant lr / 2"] == {"lr"} and RECIPES["constant lr / 2"].lr == 5e-4
    regularizers = ("augmentation", "dropout", "weight decay", "early stopping")
    assert all(len(switched_on[name]) == 1 for name in regularizers)
    assert switched_on["all combined"] == set().union(*(switched_on[n] for n in regularizers))


def test_train_with_builds_dropout_weight_decay_early_stopping_and_the_schedule(data):
    train, val, _ = data
    recipe = Recipe(dropout=0.3, weight_decay=0.5, early_stopping=True, lr=0.05)
    model, history = train_with(recipe, train, val, hidden=(16,), epochs=30, patience=2)
    assert any(isinstance(layer, nn.Dropout) and layer.p == 0.3 for layer in model.modules())
    assert "early stopping" in history.stop_reason and len(history.epochs) < 30
    _, cosine = train_with(Recipe(cosine_schedule=True), train, val, hidden=(16,), epochs=4)
    lrs = cosine["lr"]
    # the rate of each epoch's steps: 0.001 * (1 + cos(pi * epoch / 4)) / 2, epoch 0..3
    assert lrs == pytest.approx([0.001, 0.000854, 0.0005, 0.000146], abs=1e-6)
    plain_model, plain_history = train_with(Recipe(), train, val, hidden=(16,), epochs=3)
    assert not any(isinstance(layer, nn.Dropout) for layer in plain_model.modules())
    assert len(plain_history.epochs) == 3 and set(plain_history["lr"]) == {1e-3}


def test_cosine_has_the_area_of_half_the_constant_rate_give_or_take_one_epoch(data):
    train, val, _ = data
    _, cosine = train_with(Recipe(cosine_schedule=True), train, val, hidden=(8,), epochs=20)
    _, half = train_with(Recipe(lr=5e-4), train, val, hidden=(8,), epochs=20)
    # sum over epochs e = 0..19 of (1 + cos(pi e / 20)) / 2 is 10.5: half of 20 epochs, plus half of one
    assert learning_rate_area(cosine) == pytest.approx(learning_rate_area(half) * 21 / 20, rel=1e-9)


@pytest.mark.parametrize(
    "losses, patience, expected",
    [
        ([3, 2, 1, 1.5, 1.2], 2, 5),  # best at epoch 3, two epochs without improvement
        ([3, 2, 1, 1.0, 0.9], 2, None),  # an equal loss is no improvement, but 0.9 is
        ([1, 1, 1], 2, 3),  # the best epoch is the first that reached the lowest loss
        ([5, 4, 3], 1, None),
    ],
)
def test_stopping_epoch_follows_the_early_stopping_rule(losses, patience, expected):
    assert stopping_epoch(losses, patience) == expected


def test_stopping_epoch_agrees_with_the_callback_and_the_study_keeps_its_weights(data):
    train, val, _ = data
    study = RecipeStudy(train, val, seeds=(0,), epochs=25, hidden=(16,))
    (run,) = study.runs(Recipe(lr=0.05))
    stopped_model, stopped = train_with(
        Recipe(lr=0.05, early_stopping=True), train, val, hidden=(16,), epochs=25, patience=3
    )
    assert len(stopped.epochs) == stopping_epoch(run.history["val_loss"], 3)
    losses = run.history["val_loss"]
    assert run.best_epoch == losses.index(min(losses)) + 1
    if run.best_epoch <= len(stopped.epochs) - 3:  # the callback saw the run's best epoch
        kept = run.kept_model(early_stopping=True).state_dict()
        assert all(torch.equal(kept[k], v) for k, v in stopped_model.state_dict().items())


def test_a_study_trains_each_run_once_and_early_stopping_shares_the_plain_run(data):
    train, val, test = data
    study = RecipeStudy(train, val, seeds=(0, 1), epochs=6, hidden=(16,))
    plain = study.runs(Recipe())
    assert study.runs(Recipe()) == plain and study.runs(Recipe(early_stopping=True)) == plain
    assert all(run.val_accuracy(False) == run.history["val_accuracy"][-1] for run in plain)
    assert study.val_accuracy(Recipe(early_stopping=True)) == [
        run.history["val_accuracy"][run.best_epoch - 1] for run in plain
    ]
    assert plain[0].kept_model(False) is plain[0].model
    with pytest.raises(ValueError, match="at least one seed"):
        RecipeStudy(train, val, seeds=())


def test_choose_picks_the_best_mean_validation_accuracy(data):
    train, val, _ = data
    study = RecipeStudy(train, val, seeds=(0, 1), epochs=6, hidden=(16,))
    candidates = [Recipe(lr=1e-5), Recipe(lr=3e-3)]  # 6 epochs at 1e-5 learn next to nothing
    scores = [sum(study.val_accuracy(r)) for r in candidates]
    assert study.choose(candidates) == candidates[scores.index(max(scores))] == candidates[1]
    # within the tolerance, the first (weakest) candidate wins
    assert study.choose(candidates[::-1], tolerance=1.0) == candidates[1]
    assert study.choose(candidates, tolerance=1.0) == candidates[0]
    with pytest.raises(ValueError, match="at least one candidate"):
        study.choose([])


def test_test_results_are_seeded_and_report_every_run(data):
    train, val, test = data
    chosen = {name: RECIPES[name] for name in ("nothing", "dropout", "early stopping")}

    def results():
        study = RecipeStudy(train, val, seeds=(0, 1), epochs=4, hidden=(16,))
        return study, study.test_results(chosen, test)

    study, first = results()
    assert first == results()[1] and list(first) == list(chosen)
    assert all(len(r.test_accuracy) == 2 for r in first.values())
    assert first["nothing"].epochs == [4, 4]
    assert first["early stopping"].epochs == [run.best_epoch for run in study.runs(Recipe())]
    table = results_table(first)
    assert "dropout" in table and "+0.0" in table.splitlines()[1]
    assert isinstance(results_figure(first, title="t"), Figure)
    assert isinstance(curves_figure(study, {"plain": Recipe()}), Figure)
    with pytest.raises(ValueError, match="no baseline"):
        results_figure(first, baseline="missing")
    with pytest.raises(ValueError, match="at least one recipe"):
        study.test_results({}, test)


def test_results_figure_shows_differences_from_the_baseline_with_their_range():
    results = {
        "nothing": RecipeResult([0.8, 0.8], [0.80, 0.82], [5, 5]),
        "better": RecipeResult([0.9, 0.9], [0.85, 0.89], [5, 5]),
    }
    axes = results_figure(results).axes[0]
    (bars,) = axes.containers
    assert bars.patches[0].get_width() == pytest.approx(100 * (0.87 - 0.81))
    assert "minus the mean of 'nothing'" in axes.get_xlabel() and "min to max" in axes.get_xlabel()


def test_choose_takes_the_order_as_the_tie_break_weakest_first(data):
    train, val, _ = data
    study = RecipeStudy(train, val, seeds=(0,), epochs=3, hidden=(16,))
    weak_first = [Recipe(weight_decay=lam) for lam in (1.0, 3.0)]
    # a tolerance of a whole point of accuracy ties them: the first listed wins, whichever it is
    assert study.choose(weak_first, tolerance=1.0) == weak_first[0]
    assert study.choose(weak_first[::-1], tolerance=1.0) == weak_first[1]
    # with no tolerance, the better mean wins whatever the order
    best = max(weak_first, key=lambda r: study.val_accuracy(r)[0])
    assert study.choose(weak_first, tolerance=0) == study.choose(weak_first[::-1], tolerance=0) or (
        study.val_accuracy(weak_first[0]) == study.val_accuracy(weak_first[1])
    )
    assert study.val_accuracy(study.choose(weak_first, tolerance=0)) == study.val_accuracy(best)


def _result(test_correct, memorised=()):
    accuracy = [sum(c) / len(c) for c in test_correct]
    return RecipeResult(accuracy, accuracy, [1] * len(accuracy), test_correct, list(memorised))


def test_paired_bootstrap_centres_on_the_mean_difference_and_pairs_the_images():
    a = _result([[True] * 80 + [False] * 20, [True] * 90 + [False] * 10])
    b = _result([[True] * 70 + [False] * 30, [True] * 70 + [False] * 30])
    mean, low, high = paired_bootstrap(a, b, resamples=500)
    assert mean == pytest.approx(0.15) and low < mean < high
    assert paired_bootstrap(a, b, resamples=500) == (mean, low, high)  # seeded
    same = paired_bootstrap(a, a, resamples=200)
    assert same == (0.0, 0.0, 0.0)  # paired: a recipe against itself has no spread
    # d_i is 1 on 15 images, 0.5 on 10 and 0 elsewhere: an interval near +-2 s.e.
    se = ((sum([1.0] * 10 + [0.25] * 10) / 100 - 0.15**2) / 100) ** 0.5
    assert high - low == pytest.approx(4 * se, rel=0.25)
    with pytest.raises(ValueError, match="test_correct"):
        paired_bootstrap(a, RecipeResult([0.5], [0.5], [1]))
    with pytest.raises(ValueError, match="different test sets"):
        paired_bootstrap(a, _result([[True] * 10]))


def test_test_results_count_memorised_labels_and_the_table_shows_them(data):
    train, val, test = data
    noisy = with_wrong_labels(train, 0.2, seed=0)
    study = RecipeStudy(noisy, val, seeds=(0,), epochs=3, hidden=(16,))
    results = study.test_results({"nothing": Recipe()}, test, clean_train=train)
    (result,) = results.values()
    assert len(result.test_correct[0]) == len(test)
    assert sum(result.test_correct[0]) / len(test) == pytest.approx(result.test_accuracy[0])
    (run,) = study.runs(Recipe())
    assert result.memorised == [memorised_fraction(run.model, noisy, train)]
    assert "memorised" in results_table(results)
    assert "memorised" not in results_table(study.test_results({"nothing": Recipe()}, test))
