"""Training a network: ``fit`` records everything, ``evaluate`` measures it.

    history = fit(model, train, val, optimizer=torch.optim.Adam(model.parameters()),
                  loss_fn=nn.CrossEntropyLoss(), epochs=10)
    history.plot()

``train`` and ``val`` are :class:`course_lib.data.Split` objects (inputs and targets) or any
map-style torch Dataset of ``(input, target)`` pairs. Batches are drawn by ``fit`` itself,
from a generator seeded with ``seed``, so a run can be checkpointed and resumed exactly.
"""

from course_lib.train.callbacks import (
    Callback,
    Checkpoint,
    EarlyStopping,
    LearningRateSchedule,
    TrainingState,
    load_checkpoint,
)
from course_lib.train.checks import OverfitResult, chance_level_loss, overfit_one_batch
from course_lib.train.history import History, NonFiniteLossError
from course_lib.train.loop import confusion_matrix, evaluate, fit
from course_lib.train.lr_finder import LearningRateSearch, find_learning_rate

__all__ = [
    "fit",
    "evaluate",
    "History",
    "NonFiniteLossError",
    "Callback",
    "TrainingState",
    "EarlyStopping",
    "LearningRateSchedule",
    "Checkpoint",
    "load_checkpoint",
    "LearningRateSearch",
    "find_learning_rate",
    "confusion_matrix",
    "chance_level_loss",
    "overfit_one_batch",
    "OverfitResult",
]
