"""Exercises of chapter 1: gradient descent (solutions/01_gradient_descent.ipynb).

- ``ch1.gd_step``: one step, written from the idea (warm-up);
- ``ch1.learning_rate_limits`` (derive): the divergence limit and the best fixed rate of a
  least-squares problem, from its features alone;
- ``ch1.fix_descent`` (debug): a gradient-descent loop with four planted bugs, each graded on
  its own by a probe that makes only that bug visible, and the outcome;
- ``ch1.fit_on_a_budget`` (experiment): weights for a regression the learner never sees,
  from at most ``budget`` per-example gradients, graded on a hidden test set.
"""

from __future__ import annotations

import torch

from course_lib.grading.spec import (
    Case,
    Exercise,
    Mistake,
    Probe,
    Verdict,
    compare_with_reference,
    describe,
)

# --- ch1.gd_step ------------------------------------------------------------------------------------


def _gd_step_case(params: dict) -> Case:
    generator = torch.Generator().manual_seed(params["seed"])
    w = torch.randn(params["shape"], generator=generator)
    grad = torch.randn(params["shape"], generator=generator)
    lr = params["lr"]
    return compare_with_reference(
        f"w of shape {tuple(params['shape'])}, lr = {lr}",
        (w, grad, lr),
        reference=lambda w, g, lr: w - lr * g,
        mistakes=[
            Mistake(
                lambda w, g, lr: w + lr * g,
                "you stepped *up* the gradient: the gradient points uphill, the step goes "
                "against it",
                "which way does the gradient point, uphill or downhill?",
            ),
            Mistake(
                lambda w, g, lr: w - g,
                "the learning rate is missing: it scales the gradient before the step",
                "how large should the step be, and which argument says so?",
            ),
            Mistake(
                lambda w, g, lr: -lr * g,
                "you returned the step itself, not the new parameters it leads to",
                "the function returns the parameters after the step, not the step",
            ),
            Mistake(
                lambda w, g, lr: w,
                "w came back unchanged: the step was computed but not applied to w",
                "compare what you return with the w you were given",
            ),
        ],
        shape_hint="the result must have the same shape as w",
        in_place_hint="w was changed in place: do not use w -= ...; build and return a new "
        "tensor, so the caller's w keeps its value",
    )


# --- ch1.learning_rate_limits (derive) ----------------------------------------------------------------


def _correlated_features(seed: int, samples: int, features: int) -> torch.Tensor:
    """Features of different scales, turned so the loss's steep directions are not the axes."""
    generator = torch.Generator().manual_seed(seed)
    raw = torch.randn(samples, features, generator=generator, dtype=torch.float64)
    scales = torch.linspace(1.0, 2.0, features, dtype=torch.float64)
    turn = torch.randn(features, features, generator=generator, dtype=torch.float64)
    return raw * scales @ torch.linalg.qr(turn)[0]


def _curvatures(features: torch.Tensor, factor: float = 2.0, mean: bool = True) -> torch.Tensor:
    """Eigenvalues of the Hessian of mean((X w - y)^2): factor * X^T X / N (ascending)."""
    gram = features.T @ features / (len(features) if mean else 1)
    return torch.linalg.eigvalsh(factor * gram)


def _limits_from(curvatures: torch.Tensor) -> tuple[float, float]:
    smallest, largest = curvatures.min().item(), curvatures.max().item()
    return 2 / largest, 2 / (smallest + largest)


def _reference_limits(features: torch.Tensor) -> tuple[float, float]:
    return _limits_from(_curvatures(features))


def _limits_without_the_two(features):
    return _limits_from(_curvatures(features, factor=1.0))


def _limits_of_the_sum(features):
    return _limits_from(_curvatures(features, mean=False))


def _limits_from_the_diagonal(features):
    return _limits_from(torch.diagonal(2 * features.T @ features / len(features)))


def _limits_swapped(features):
    largest, best = _reference_limits(features)
    return best, largest


def _limit_one_over_l(features):
    curvatures = _curvatures(features)
    return 1 / curvatures.max().item(), _limits_from(curvatures)[1]


def _learning_rate_limits_case(params: dict) -> Case:
    features = _correlated_features(params["seed"], params["samples"], params["features"])
    return compare_with_reference(
        f"{params['samples']} examples, {params['features']} correlated features",
        (features,),
        reference=_reference_limits,
        mistakes=[
            Mistake(
                _limits_without_the_two,
                "both rates are twice too large: differentiating the square twice brings a "
                "factor 2 into the curvature",
                "differentiate the loss twice, constants included",
            ),
            Mistake(
                _limits_of_the_sum,
                "both rates are N times too small: the loss is a mean over the examples, so its "
                "curvature is a mean too",
                "is the loss a sum or a mean over the examples?",
            ),
            Mistake(
                _limits_from_the_diagonal,
                "you used the curvature along each feature's axis (the Hessian's diagonal); the "
                "features are correlated, so the steepest and flattest directions are the "
                "Hessian's eigenvectors, and the curvatures its eigenvalues",
                "are the steepest and flattest directions of this loss the coordinate axes?",
            ),
            Mistake(
                _limits_swapped,
                "the two rates are swapped: return the divergence limit first, then the best "
                "fixed rate (which is smaller)",
                "which of your two rates should be the larger?",
            ),
            Mistake(
                _limit_one_over_l,
                "your first rate removes the steepest direction in one step; the limit is where "
                "that direction's distance to the minimum stops shrinking and starts to grow",
                "by what factor does one step multiply the distance along the steepest "
                "direction, and when does that factor's size exceed 1?",
            ),
        ],
        tolerance=1e-4,
        shape_hint="return a pair of numbers: (the divergence limit, the best fixed rate)",
    )


# --- ch1.fix_descent (debug) ---------------------------------------------------------------------------
# The learner gets a loop with four bugs: weights as a column (predictions (N, 1) broadcast
# against targets (N,)), the squared errors summed instead of averaged, gradients never
# zeroed, and a path that stores the weight tensor itself. Each probe below makes exactly one
# of them visible: constant targets hide the broadcasting, judges that read the step's
# direction ignore its size, one-step runs cannot accumulate, and the last entry of the path
# is right even when every entry aliases it.


def _regression(seed: int, samples: int, features: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(samples, features, generator=generator, dtype=torch.float64)
    weights = torch.randn(features, generator=generator, dtype=torch.float64)
    noise = 0.3 * torch.randn(samples, generator=generator, dtype=torch.float64)
    return inputs, inputs @ weights + noise


def _mean_gradient(inputs: torch.Tensor, targets: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """The gradient of mean((X w - y)^2) at w."""
    return 2 * inputs.T @ (inputs @ w - targets) / len(targets)


def _constant_targets(inputs: torch.Tensor) -> torch.Tensor:
    return torch.ones(len(inputs), dtype=inputs.dtype)


def probe_descent(descend, inputs, targets, lr, steps):
    """The learner's path on one run: a list of weights, each as it came back."""
    return descend(inputs, targets, lr, steps)


def probe_descent_twice(descend, inputs, targets, lr):
    """The learner's weights after one step and after two (each from its own run)."""
    return descend(inputs, targets, lr, 1)[-1], descend(inputs, targets, lr, 2)[-1]


def _flat(value) -> torch.Tensor:
    return value.detach().double().reshape(-1)


def _last_weights(path) -> torch.Tensor | None:
    """The path's last entry as a flat tensor, or None when the path is not a list of tensors."""
    if not isinstance(path, list | tuple) or not path:
        return None
    return _flat(path[-1]) if isinstance(path[-1], torch.Tensor) else None


_PATH_NEEDED = Verdict(
    False,
    "a list of weight tensors (the start, then one per step)",
    "",
    "return the list of weights along the way, the start first",
)


def _shape_case(params: dict) -> Case:
    inputs, targets = _regression(params["seed"], 40)
    lr = 0.01
    expected = -lr * _mean_gradient(
        inputs, targets, torch.zeros(inputs.shape[1], dtype=torch.float64)
    )

    def judge(path) -> Verdict:
        last = _last_weights(path)
        if last is None:
            return _PATH_NEEDED
        wanted = f"weights of shape ({inputs.shape[1]},) after one step"
        if path[-1].shape != (inputs.shape[1],):
            got = f"weights of shape {tuple(path[-1].shape)}"
            return Verdict(False, wanted, got, _SHAPE_HINT, _SHAPE_NUDGE)
        if last.norm() == 0:
            return Verdict(
                False,
                wanted,
                "the weights did not move",
                "the step never reached the weights: check that it is applied to w itself",
                "print w before and after one step",
            )
        cosine = torch.dot(last, expected) / (last.norm() * expected.norm())
        if cosine < 0.999:
            got = f"a first step at {torch.rad2deg(torch.acos(cosine.clamp(-1, 1))):.0f}° from it"
            return Verdict(
                False, "a first step straight down the slope", got, _DIRECTION_HINT, _SHAPE_NUDGE
            )
        return Verdict(True)

    return Case(
        "probe A: one step on varied targets goes straight downhill",
        Probe(probe_descent, (inputs, targets, lr, 1)),
        judge,
    )


_DIRECTION_HINT = (
    "your first step does not point straight down the mean squared error's slope: check that "
    "the predictions and the targets have the same shape before you subtract them (an (N, 1) "
    "against an (N,) broadcasts to an (N, N) table), and which way the step goes"
)
_SHAPE_NUDGE = "print the shapes of the predictions, the targets and their difference"
_SHAPE_HINT = (
    "the weights are a column, so the predictions are (N, 1); subtracted from targets of shape "
    "(N,), they broadcast to an (N, N) table of every prediction against every target. Keep "
    "the weights a plain vector of one entry per feature"
)


def _units_case(params: dict) -> Case:
    inputs = _regression(params["seed"], params["samples"])[0]
    targets, lr = _constant_targets(inputs), 0.01
    start = torch.zeros(inputs.shape[1], dtype=torch.float64)
    expected = lr * _mean_gradient(inputs, targets, start).norm().item()

    def judge(path) -> Verdict:
        last = _last_weights(path)
        if last is None:
            return _PATH_NEEDED
        size = last.norm().item()
        wanted = f"a first step of length {expected:.4g}"
        if abs(size - expected) <= 1e-6 * expected:
            return Verdict(True)
        ratio = size / expected
        hint = (
            f"your first step is {ratio:.0f}x too long, as many times as there are examples: "
            "the loss adds the squared errors up instead of averaging them, so the right "
            "learning rate would depend on the size of the data set"
            if abs(ratio - len(inputs)) < 0.01 * len(inputs)
            else "your first step has the wrong length: is the loss the mean squared error?"
        )
        return Verdict(
            False,
            wanted,
            f"a first step of length {size:.4g}",
            hint,
            "run one step on twice as many examples: should the step get longer?",
        )

    return Case(
        f"probe B: the length of one step on {params['samples']} examples",
        Probe(probe_descent, (inputs, targets, lr, 1)),
        judge,
    )


def _zeroing_case(params: dict) -> Case:
    inputs = _regression(params["seed"], 30)[0]
    targets, lr = _constant_targets(inputs), 0.01

    def judge(answer) -> Verdict:
        first, second = (_flat(w) for w in answer)
        at_start = _mean_gradient(inputs, targets, torch.zeros_like(first))
        rate = -torch.dot(first, at_start) / torch.dot(at_start, at_start)  # the learner's own
        fresh = first - rate * _mean_gradient(inputs, targets, first)
        summed = fresh - rate * at_start
        if torch.allclose(second, fresh, rtol=1e-6, atol=1e-9):
            return Verdict(True)
        expected = "a second step along the gradient at the first step's weights"
        if torch.allclose(second, summed, rtol=1e-6, atol=1e-9):
            return Verdict(
                False,
                expected,
                "a second step along the sum of the first two gradients",
                "backward() adds to the .grad already there: the second step used the first "
                "gradient again, and the tenth would use all ten. Reset the gradient after "
                "every step",
                "what does backward() do to a .grad that already holds a value?",
            )
        return Verdict(False, expected, describe(second), "compare the second step with the first")

    return Case(
        "probe C: a second step, from where the first one ended",
        Probe(probe_descent_twice, (inputs, targets, lr)),
        judge,
    )


def _path_case(params: dict) -> Case:
    inputs = _regression(params["seed"], 30)[0]
    targets, lr, steps = _constant_targets(inputs), 0.01, 3

    def judge(path) -> Verdict:
        if _last_weights(path) is None:
            return _PATH_NEEDED
        flat = [_flat(w) for w in path]
        wanted = f"{steps + 1} different weights, the first all zeros"
        if len(flat) != steps + 1:
            return Verdict(
                False,
                wanted,
                f"{len(flat)} weights for {steps} steps",
                "the path holds the start and then one entry per step",
            )
        if flat[0].abs().max() == 0 and all(
            not torch.equal(a, b) for a, b in zip(flat, flat[1:], strict=False)
        ):
            return Verdict(True)
        return Verdict(
            False,
            wanted,
            "every entry equal to the last weights"
            if torch.equal(flat[0], flat[-1])
            else describe(path),
            "the path stores the weight tensor itself, again and again; the in-place updates "
            "then change every entry. Store a detached copy of the weights as they are now",
            "print the path after three steps: where is the start?",
        )

    return Case(
        "probe D: three steps, each entry of the list it returns",
        Probe(probe_descent, (inputs, targets, lr, steps)),
        judge,
    )


def _descent_outcome_case(params: dict) -> Case:
    inputs, targets = _regression(params["seed"], params["samples"])
    lr, steps = 0.2, 60
    solution = torch.linalg.lstsq(inputs, targets.unsqueeze(1)).solution.squeeze(1)
    best = ((inputs @ solution - targets) ** 2).mean().item()

    def judge(path) -> Verdict:
        last = _last_weights(path)
        if last is None:
            return _PATH_NEEDED
        if path[-1].shape != (inputs.shape[1],):
            return Verdict(
                False,
                f"weights of shape ({inputs.shape[1]},)",
                f"shape {tuple(path[-1].shape)}",
                _SHAPE_HINT,
            )
        loss = ((inputs @ last - targets) ** 2).mean().item()
        wanted = f"a loss within 1% of the best, {best:.4f}"
        if loss <= 1.01 * best:
            return Verdict(True)
        return Verdict(
            False,
            wanted,
            f"loss {loss:.4g} after {steps} steps at lr = {lr}",
            "the fixed loop should settle at the least-squares optimum: fix the cases above first",
        )

    return Case(
        f"the outcome: {steps} steps at lr = {lr} reach the least-squares optimum",
        Probe(probe_descent, (inputs, targets, lr, steps)),
        judge,
    )


def _fix_descent_case(params: dict) -> Case:
    return {
        "shapes": _shape_case,
        "units": _units_case,
        "zeroing": _zeroing_case,
        "path": _path_case,
        "outcome": _descent_outcome_case,
    }[params["check"]](params)


# --- ch1.fit_on_a_budget (experiment) ------------------------------------------------------------------

BUDGET_SAMPLES, BUDGET_FEATURES, BUDGET_NOISE = 2000, 20, 0.5
TARGET_RATIO = 1.10  # test loss at most this many times that of the exact least-squares fit


def _budget_problem(seed: int):
    """Training and test sets of one regression (the test set stays in the grader)."""
    generator = torch.Generator().manual_seed(seed)
    shape = (BUDGET_SAMPLES, BUDGET_FEATURES)
    train = torch.randn(shape, generator=generator, dtype=torch.float64)
    true = torch.randn(BUDGET_FEATURES, generator=generator, dtype=torch.float64)
    noise = BUDGET_NOISE * torch.randn(BUDGET_SAMPLES, generator=generator, dtype=torch.float64)
    test = torch.randn(shape, generator=generator, dtype=torch.float64)
    test_noise = BUDGET_NOISE * torch.randn(
        BUDGET_SAMPLES, generator=generator, dtype=torch.float64
    )
    return (train, train @ true + noise), (test, test @ true + test_noise)


ORDERS = 5  # batch orders per problem: a problem's score is the median over them


def _order_seeds(order_seed: int) -> list[int]:
    return [ORDERS * order_seed + k for k in range(ORDERS)]


def _budgeted_gradient(inputs, targets, budget, order_seed):
    """``gradient(weights, batch_size)`` on consecutive batches of ``budget`` shuffled rows.

    It holds only the rows the budget pays for, so nothing it keeps is worth more than the
    budget; past them it starts again from the first (and the judge sees the overspend).
    """
    pool = torch.randperm(len(targets), generator=torch.Generator().manual_seed(order_seed))
    pool = pool[:budget]
    inputs, targets, spent = inputs[pool], targets[pool], [0]

    def gradient(weights, batch_size):
        batch_size = int(batch_size)
        if not 1 <= batch_size <= budget:
            raise ValueError(f"batch_size must be between 1 and {budget}, got {batch_size}")
        rows = (spent[0] + torch.arange(batch_size)) % budget
        spent[0] += batch_size
        w = torch.as_tensor(weights).detach().to(inputs.dtype).reshape(-1)
        residuals = inputs[rows] @ w - targets[rows]
        return 2 * inputs[rows].T @ residuals / batch_size

    return gradient, spent


def probe_budgeted_fit(fit, inputs, targets, budget, order_seed):
    """Run ``fit(gradient, features, budget)`` once per batch order; count what each spent.

    ``gradient(weights, batch_size)`` returns the mean-squared-error gradient on a fresh batch
    of the training set, which the learner's code never sees itself.
    """
    features = inputs.shape[1]
    gradients = [_budgeted_gradient(inputs, targets, budget, s) for s in _order_seeds(order_seed)]
    del inputs, targets  # the learner's code gets gradients, not the data
    weights, examples = [], []
    for gradient, spent in gradients:
        weights.append(fit(gradient, features, budget))
        examples.append(spent[0])
    return {"weights": weights, "examples": examples}


def _test_ratio(weights, test_x, test_y, best: float) -> float:
    return ((test_x @ _flat(weights) - test_y) ** 2).mean().item() / best


def _fit_on_a_budget_case(params: dict) -> Case:
    (train_x, train_y), (test_x, test_y) = _budget_problem(params["seed"])
    budget = params["budget"]
    solution = torch.linalg.lstsq(train_x, train_y.unsqueeze(1)).solution.squeeze(1)
    best = ((test_x @ solution - test_y) ** 2).mean().item()
    wanted = f"a median test loss at most {TARGET_RATIO:g}x the best, within budget"

    def judge(report) -> Verdict:
        spent, runs = max(report["examples"]), report["weights"]
        if spent > budget:
            return Verdict(
                False,
                f"at most {budget} example-gradients",
                f"{spent} example-gradients",
                f"over budget: every call costs its batch size, and all calls together may cost "
                f"at most {budget}; count them in your loop",
                "add up the batch sizes of all your calls",
            )
        if min(report["examples"]) == 0:
            return Verdict(
                False,
                "weights learned from the gradients you asked for",
                "a run that asked for no gradient",
                "the weights must come from gradient(w, batch_size): call it",
            )
        for weights in runs:
            if not isinstance(weights, torch.Tensor) or weights.numel() != BUDGET_FEATURES:
                return Verdict(
                    False,
                    f"a tensor of {BUDGET_FEATURES} weights",
                    describe(weights),
                    "return the weights: one number per feature",
                )
        ratios = sorted(_test_ratio(weights, test_x, test_y, best) for weights in runs)
        ratio = ratios[len(ratios) // 2]
        got = (
            f"{ratio:.3g}x the best (median of {len(ratios)} batch orders: "
            f"{', '.join(f'{r:.3g}' for r in ratios)}), {spent} example-gradients"
        )
        if ratio <= TARGET_RATIO:
            return Verdict(True, f"<= {TARGET_RATIO:g}x the best", got)
        return Verdict(False, wanted, got, *_budget_advice(ratio, spent, budget))

    return Case(
        f"regression {params['seed']} (you cannot see it), {budget} example-gradients, "
        f"{ORDERS} batch orders",
        Probe(probe_budgeted_fit, (train_x, train_y, budget, params["order_seed"])),
        judge,
    )


def _budget_advice(ratio: float, spent: int, budget: int) -> tuple[str, str]:
    """(hint, nudge) for a run that missed the target."""
    if not ratio < 1e6:  # nan, inf or huge: the run blew up
        return (
            "the run diverged: your rate is above the divergence limit of your batches' loss",
            "print the loss every few steps: does it grow?",
        )
    if spent < budget // 2:
        return (
            f"you spent {spent} of {budget} example-gradients: more steps were on offer",
            "how many steps does your batch size leave you?",
        )
    if ratio > 2:
        return (
            "far from the optimum after the whole budget: with large batches there are few "
            "steps, and with a small rate they are short. Chapter 1, section 6: many small, "
            "noisy batches beat few exact ones per pass over the data",
            "how many steps does your batch size leave you within the budget?",
        )
    return (
        "close, but not there. Either the rate is too small to arrive in the steps the budget "
        "allows, or the noise of small batches keeps your weights hovering above the optimum "
        "at the end. Try rates a factor of two apart; lowering the rate as the budget runs "
        "out, or averaging the last steps' weights, tames the noise",
        "at the end of the budget, is your loss still falling, or hovering?",
    )


# --- the exercises ----------------------------------------------------------------------------------

EXERCISES = [
    Exercise(
        id="ch1.gd_step",
        title="One gradient-descent step",
        function_name="gd_step",
        points=1,
        make_case=_gd_step_case,
        public_params=[
            {"seed": 0, "shape": [2], "lr": 0.1},
            {"seed": 1, "shape": [3, 2], "lr": 0.5},
        ],
        nudge="a step moves w a distance proportional to the gradient, downhill: reread the "
        "update in section 1",
        praise="your step goes downhill, scaled by lr, and leaves the caller's w untouched.",
        next_step="take ten steps on quadratic_bowl(10) with your function, then raise lr "
        "past 0.2 and watch the loss grow.",
        kind="implement",
        minutes=3,
    ),
    Exercise(
        id="ch1.learning_rate_limits",
        title="Learning-rate limits from the data",
        function_name="learning_rate_limits",
        points=2,
        make_case=_learning_rate_limits_case,
        public_params=[
            {"seed": 0, "samples": 50, "features": 3},
            {"seed": 1, "samples": 200, "features": 5},
        ],
        nudge="sections 3 and 4 give both rates in terms of curvatures: find this loss's "
        "curvatures, which the chapter never wrote down",
        praise="you found the loss's curvatures from its Hessian, constants and all, and turned "
        "the steepest and flattest into the two rates.",
        next_step="run gradient descent on such a problem at 0.99 and 1.01 times your limit "
        "and watch one settle and the other blow up.",
        kind="derive",
        minutes=10,
    ),
    Exercise(
        id="ch1.fix_descent",
        title="Fix a gradient-descent loop",
        function_name="descend",
        points=2,
        make_case=_fix_descent_case,
        public_params=[
            {"check": "shapes", "seed": 0},
            {"check": "units", "seed": 1, "samples": 50},
            {"check": "zeroing", "seed": 2},
            {"check": "path", "seed": 3},
            {"check": "outcome", "seed": 4, "samples": 100},
        ],
        nudge="run the loop for one, two and three steps on a tiny problem and print what "
        "every variable holds after each step",
        praise="you found all four: the broadcast shapes, a loss in the wrong units, "
        "gradients that pile up, and a path of aliases.",
        next_step="run torch.optim.SGD on the same data, rate and steps, and compare its "
        "weights with your path's last entry.",
        kind="debug",
        minutes=12,
    ),
    Exercise(
        id="ch1.fit_on_a_budget",
        title="Half an epoch of gradients",
        function_name="fit_on_a_budget",
        points=2,
        make_case=_fit_on_a_budget_case,
        public_params=[
            {"seed": 0, "order_seed": 0, "budget": 1000},
            {"seed": 1, "order_seed": 1, "budget": 1000},
            {"seed": 2, "order_seed": 2, "budget": 1000},
        ],
        nudge="section 6 compared full batches with small ones per pass over the data: "
        "what does that say when you have only half a pass?",
        praise="your choice of batch size and rate reached the target within half a pass, "
        "whatever the order of the batches.",
        next_step="halve the budget again and see which batch size and rate still reach the "
        "target.",
        kind="experiment",
        minutes=12,
    ),
]
