"""From-scratch optimizers with torch.optim's names, arguments and defaults.

Each is a ``torch.optim.Optimizer`` whose update fits on one screen, with its rule as math
in the docstring. The tests check them against torch.optim step for step.
"""

from course_lib.optim.adam import Adam, Adamax, AdamW, NAdam
from course_lib.optim.adaptive import Adadelta, Adagrad, RMSprop
from course_lib.optim.conjugate_gradient import ConjugateGradient
from course_lib.optim.sgd import SGD
from course_lib.optim.trajectory import EvaluationCounter, Trajectory, run_on_landscape

__all__ = [
    # the torch.optim namesakes, checked against torch.optim step for step
    "SGD", "Adagrad", "RMSprop", "Adadelta", "Adam", "AdamW", "Adamax", "NAdam",
    # conjugate gradient (scipy is its reference) and the helpers the notebooks use
    "ConjugateGradient", "run_on_landscape", "Trajectory", "EvaluationCounter",
]  # fmt: skip
TORCH_NAMESAKES = __all__[:8]
