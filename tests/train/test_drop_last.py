"""fit(drop_last=True): only whole batches; the default keeps the ragged last batch."""

import pytest
import torch
from torch import nn

from course_lib.train import fit


class _BatchSizes(nn.Module):
    """A linear layer that records the size of every batch it sees in train mode."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 3)
        self.sizes: list[int] = []

    def forward(self, x):
        if self.training:
            self.sizes.append(len(x))
        return self.linear(x)


def _train(drop_last, examples=10, batch_size=4, epochs=3):
    torch.manual_seed(0)
    inputs, targets = torch.randn(examples, 4), torch.arange(examples) % 3
    model = _BatchSizes()
    history = fit(
        model,
        (inputs, targets),
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        loss_fn=nn.CrossEntropyLoss(),
        epochs=epochs,
        batch_size=batch_size,
        progress=False,
        drop_last=drop_last,
    )
    del model.sizes[0]  # fit's check that the output fits the loss: one probe of 2 examples
    return model, history


def test_the_default_keeps_the_ragged_last_batch():
    model, history = _train(drop_last=False)
    assert model.sizes == [4, 4, 2] * 3
    assert len(history.steps) == 9


def test_drop_last_trains_on_whole_batches_only():
    model, history = _train(drop_last=True)
    assert model.sizes == [4, 4] * 3
    assert len(history.steps) == 6
    assert all(0 <= e["train_accuracy"] <= 1 for e in history.epochs)


def test_drop_last_changes_nothing_when_the_batches_are_whole():
    (plain, plain_history), (dropped, dropped_history) = (
        _train(drop_last=d, examples=8) for d in (False, True)
    )
    assert plain.sizes == dropped.sizes == [4, 4] * 3
    assert [s["loss"] for s in plain_history.steps] == [s["loss"] for s in dropped_history.steps]


def test_drop_last_with_less_than_one_batch_is_refused():
    with pytest.raises(ValueError, match="leaves no batch"):
        _train(drop_last=True, examples=3)
