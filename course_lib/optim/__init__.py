"""From-scratch optimizers with torch.optim's names, arguments and defaults.

Each is a ``torch.optim.Optimizer`` whose update fits on one screen, with its rule as math
in the docstring. The tests check them against torch.optim step for step.
"""

from course_lib.optim.adam import Adam, Adamax, AdamW, NAdam
from course_lib.optim.adaptive import Adadelta, Adagrad, RMSprop
from course_lib.optim.conjugate_gradient import ConjugateGradient
from course_lib.optim.sgd import SGD

__all__ = [
    "SGD",
    "Adagrad",
    "RMSprop",
    "Adadelta",
    "Adam",
    "AdamW",
    "Adamax",
    "NAdam",
    "ConjugateGradient",
]
# The optimizers with a torch.optim namesake, checked against it step for step. Conjugate
# gradient has none; scipy is its reference.
TORCH_NAMESAKES = ("SGD", "Adagrad", "RMSprop", "Adadelta", "Adam", "AdamW", "Adamax", "NAdam")
