"""fit / evaluate: exact resume, clear errors, callbacks, History."""

import pytest
import torch
from matplotlib.figure import Figure
from torch import nn

from course_lib import seed_everything
from course_lib.data import digits_split
from course_lib.train import (
    Checkpoint,
    EarlyStopping,
    History,
    LearningRateSchedule,
    NonFiniteLossError,
    evaluate,
    fit,
    load_checkpoint,
)


@pytest.fixture(scope="module")
def digits():
    train, test = digits_split(seed=0)
    return train, test


def network(dropout=0.2):
    return nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Dropout(dropout), nn.Linear(32, 10))


def training_kit(seed=0):
    """Model, optimizer and callbacks that use every kind of state: dropout, momentum, a schedule."""
    seed_everything(seed)
    model = network()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    schedule = LearningRateSchedule(
        torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.7)
    )
    return model, optimizer, schedule


def fit_one_epoch(model, data, loss_fn):
    """One epoch of plain SGD: enough for the input checks that run before training."""
    return fit(
        model, data, optimizer=torch.optim.SGD(model.parameters()), loss_fn=loss_fn, epochs=1
    )


def test_resume_gives_exactly_the_weights_of_an_uninterrupted_run(digits, tmp_path):
    train, val = digits
    model, optimizer, schedule = training_kit()
    uninterrupted = fit(
        model,
        train,
        val,
        optimizer=optimizer,
        loss_fn=nn.CrossEntropyLoss(),
        epochs=4,
        callbacks=[schedule, Checkpoint(tmp_path / "full.pt")],
        progress=False,
    )

    first, optimizer1, schedule1 = training_kit()
    fit(
        first,
        train,
        val,
        optimizer=optimizer1,
        loss_fn=nn.CrossEntropyLoss(),
        epochs=2,
        callbacks=[schedule1, Checkpoint(tmp_path / "half.pt")],
        progress=False,
    )
    torch.manual_seed(12345)  # whatever happens between the two runs must not matter
    resumed_model, optimizer2, schedule2 = training_kit(seed=99)
    resumed = fit(
        resumed_model,
        train,
        val,
        optimizer=optimizer2,
        loss_fn=nn.CrossEntropyLoss(),
        epochs=4,
        callbacks=[schedule2, Checkpoint(tmp_path / "half.pt")],
        resume_from=tmp_path / "half.pt",
        progress=False,
    )

    for a, b in zip(model.state_dict().values(), resumed_model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert [{k: v for k, v in e.items() if k != "seconds"} for e in resumed.epochs] == [
        {k: v for k, v in e.items() if k != "seconds"} for e in uninterrupted.epochs
    ]
    assert [s["loss"] for s in resumed.steps] == [s["loss"] for s in uninterrupted.steps]
    assert resumed.epochs[-1]["lr"] == pytest.approx(0.1 * 0.7**3)  # the rate used during epoch 4


def test_checkpoint_holds_everything_needed_to_resume(digits, tmp_path):
    train, _ = digits
    model, optimizer, schedule = training_kit()
    fit(
        model,
        train,
        optimizer=optimizer,
        loss_fn=nn.CrossEntropyLoss(),
        epochs=1,
        callbacks=[schedule, Checkpoint(tmp_path / "c.pt")],
        progress=False,
    )
    checkpoint = load_checkpoint(tmp_path / "c.pt")
    assert {"model", "optimizer", "callbacks", "epoch", "history", "rng"} <= set(checkpoint)
    assert set(checkpoint["rng"]) == {"torch", "numpy", "python", "batches"}
    assert checkpoint["epoch"] == 1 and checkpoint["callbacks"][0]["last_epoch"] == 1


def test_a_crash_while_saving_keeps_the_previous_checkpoint(digits, tmp_path, monkeypatch):
    train, _ = digits
    path = tmp_path / "c.pt"
    model, optimizer, _ = training_kit()
    fit(
        model,
        train,
        optimizer=optimizer,
        loss_fn=nn.CrossEntropyLoss(),
        epochs=1,
        callbacks=[Checkpoint(path)],
        progress=False,
    )
    before = path.read_bytes()

    def crash(obj, file):
        file.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        fit(
            model,
            train,
            optimizer=optimizer,
            loss_fn=nn.CrossEntropyLoss(),
            epochs=1,
            callbacks=[Checkpoint(path)],
            progress=False,
        )
    assert path.read_bytes() == before
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


def test_history_records_steps_and_epochs_and_plots(digits):
    train, val = digits
    model, optimizer, _ = training_kit()
    history = fit(
        model,
        train,
        val,
        optimizer=optimizer,
        loss_fn=nn.CrossEntropyLoss(),
        epochs=2,
        batch_size=100,
        progress=False,
    )
    assert len(history.steps) == 2 * 14 and [e["epoch"] for e in history.epochs] == [1, 2]
    assert set(history.epochs[0]) == {
        "epoch",
        "train_loss",
        "train_accuracy",
        "val_loss",
        "val_accuracy",
        "lr",
        "seconds",
    }
    assert history["val_accuracy"][-1] > 0.8
    figure = history.plot()
    assert isinstance(figure, Figure) and all(
        axes.get_xlabel() and axes.get_ylabel() for axes in figure.axes
    )
    with pytest.raises(KeyError, match="recorded"):
        history["val_f1"]


def test_evaluate_matches_a_manual_count_and_restores_train_mode(digits):
    train, test = digits
    model = network()
    model.train()
    result = evaluate(model, test, nn.CrossEntropyLoss())
    model.eval()
    with torch.no_grad():
        manual = (model(test.inputs).argmax(1) == test.targets).float().mean().item()
    assert result["accuracy"] == pytest.approx(manual)
    model.train()
    evaluate(model, test)
    assert model.training


def test_early_stopping_stops_and_restores_the_best_weights(digits):
    train, val = digits
    seed_everything(0)
    model = network()
    # too large: validation loss will not improve for long
    optimizer = torch.optim.SGD(model.parameters(), lr=2.0)
    stopper = EarlyStopping(patience=2)
    history = fit(
        model,
        train,
        val,
        optimizer=optimizer,
        loss_fn=nn.CrossEntropyLoss(),
        epochs=30,
        callbacks=[stopper],
        progress=False,
    )
    assert len(history.epochs) < 30 and "early stopping" in history.stop_reason
    assert evaluate(model, val, nn.CrossEntropyLoss())["loss"] == pytest.approx(
        stopper.best, rel=1e-5
    )


def test_wrong_number_of_outputs_names_the_shapes(digits):
    train, _ = digits
    model = nn.Linear(64, 5)  # 10 classes need 10 outputs
    with pytest.raises(ValueError, match="go up to class 9, but the model outputs only 5 scores"):
        fit_one_epoch(model, train, nn.CrossEntropyLoss())


def test_bce_with_class_indices_says_use_cross_entropy(digits):
    train, _ = digits
    model = nn.Linear(64, 10)
    with pytest.raises(
        ValueError, match="needs float targets.*For 10 classes use nn.CrossEntropyLoss"
    ):
        fit_one_epoch(model, train, nn.BCEWithLogitsLoss())


def test_mismatched_regression_shapes_are_named():
    inputs, targets = torch.randn(20, 3), torch.randn(20, 2)
    model = nn.Linear(3, 4)
    with pytest.raises(
        ValueError, match=r"output of shape \(2, 4\) but the targets have shape \(2, 2\)"
    ):
        fit_one_epoch(model, (inputs, targets), nn.MSELoss())


def test_nan_loss_stops_and_reports_step_and_lr():
    seed_everything(0)
    inputs, targets = torch.randn(64, 3), torch.randn(64, 1)
    model = nn.Linear(3, 1)
    # each step overshoots more: the loss explodes
    optimizer = torch.optim.SGD(model.parameters(), lr=10.0)
    with pytest.raises(
        NonFiniteLossError, match=r"became (nan|inf) at step \d+ \(epoch \d+\) with lr = 10"
    ) as caught:
        fit(
            model,
            (inputs, targets),
            optimizer=optimizer,
            loss_fn=nn.MSELoss(),
            epochs=50,
            batch_size=8,
            progress=False,
        )
    assert (
        isinstance(caught.value.history, History)
        and "loss became" in caught.value.history.stop_reason
    )


def test_regression_target_missing_a_dimension_is_caught_not_broadcast():
    inputs, targets = torch.randn(20, 3), torch.randn(20)  # (N,) targets vs (N, 1) outputs
    model = nn.Linear(3, 1)
    with pytest.raises(ValueError, match="would broadcast"):
        fit_one_epoch(model, (inputs, targets), nn.MSELoss())


@pytest.mark.parametrize(
    "data, message",
    [
        ((torch.zeros(0, 64), torch.zeros(0, dtype=torch.long)), "train_data is empty"),
        ((torch.zeros(5, 64), torch.zeros(4, dtype=torch.long)), "5 inputs but 4 targets"),
        ((100, 0.1, 0.01), "must be a course_lib.data.Split"),
    ],
)
def test_bad_datasets_are_refused_clearly(data, message):
    model = nn.Linear(64, 10)
    with pytest.raises((ValueError, TypeError), match=message):
        fit_one_epoch(model, data, nn.CrossEntropyLoss())


def test_progress_bar_can_be_switched_off(digits, capsys):
    train, _ = digits
    model = network()
    fit(
        model,
        train,
        optimizer=torch.optim.SGD(model.parameters()),
        loss_fn=nn.CrossEntropyLoss(),
        epochs=1,
        progress=False,
    )
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_unattached_head_is_caught(digits):
    train, _ = digits
    backbone = nn.Sequential(nn.Linear(64, 64), nn.ReLU())  # the head was defined, never attached
    with pytest.raises(
        ValueError, match="outputs 64 scores.*only 10 classes: is the classification head attached"
    ):
        fit_one_epoch(backbone, train, nn.CrossEntropyLoss())


def test_learning_rate_finder_leaves_the_model_alone_and_suggests_a_sane_rate(digits):
    from course_lib.train import find_learning_rate

    train, _ = digits
    model = network()
    before = [p.detach().clone() for p in model.parameters()]
    search = find_learning_rate(model, train, loss_fn=nn.CrossEntropyLoss(), steps=80)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert len(search.learning_rates) == len(search.losses) <= 80
    assert search.learning_rates == sorted(search.learning_rates)
    assert 1e-3 < search.suggestion < 1.0  # SGD on digits: somewhere in the usual range
    assert search.plot().axes[0].get_xscale() == "log"


def test_confusion_matrix_counts_every_example_once(digits):
    from course_lib.train import confusion_matrix

    _, test = digits
    matrix = confusion_matrix(network(), test, classes=10)
    assert matrix.shape == (10, 10) and int(matrix.sum()) == len(test)
    assert matrix.sum(1).tolist() == torch.bincount(test.targets, minlength=10).tolist()


def _augmented_cnn_run(shapes_dataset, augment, epochs, *, path, resume=None):
    """Train a tiny CNN on shapes with ``augment`` and a checkpoint at ``path``; return the model."""
    from course_lib.models import cnn

    train, val = shapes_dataset(64, size=16, seed=0), shapes_dataset(32, size=16, seed=1)
    seed_everything(0)
    model = cnn(3, 4, channels=(4,))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    fit(
        model,
        train,
        val,
        optimizer=optimizer,
        loss_fn=nn.CrossEntropyLoss(),
        epochs=epochs,
        batch_size=16,
        augment=augment,
        callbacks=[Checkpoint(path)],
        resume_from=resume,
        progress=False,
    )
    return model


def _same_weights(a: nn.Module, b: nn.Module) -> bool:
    return all(
        torch.equal(x, y)
        for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )


def test_augmentation_applies_to_training_batches_only_and_keeps_resume_exact(tmp_path, shapes):
    from course_lib.augment import augmentation

    calls = []

    def counting(image):
        calls.append(image.shape)
        return augmentation(shear_intensity=0.2, flip=True)(image)

    full = _augmented_cnn_run(shapes, counting, 2, path=tmp_path / "full.pt")
    assert len(calls) == 2 * 64  # every training image once per epoch, no validation image
    _augmented_cnn_run(shapes, counting, 1, path=tmp_path / "half.pt")
    resumed = _augmented_cnn_run(
        shapes, counting, 2, resume=tmp_path / "half.pt", path=tmp_path / "half.pt"
    )
    assert _same_weights(full, resumed)


def test_early_stopping_restores_the_best_weights_even_without_stopping(digits):
    train, val = digits
    seed_everything(0)
    model = network()
    stopper = EarlyStopping(patience=100)  # never stops within 8 epochs
    history = fit(
        model,
        train,
        val,
        optimizer=torch.optim.SGD(model.parameters(), lr=1.5),
        loss_fn=nn.CrossEntropyLoss(),
        epochs=8,
        callbacks=[stopper],
        progress=False,
    )
    assert len(history.epochs) == 8 and history.stop_reason == ""
    assert stopper.best == min(history["val_loss"])
    assert evaluate(model, val, nn.CrossEntropyLoss())["loss"] == pytest.approx(
        stopper.best, rel=1e-5
    )


def test_batch_augmentation_in_fit_is_seeded_and_resumes_exactly(tmp_path, shapes):
    from course_lib.augment import BatchAugmentation

    warp = BatchAugmentation(0.2, 0.1, True, 10)
    full = _augmented_cnn_run(shapes, warp, 2, path=tmp_path / "full.pt")
    _augmented_cnn_run(shapes, warp, 1, path=tmp_path / "half.pt")
    resumed = _augmented_cnn_run(
        shapes, warp, 2, resume=tmp_path / "half.pt", path=tmp_path / "half.pt"
    )
    plain = _augmented_cnn_run(shapes, None, 2, path=tmp_path / "plain.pt")
    assert _same_weights(full, resumed)
    assert not _same_weights(full, plain)
