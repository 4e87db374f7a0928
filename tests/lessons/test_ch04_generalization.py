"""Chapter 4's experiment helpers: each recipe wires its technique, and comparisons are seeded."""

import pytest
from matplotlib.figure import Figure
from torch import nn

from course_lib.augment import BatchAugmentation
from course_lib.data import digits_splits, per_class_subset
from course_lib.lessons.ch04_generalization import (
    Recipe,
    compare_recipes,
    results_figure,
    results_table,
    technique_recipes,
    train_with,
)
from course_lib.train import EarlyStopping


@pytest.fixture(scope="module")
def data():
    train, val, test = digits_splits(seed=0)
    return per_class_subset(train, 5, seed=0), per_class_subset(val, 5, seed=0), test


RECIPES = technique_recipes(
    augment=BatchAugmentation(rotation_degrees=10),
    dropout=0.3,
    weight_decay=0.5,
    early_stopping_patience=2,
)


def test_each_recipe_turns_on_its_technique_and_all_combined_turns_on_every_one():
    assert RECIPES["nothing"] == Recipe()
    switched_on = {
        name: {field for field, value in vars(recipe).items() if value not in (None, 0.0, False)}
        for name, recipe in RECIPES.items()
    }
    singles = [
        fields for name, fields in switched_on.items() if name not in ("nothing", "all combined")
    ]
    assert all(len(fields) == 1 for fields in singles)
    assert switched_on["all combined"] == set().union(*singles) and len(singles) == 5


def test_train_with_builds_dropout_weight_decay_and_early_stopping(data):
    train, val, _ = data
    model, history = train_with(
        RECIPES["all combined"], train, val, hidden=(16,), epochs=30, lr=0.05
    )
    assert any(isinstance(layer, nn.Dropout) and layer.p == 0.3 for layer in model.modules())
    assert "early stopping" in history.stop_reason and len(history.epochs) < 30
    lrs = history["lr"]
    # the cosine schedule lowers the rate
    assert lrs == sorted(lrs, reverse=True) and lrs[-1] < 0.05
    plain_model, plain_history = train_with(Recipe(), train, val, hidden=(16,), epochs=3)
    assert not any(isinstance(layer, nn.Dropout) for layer in plain_model.modules())
    assert len(plain_history.epochs) == 3 and set(plain_history["lr"]) == {1e-3}
    assert EarlyStopping  # imported for the reader: the callback train_with uses


def test_compare_recipes_is_seeded_and_reports_every_run(data):
    train, val, test = data
    chosen = {name: RECIPES[name] for name in ("nothing", "dropout")}
    first = compare_recipes(
        chosen, train, val, test, seeds=(0, 1), progress=False, hidden=(16,), epochs=3
    )
    again = compare_recipes(
        chosen, train, val, test, seeds=(0, 1), progress=False, hidden=(16,), epochs=3
    )
    assert first == again and list(first) == ["nothing", "dropout"]
    assert all(len(r.test_accuracy) == 2 and r.epochs == [3, 3] for r in first.values())
    table = results_table(first)
    assert "dropout" in table and "+0.0" in table.splitlines()[1]
    assert isinstance(results_figure(first, title="t"), Figure)
    with pytest.raises(ValueError, match="at least one recipe"):
        compare_recipes({}, train, val, test)
