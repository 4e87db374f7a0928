"""Chapter 5's studies: BatchNorm choices on equal terms, a learning curve that reuses runs and
gives the feature-extraction head a converged fit, and an explorer that never reads the test set."""

import pytest
import torch
from matplotlib.figure import Figure

from course_lib.data import Split, digits_splits, per_class_subset
from course_lib.lessons import ch05_transfer_study as study
from course_lib.lessons.ch05_transfer_study import (
    BATCHNORM_CHOICES,
    FEATURES_CONVERGED,
    accuracies_by_shots,
    batchnorm_figure,
    batchnorm_study,
    compare_strategies,
    embed_splits,
    learning_curve,
    learning_curve_figure,
    strategy_table,
    train_strategy,
    transfer_figure,
)


@pytest.fixture(scope="module")
def splits():
    train, val, test = digits_splits(size=16, seed=0)
    small = Split(val.inputs[:60], val.targets[:60])  # small validation and test: fast checks
    return {0: (train, small, Split(test.inputs[:60], test.targets[:60]))}


def test_batchnorm_study_gives_each_choice_the_same_start_and_only_train_mode_moves_statistics(
    splits, monkeypatch
):
    heads = []
    real_run = study._batchnorm_run

    def recording(choice, head, *args, **kwargs):
        heads.append({k: v.clone() for k, v in head.items()})
        return real_run(choice, head, *args, **kwargs)

    monkeypatch.setattr(study, "_batchnorm_run", recording)
    results = batchnorm_study(splits, per_class=2, epochs=1, progress=False)
    assert list(results) == list(BATCHNORM_CHOICES)
    assert all(len(runs) == 1 for runs in results.values())
    assert len(heads) == 4 and all(torch.equal(h["weight"], heads[0]["weight"]) for h in heads)
    kept, reestimated, drift, trained = (results[c][0] for c in BATCHNORM_CHOICES)
    assert kept.drift == 0 and reestimated.drift == 0  # eval mode while the head trains
    assert drift.drift > 0 and trained.drift > 0  # train mode moves the running statistics
    assert all(0 <= r.val_accuracy <= 1 for runs in results.values() for r in runs)
    one_batch = batchnorm_study(splits, per_class=2, epochs=1, batch_size=20, progress=False)
    assert (
        one_batch[BATCHNORM_CHOICES[0]][0].drift == 0
        and one_batch[BATCHNORM_CHOICES[3]][0].drift > 0
    )
    figure = batchnorm_figure({"batches of 32": results, "one batch": one_batch})
    assert isinstance(figure, Figure) and len(figure.axes) == 2


def test_kept_statistics_train_the_same_head_as_a_live_frozen_backbone(splits):
    """The cached path of the study is the live frozen backbone, computed once."""
    train, val, _ = splits[0]
    labelled = Split(train.inputs[:40], train.targets[:40])
    torch.manual_seed(0)
    head = torch.nn.Linear(128, 10).state_dict()
    cached = study._batchnorm_run(
        BATCHNORM_CHOICES[0], head, labelled, val, epochs=2, lr=1e-2, seed=0
    )
    live = train_strategy("features (live)", labelled, val, None, steps=4)
    assert cached.drift == 0 and abs(cached.val_accuracy - live.val_accuracy) < 0.2


def test_a_converged_head_ignores_the_step_budget_and_can_skip_the_test_set(splits):
    train, val, test = splits[0]
    small = Split(train.inputs[:100], train.targets[:100])
    short = train_strategy(FEATURES_CONVERGED, small, val, test, steps=1)
    long = train_strategy(FEATURES_CONVERGED, small, val, test, steps=500)
    assert short.test_accuracy == long.test_accuracy and short.val_accuracy == long.val_accuracy
    assert short.trainable == 1290 and short.train_accuracy > 0.9
    assert train_strategy(FEATURES_CONVERGED, small, val, None).test_accuracy is None


def test_learning_curve_reuses_known_runs_and_trains_only_the_rest(splits, monkeypatch):
    train, val, test = splits[0]
    known = compare_strategies(["scratch"], splits, per_class=2, steps=2, progress=False)
    trained = []
    real_train = study.train_strategy

    def recording(strategy, labelled, *args, **kwargs):
        trained.append((strategy, len(labelled)))
        return real_train(strategy, labelled, *args, **kwargs)

    monkeypatch.setattr(study, "train_strategy", recording)
    curves = learning_curve(
        ["scratch", FEATURES_CONVERGED], splits, (1, 2), steps=2, known={2: known}, progress=False
    )
    assert curves["scratch"][2] == known["scratch"]  # reused, not trained again
    assert sorted(trained) == [(FEATURES_CONVERGED, 10), (FEATURES_CONVERGED, 20), ("scratch", 10)]
    accuracy = accuracies_by_shots(curves)
    assert accuracy["scratch"][2] == [known["scratch"][0].test_accuracy]
    figure = learning_curve_figure(curves, full_size=100)
    assert "3 seeds" not in figure.axes[0].get_ylabel() and "1 seeds" in figure.axes[0].get_ylabel()
    with pytest.raises(ValueError, match="one per seed"):
        learning_curve(["scratch"], {**splits, 1: splits[0]}, (2,), known={2: known})


def test_the_table_shows_the_spread_over_seeds(splits):
    runs = compare_strategies(
        ["features (cached)"], {0: splits[0], 1: splits[0]}, per_class=2, steps=4, progress=False
    )
    table = strategy_table(runs, target=0.5)
    assert "spread" in table and "mean over 2 seeds" in table
    runs["scratch"] = runs["features (cached)"][:1]
    assert "mean over 2/1 seeds" in strategy_table(runs, target=0.5)


def test_the_explorer_never_reads_the_test_set(splits):
    train, val, _ = splits[0]
    poisoned = Split(torch.full((3, 1, 16, 16), float("nan")), torch.tensor([0, 1, 2]))
    figure = transfer_figure((train, val, poisoned), per_class=1, steps=10)
    assert "validation accuracy" in figure.axes[0].get_title()
    assert "test" not in figure.axes[0].get_title()


def test_the_batchnorm_study_can_drop_the_ragged_last_batch(splits, monkeypatch):
    calls = []
    real_fit = study.fit

    def recording(*args, **kwargs):
        calls.append(kwargs.get("drop_last"))
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(study, "fit", recording)
    results = batchnorm_study(
        splits, per_class=2, epochs=1, batch_size=8, drop_last=True, progress=False
    )
    assert calls == [True] * len(BATCHNORM_CHOICES)  # every choice, the same batches
    # drift in running standard deviations: a scale-free number, moved only in train mode
    assert results[BATCHNORM_CHOICES[0]][0].drift == 0 < results[BATCHNORM_CHOICES[2]][0].drift


def test_the_learning_rate_sweep_reuses_the_known_run_and_never_reads_a_test_set(
    splits, monkeypatch
):
    train, val, _ = splits[0]
    labelled = per_class_subset(train, 2, seed=0)
    calls = []
    real = study.train_strategy

    def recording(strategy, labelled, val, test, **kwargs):
        calls.append((strategy, kwargs["lr"], test))
        return real(strategy, labelled, val, test, **kwargs)

    monkeypatch.setattr(study, "train_strategy", recording)
    own = study.STRATEGY["layer4 + fc"].head_lr
    known = real("layer4 + fc", labelled, val, None, steps=2)
    sweep = study.learning_rate_sweep(
        {"layer4 + fc": (own / 3, own)}, labelled, val, steps=2, known={"layer4 + fc": known}
    )
    assert calls == [("layer4 + fc", own / 3, None)]  # the known rate is not trained again
    assert sweep["layer4 + fc"][own] == known.val_accuracy
    table = study.sweep_table(sweep)
    assert "layer4 + fc" in table and table.count("*") == 2  # one best per row, and the legend


def test_shared_embeddings_give_the_same_runs_as_embedding_each_time(splits):
    embeddings = embed_splits(splits)
    for name in ("features (cached)", FEATURES_CONVERGED):
        alone = compare_strategies([name], splits, per_class=2, steps=4, progress=False)
        shared = compare_strategies(
            [name], splits, per_class=2, steps=4, embeddings=embeddings, progress=False
        )
        assert alone[name][0].test_accuracy == pytest.approx(shared[name][0].test_accuracy)
        assert alone[name][0].val_accuracy == pytest.approx(shared[name][0].val_accuracy)
    train, val, test = splits[0]
    with pytest.raises(ValueError, match="trains on images"):
        train_strategy("scratch", train, val, test, embedded=True)


def test_layer4_trains_on_layer3_outputs_computed_once_with_the_same_result(splits, monkeypatch):
    """Frozen blocks in eval mode compute the same outputs every step: computing them once
    (what train_strategy does) trains the same network as running them at every step."""
    train, val, test = splits[0]
    labelled = per_class_subset(train, 3, seed=0)
    once = train_strategy("layer4 + fc", labelled, val, test, steps=6)
    monkeypatch.setattr(study, "_first_trained_block", lambda strategy: 0)
    every_step = train_strategy("layer4 + fc", labelled, val, test, steps=6)
    assert once.trainable == every_step.trainable == 231_434
    assert once.val_accuracy == pytest.approx(every_step.val_accuracy, abs=1 / len(val))
    assert once.test_accuracy == pytest.approx(every_step.test_accuracy, abs=1 / len(test))
    assert study._first_trained_block(study.STRATEGY["features (live)"]) == 0  # stays live
    assert study._first_trained_block(study.STRATEGY["gradual unfreezing"]) == 0


def test_the_learning_curve_can_run_fewer_seeds_at_some_sizes_and_skip_train_accuracy(splits):
    two = {0: splits[0], 1: splits[0]}
    curves = learning_curve(
        ["features (cached)"],
        two,
        (1, None),
        steps=2,
        seeds_at={None: (0,)},
        train_accuracy_at=(1,),
        embeddings=embed_splits(two),
        progress=False,
    )
    runs = curves["features (cached)"]
    assert len(runs[1]) == 2 and len(runs[None]) == 1
    assert all(r.train_accuracy is not None for r in runs[1])
    assert runs[None][0].train_accuracy is None
    figure = learning_curve_figure(curves, full_size=100)
    assert "mean of 2/1 seeds" in figure.axes[0].get_ylabel()


def test_the_batchnorm_study_can_run_some_choices_only(splits):
    chosen = (BATCHNORM_CHOICES[0], BATCHNORM_CHOICES[3])
    results = batchnorm_study(splits, per_class=2, epochs=1, choices=chosen, progress=False)
    assert tuple(results) == chosen
    with pytest.raises(ValueError, match="unknown BatchNorm choices"):
        batchnorm_study(splits, per_class=2, epochs=1, choices=("frozen",), progress=False)
