"""Chapter 3 exercises: the reference passes every case, each likely mistake is named.

The reference solutions mirror solutions/03_training_a_network.ipynb. The debug exercise's
loop is built with any subset of its five planted bugs, so each bug can be left in alone.
"""

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from course_lib.data import Split
from course_lib.grading.batch import load_hidden_tests
from course_lib.grading.exercise_index import find_exercise
from course_lib.grading.exercises import ch03
from course_lib.grading.runner import Status, run_exercise

# the chapter's hidden cases: the instructor's file while it is kept apart, else the package's
HIDDEN = None  # the package's hidden cases, or COURSE_HIDDEN_TESTS
BUGS = ("softmax", "head", "zero_grad", "units", "eval")
BUG_CASES = {  # each planted bug, and the description of the case that must catch it
    "softmax": ch03.LOOP_DESCRIPTIONS["logits"],
    "head": ch03.LOOP_DESCRIPTIONS["head"],
    "zero_grad": ch03.LOOP_DESCRIPTIONS["fresh gradients"],
    "units": ch03.LOOP_DESCRIPTIONS["epoch loss"],
    "eval": ch03.LOOP_DESCRIPTIONS["eval mode"],
}


# --- reference solutions -----------------------------------------------------------------------------


def build_classifier(inputs, hidden, classes):
    return nn.Sequential(nn.Linear(inputs, hidden), nn.ReLU(), nn.Linear(hidden, classes))


def accuracy(logits, targets):
    return (logits.argmax(dim=1) == targets).float().mean().item()


def train_one_epoch(model, inputs, targets, optimizer, loss_fn, batch_size):
    total = 0.0
    for start in range(0, len(inputs), batch_size):
        x, y = inputs[start : start + batch_size], targets[start : start + batch_size]
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        total += loss.item() * len(x)
    return total / len(inputs)


def images_needed(accuracy, gap):
    return math.ceil(2 * accuracy * (1 - accuracy) * (2 / gap) ** 2)


def loop_with(*bugs):
    """The debug exercise's loop, fixed, with the named planted bugs put back."""

    def train_classifier(backbone, head, train, val, loss_fn, *, epochs, lr, batch_size):
        model = nn.Sequential(backbone, head, *([nn.Softmax(dim=1)] if "softmax" in bugs else []))
        trained = backbone if "head" in bugs else model
        optimizer = torch.optim.Adam(trained.parameters(), lr=lr)
        train_loss = []
        for _ in range(epochs):
            model.train()
            total = 0.0
            for start in range(0, len(train), batch_size):
                x = train.inputs[start : start + batch_size]
                y = train.targets[start : start + batch_size]
                if "zero_grad" not in bugs:
                    optimizer.zero_grad()
                loss = loss_fn(model(x), y)
                loss.backward()
                optimizer.step()
                total += loss.item() if "units" in bugs else loss.item() * len(x)
            train_loss.append(total / len(train))
        if "eval" not in bugs:
            model.eval()
        with torch.no_grad():
            predictions = model(val.inputs).argmax(dim=1)
        correct = (predictions == val.targets).float().mean().item()
        return {"train_loss": train_loss, "val_accuracy": correct}

    return train_classifier


def _steps(model, optimizer, train, order, steps):
    model.train()
    done = 0
    while done < steps:
        for batch in torch.randperm(len(train), generator=order).split(64)[: steps - done]:
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(train.inputs[batch]), train.targets[batch])
            loss.backward()
            optimizer.step()
            done += 1


class Standardize(nn.Module):
    def __init__(self, mean, std):
        super().__init__()
        self.mean, self.std = mean, std

    def forward(self, x):
        return (x - self.mean) / self.std


def train_within_budget(train, val, max_steps, rates=(3e-3, 1e-2, 3e-2, 1e-1)):
    """Inputs standardized on train; short trials of four rates from one start, judged on val;
    the best one gets the rest of the budget."""
    standardize = Standardize(train.inputs.mean(dim=0), train.inputs.std(dim=0) + 1e-6)
    train = Split(standardize(train.inputs), train.targets)
    val = Split(standardize(val.inputs), val.targets)
    trials, trial = [], max_steps // (2 * len(rates))
    for lr in rates:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
        optimizer, order = torch.optim.Adam(model.parameters(), lr=lr), torch.Generator()
        order.manual_seed(0)
        _steps(model, optimizer, train, order, trial)
        model.eval()
        with torch.no_grad():
            score = (model(val.inputs).argmax(dim=1) == val.targets).float().mean().item()
        trials.append((score, model, optimizer, order))
    _, model, optimizer, order = max(trials, key=lambda t: t[0])
    _steps(model, optimizer, train, order, max_steps - trial * len(rates))
    return nn.Sequential(standardize, model)


REFERENCE = {
    "ch3.build_classifier": build_classifier,
    "ch3.accuracy": accuracy,
    "ch3.train_one_epoch": train_one_epoch,
    "ch3.images_needed": images_needed,
    "ch3.train_classifier": loop_with(),
    "ch3.train_within_budget": train_within_budget,
}


def _result(exercise_id, function, hidden=False):
    exercise = find_exercise(exercise_id)
    params = load_hidden_tests(HIDDEN)[exercise_id] if hidden else exercise.public_params
    return run_exercise(exercise, function, [exercise.make_case(p) for p in params])


def _failed(result) -> set[str]:
    return {case.description for case in result.cases if case.status != Status.PASSED}


# --- the reference passes, public and hidden ---------------------------------------------------------


@pytest.mark.parametrize("exercise_id", list(REFERENCE))
@pytest.mark.parametrize("hidden", [False, True], ids=["public", "hidden"])
def test_the_reference_passes_every_case(exercise_id, hidden):
    result = _result(exercise_id, REFERENCE[exercise_id], hidden)
    assert result.status == Status.PASSED, [(c.description, c.got, c.hint) for c in result.cases]


def test_the_hidden_file_covers_every_exercise_with_other_params():
    hidden = load_hidden_tests(HIDDEN)
    for exercise in ch03.EXERCISES:
        assert hidden[exercise.id], exercise.id
        assert not set(map(json.dumps, hidden[exercise.id])) & set(
            map(json.dumps, exercise.public_params)
        )


def test_one_run_of_the_loop_serves_exactly_its_cases():
    for seed in (0, 1):
        assert len(ch03._loop_params(seed)) == ch03.LOOP_CHECKS
    _result("ch3.train_classifier", loop_with())
    assert not ch03._loop_runs  # every run's record was used up by its own check


def test_every_exercise_says_what_it_takes():
    for exercise in ch03.EXERCISES:
        assert exercise.nudge and exercise.praise and exercise.next_step and exercise.minutes
    kinds = {exercise.kind for exercise in ch03.EXERCISES}
    assert {"derive", "debug", "experiment"} <= kinds


# --- the building blocks: the mistakes named before the port, and new ones -----------------------------


def test_softmax_left_in_the_classifier_is_named(feedback):
    def with_softmax(inputs, hidden, classes):
        return nn.Sequential(build_classifier(inputs, hidden, classes), nn.Softmax(dim=1))

    assert "remove the softmax" in feedback("ch3.build_classifier", with_softmax)


def test_classifier_without_activation_is_named(feedback):
    def linear(inputs, hidden, classes):
        return nn.Sequential(nn.Linear(inputs, hidden), nn.Linear(hidden, classes))

    assert "add a non-linearity between them" in feedback("ch3.build_classifier", linear)


def test_classifier_of_the_wrong_size_and_kind_is_named(feedback):
    def two_hidden(inputs, hidden, classes):
        return nn.Sequential(
            nn.Linear(inputs, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, classes),
        )

    assert "one hidden layer of 32 units" in feedback("ch3.build_classifier", two_hidden)
    assert "one output per class" in feedback(
        "ch3.build_classifier", lambda i, h, c: build_classifier(i, h, h)
    )
    assert "return the model itself" in feedback("ch3.build_classifier", lambda i, h, c: "model")


def test_accuracy_mistakes_are_named(feedback):
    text = feedback(
        "ch3.accuracy", lambda logits, targets: (logits.argmax(1) == targets).sum().item()
    )
    assert "divide by the number of examples" in text
    by_column = feedback(
        "ch3.accuracy", lambda logits, targets: (logits.argmax(0) == targets).float().mean().item()
    )
    assert "along its row" in by_column


def test_forgotten_zero_grad_and_step_are_named(feedback):
    def no_zero_grad(model, inputs, targets, optimizer, loss_fn, batch_size):
        total = 0.0
        for start in range(0, len(inputs), batch_size):
            loss = loss_fn(
                model(inputs[start : start + batch_size]), targets[start : start + batch_size]
            )
            loss.backward()
            optimizer.step()
            total += loss.item() * len(inputs[start : start + batch_size])
        return total / len(inputs)

    def no_step(model, inputs, targets, optimizer, loss_fn, batch_size):
        loss = loss_fn(model(inputs), targets)
        loss.backward()
        return loss.item()

    assert "the optimizer's zero_grad before each backward pass" in feedback(
        "ch3.train_one_epoch", no_zero_grad
    )
    assert "take the optimizer's step" in feedback("ch3.train_one_epoch", no_step)


def test_an_epoch_loss_averaged_over_batches_is_named(feedback):
    def mean_of_batches(model, inputs, targets, optimizer, loss_fn, batch_size):
        losses = []
        for start in range(0, len(inputs), batch_size):
            optimizer.zero_grad()
            loss = loss_fn(
                model(inputs[start : start + batch_size]), targets[start : start + batch_size]
            )
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        return sum(losses) / len(losses)

    assert "weight each batch's loss by its number" in feedback(
        "ch3.train_one_epoch", mean_of_batches
    )


# --- derive: images needed -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "wrong, words",
    [
        (lambda p, g: math.ceil(p * (1 - p) * (2 / g) ** 2), "their variances add"),
        (lambda p, g: math.ceil(2 * p * (1 - p) / g**2), "it must be two"),
        (lambda p, g: math.ceil(p * (1 - p) / g**2), "an eighth of the images"),
        (lambda p, g: 8 * p * (1 - p) / g**2, "a number of images is whole"),
        (lambda p, g: math.floor(8 * p * (1 - p) / g**2), "round up, not down"),
        (lambda p, g: round(8 * p * (1 - p) / g**2), "round up, not down"),
        (lambda p, g: math.ceil(math.sqrt(8 * p * (1 - p)) / g), "square root"),
    ],
)
def test_images_needed_mistakes_are_named(feedback, wrong, words):
    text = feedback("ch3.images_needed", wrong)
    assert "failed" in text and words in text


def test_images_needed_cases_are_not_at_a_whole_number():
    """A value close to a whole number would make rounding up ambiguous in floating point."""
    params = find_exercise("ch3.images_needed").public_params
    for p in [*params, *load_hidden_tests(HIDDEN)["ch3.images_needed"]]:
        exact = 8 * p["accuracy"] * (1 - p["accuracy"]) / p["gap"] ** 2
        assert 0.05 < exact % 1 < 0.95


# --- debug: each planted bug fails exactly its own case -----------------------------------------------


@pytest.mark.parametrize("hidden", [False, True], ids=["public", "hidden"])
@pytest.mark.parametrize("bug", BUGS)
def test_each_planted_bug_alone_fails_its_own_case(bug, hidden):
    failed = _failed(_result("ch3.train_classifier", loop_with(bug), hidden))
    assert failed - {_outcome(hidden)} == {BUG_CASES[bug]}


def _outcome(hidden: bool) -> str:
    exercise = find_exercise("ch3.train_classifier")
    params = load_hidden_tests(HIDDEN)[exercise.id] if hidden else exercise.public_params
    return exercise.make_case(params[-1]).description


@pytest.mark.parametrize("hidden", [False, True], ids=["public", "hidden"])
def test_the_outcome_fails_with_every_bug_and_with_the_one_that_stops_learning(hidden):
    every = _failed(_result("ch3.train_classifier", loop_with(*BUGS), hidden))
    assert every == {*BUG_CASES.values(), _outcome(hidden)}
    assert _outcome(hidden) in _failed(
        _result("ch3.train_classifier", loop_with("zero_grad"), hidden)
    )
    for harmless in ("units", "eval"):  # they misreport; the model itself is fine
        assert _outcome(hidden) not in _failed(
            _result("ch3.train_classifier", loop_with(harmless), hidden)
        )


@pytest.mark.parametrize(
    "bug, words",
    [
        ("softmax", "the model ends in a softmax"),
        ("head", "the optimizer updates only the parameters it was given"),
        ("zero_grad", "once per batch, before backward"),
        ("units", "about batch_size times too small"),
        ("eval", "dropout was still on while measuring"),
    ],
)
def test_each_planted_bug_is_named(feedback, bug, words):
    assert words in feedback("ch3.train_classifier", loop_with(bug), attempt=3)


def test_another_correct_loop_passes_every_case():
    """Clearing gradients after the step, evaluating every epoch, a validation loss: all fine."""

    def train_classifier(backbone, head, train, val, loss_fn, *, epochs, lr, batch_size):
        parameters = [*backbone.parameters(), *head.parameters()]
        optimizer = torch.optim.Adam(parameters, lr=lr)
        train_loss, val_accuracy = [], 0.0
        for _ in range(epochs):
            backbone.train()
            losses = []
            for start in range(0, len(train), batch_size):
                x = train.inputs[start : start + batch_size]
                loss = loss_fn(head(backbone(x)), train.targets[start : start + batch_size])
                loss.backward()
                optimizer.step()
                optimizer.zero_grad()
                losses.append(loss.item() * len(x))
            train_loss.append(sum(losses) / len(train))
            backbone.eval()
            with torch.no_grad():
                scores = head(backbone(val.inputs))
                loss_fn(scores, val.targets)  # a validation loss, not training
                val_accuracy = (scores.argmax(dim=1) == val.targets).float().mean().item()
        return {"train_loss": train_loss, "val_accuracy": val_accuracy}

    result = _result("ch3.train_classifier", train_classifier)
    assert result.status == Status.PASSED, [(c.description, c.got) for c in result.cases]


def test_a_head_left_out_of_the_model_is_named(feedback):
    def headless(backbone, head, train, val, loss_fn, *, epochs, lr, batch_size):
        return loop_with()(
            backbone, nn.Identity(), train, val, loss_fn, epochs=1, lr=lr, batch_size=batch_size
        )

    assert "defined but never attached" in feedback("ch3.train_classifier", headless, attempt=3)


def test_the_loop_bugs_show_symptoms_first_then_nudges(feedback):
    first = feedback("ch3.train_classifier", loop_with(*BUGS), attempt=1)
    assert all(description in first for description in BUG_CASES.values())
    assert "section 1's training loop" in first
    for leak in ("probabilities", "logits", "zero_grad", "random ones", "training mode", "ln 10:"):
        assert leak not in first.split("section 1's")[0].replace(BUG_CASES["softmax"], ""), leak
    second = feedback("ch3.train_classifier", loop_with(*BUGS), attempt=2)
    assert "what does the loss function expect to receive" in second
    assert "the model ends in a softmax" not in second


# --- experiment: scrambled digits within a step budget ----------------------------------------------


def _fixed(lr, batch=64, hidden=64):
    """A recipe without a choice: one rate, whatever the data, every step in one run."""

    def recipe(train, val, max_steps):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        for step in range(max_steps):
            rows = torch.arange(step * batch, (step + 1) * batch) % len(train)
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(train.inputs[rows]), train.targets[rows])
            loss.backward()
            optimizer.step()
        return model

    return recipe


@pytest.mark.parametrize("hidden", [False, True], ids=["public", "hidden"])
@pytest.mark.parametrize(
    "recipe",
    [
        lambda train, val, max_steps: ch03.plain_recipe(train, max_steps),
        _fixed(1e-3),
        _fixed(3e-2),  # the chapter's best rate
    ],
    ids=["plain", "default rate", "chapter's rate"],
)
def test_fixed_recipes_fail_the_experiment(recipe, hidden):
    result = _result("ch3.train_within_budget", recipe, hidden)
    assert all(case.status == Status.FAILED for case in result.cases)
    assert all("neither Adam's default rate" in case.hint for case in result.cases)


def test_full_batch_steps_are_over_budget(feedback):
    assert "over budget" in feedback("ch3.train_within_budget", _fixed(1e-3, batch=1077))


@pytest.mark.parametrize("seed, key", [(1, 818373), (2, 753920), (4, 910061), (5, 874879)])
def test_the_reference_beats_the_fixed_recipes_on_other_scrambled_splits(seed, key):
    """Not only on the cases' splits: the margin is not an accident of the ones chosen."""
    case = find_exercise("ch3.train_within_budget").make_case(
        {"seed": seed, "key": key, "max_steps": 30, "scale": 30.0}
    )
    result = run_exercise(find_exercise("ch3.train_within_budget"), train_within_budget, [case])
    assert result.status == Status.PASSED, result.cases[0].expected + result.cases[0].got


def test_an_over_budget_run_fails(feedback):
    def greedy(train, val, max_steps):
        return train_within_budget(train, val, 2 * max_steps)

    text = feedback("ch3.train_within_budget", greedy)
    assert "over budget" in text and "rows in" in text


def test_training_without_a_counted_backward_pass_fails(feedback):
    def untrained(train, val, max_steps):
        return nn.Linear(64, 10)

    assert "no backward pass" in feedback("ch3.train_within_budget", untrained)


def test_budget_dodges_are_counted(feedback):
    """Gradient evaluations inside LBFGS, updates by hand, and an untrained model all count."""

    def lbfgs(train, val, max_steps):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
        optimizer = torch.optim.LBFGS(model.parameters(), max_iter=200)
        rows = torch.arange(64)

        def closure():
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(train.inputs[rows]), train.targets[rows])
            loss.backward()
            return loss

        for _ in range(5):
            optimizer.step(closure)
        return model

    def by_hand(train, val, max_steps):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
        for step in range(4 * max_steps):
            rows = torch.arange(step * 64, (step + 1) * 64) % len(train)
            model.zero_grad()
            nn.functional.cross_entropy(model(train.inputs[rows]), train.targets[rows]).backward()
            with torch.no_grad():
                for p in model.parameters():
                    p -= 0.01 * p.grad
        return model

    class Nearest(nn.Module):
        def __init__(self, train):
            super().__init__()
            self.train_rows, self.labels = train.inputs, train.targets
            self.dummy = nn.Linear(1, 1)

        def forward(self, x):
            return nn.functional.one_hot(
                self.labels[torch.cdist(x, self.train_rows).argmin(1)], 10
            ).float()

    def nearest(train, val, max_steps):
        model = Nearest(train)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        model.dummy(torch.ones(1, 1)).sum().backward()
        optimizer.step()
        return model

    assert "over budget" in feedback("ch3.train_within_budget", lbfgs)
    assert "over budget" in feedback("ch3.train_within_budget", by_hand)
    assert "no parameter of the model affects" in feedback("ch3.train_within_budget", nearest)


def test_scrambled_digits_hide_the_originals():
    """Pixels and classes of the graded digits are permuted, differently for each split seed."""
    from course_lib.data import digits_splits

    original, scrambled = digits_splits(seed=0)[0], ch03._scrambled_digits(0, 10_000, 1.0)[0]
    assert isinstance(scrambled, Split) and scrambled.inputs.shape == (len(original), 64)
    assert not torch.equal(scrambled.inputs, original.inputs.flatten(1))
    assert not torch.equal(scrambled.targets, original.targets)
    assert sorted(scrambled.inputs[0].tolist()) == sorted(original.inputs[0].flatten().tolist())
    assert not torch.equal(
        ch03._scrambled_digits(0, 1, 1.0)[2].targets[:50], scrambled.targets[:50]
    )


# --- the notebook: the broken loop it hands out, and hints that never give its code --------------------

NOTEBOOK = Path(__file__).parents[2] / "solutions" / "03_training_a_network.ipynb"


def _cell_defining(name: str) -> str:
    import nbformat

    cells = nbformat.read(NOTEBOOK, as_version=4).cells
    return next(c.source for c in cells if c.cell_type == "code" and f"def {name}(" in c.source)


def test_the_loop_handed_to_learners_fails_every_bug_case_and_the_outcome():
    from course_lib.tools.assign import strip_solutions

    namespace = {"torch": torch, "nn": nn, "Split": Split}
    exec(strip_solutions(_cell_defining("train_classifier")), namespace)
    failed = _failed(_result("ch3.train_classifier", namespace["train_classifier"]))
    assert failed == {*BUG_CASES.values(), _outcome(hidden=False)}


def test_no_hint_contains_a_line_of_a_solution():
    import ast
    import inspect

    import nbformat

    lines = set()
    for cell in nbformat.read(NOTEBOOK, as_version=4).cells:
        inside = False
        for line in cell.source.splitlines() if cell.cell_type == "code" else []:
            marker = line.strip()
            if marker in ("# BEGIN SOLUTION", "# EXERCISE", "# END SOLUTION"):
                inside = marker == "# BEGIN SOLUTION"
            elif inside and len(marker) > 6:
                lines.add(marker)
    tree = ast.parse(inspect.getsource(ch03))
    texts = [
        n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
    ]
    assert lines and texts
    assert not [(text, line) for text in texts for line in lines if line in text]


def test_data_changed_in_the_learners_kernel_fail_the_outcome_cases():
    """The probes build their digits next to the learner's code; the judges check them."""
    budget = find_exercise("ch3.train_within_budget").public_cases()[0]
    report = ch03.probe_budget(train_within_budget, 0, 10_000, 30, 30.0)
    assert budget.judge(report).passed
    report["data"][2][1] += 1.0  # the test digits' pixels
    assert "not the course's digits" in budget.judge(report).hint
    outcome = find_exercise("ch3.train_classifier").public_cases()[-1]
    record = dict(ch03._instrumented_run(loop_with(), 0, 15, 1e-2, 64))
    assert outcome.judge(record).passed
    record["data"] = [[len(split), 0.0, 0.0] for split in ch03._loop_data(0)]
    assert not outcome.judge(record).passed


# --- findings of the review: dodges and correct variants ------------------------------------------


def _loop_variant(
    *, clear="optimizer", trained="model", sanity=False, val_loss=False, tensors=False
):
    """The fixed loop with one change: what is cleared, what is trained, extra losses, 0-d sums."""

    def train_classifier(backbone, head, train, val, loss_fn, *, epochs, lr, batch_size):
        model = nn.Sequential(backbone, head)
        optimizer = torch.optim.Adam({"model": model, "head": head}[trained].parameters(), lr=lr)
        if sanity:  # the chapter's sanity check 1, before training, without no_grad
            loss_fn(model(train.inputs), train.targets)
        train_loss = []
        for _ in range(epochs):
            model.train()
            total = 0.0
            for start in range(0, len(train), batch_size):
                x = train.inputs[start : start + batch_size]
                y = train.targets[start : start + batch_size]
                {"optimizer": optimizer, "backbone": backbone}[clear].zero_grad()
                loss = loss_fn(model(x), y)
                loss.backward()
                optimizer.step()
                total += loss.detach() * len(x) if tensors else loss.item() * len(x)
            train_loss.append(total / len(train))
            model.eval()
            if val_loss:
                loss_fn(model(val.inputs), val.targets)
        model.eval()
        with torch.no_grad():
            predictions = model(val.inputs).argmax(dim=1)
        correct = (predictions == val.targets).float().mean().item()
        return {"train_loss": train_loss, "val_accuracy": correct}

    return train_classifier


@pytest.mark.parametrize(
    "variant", [{"sanity": True}, {"val_loss": True}, {"tensors": True}], ids=str
)
def test_correct_loops_with_extra_losses_or_tensor_sums_pass(variant):
    result = _result("ch3.train_classifier", _loop_variant(**variant))
    assert result.status == Status.PASSED, [(c.description, c.got) for c in result.cases]


def test_clearing_only_the_backbone_leaves_the_heads_gradients_piling_up():
    failed = _failed(_result("ch3.train_classifier", _loop_variant(clear="backbone")))
    assert BUG_CASES["zero_grad"] in failed


def test_an_optimizer_of_the_head_alone_is_named_as_such(feedback):
    variant = _loop_variant(trained="head")
    failed = _failed(_result("ch3.train_classifier", variant))
    assert BUG_CASES["head"] in failed and BUG_CASES["zero_grad"] not in failed
    assert "all of the model's parameters" in feedback("ch3.train_classifier", variant, attempt=3)


def test_epoch_loss_nudges_fit_the_mistake(feedback):
    text = feedback("ch3.train_classifier", loop_with("units"), attempt=2)
    assert "ln 10, the loss of a random guess" in text


def test_classifier_ending_in_relu_or_with_batch_norm(feedback):
    def final_relu(inputs, hidden, classes):
        return nn.Sequential(build_classifier(inputs, hidden, classes), nn.ReLU())

    def batch_norm(inputs, hidden, classes):
        return nn.Sequential(
            nn.Linear(inputs, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Linear(hidden, classes)
        )

    assert "clamps its scores at 0" in feedback("ch3.build_classifier", final_relu)
    assert "nothing else that learns" in feedback("ch3.build_classifier", batch_norm)  # no crash


@pytest.mark.parametrize(
    "wrong, words",
    [
        (lambda logits, targets: 100 * accuracy(logits, targets), "that is a percentage"),
        (lambda logits, targets: 1 - accuracy(logits, targets), "the error rate"),
        (lambda logits, targets: (logits.argmax(0) == targets).float().mean().item(), "its row"),
        (lambda logits, targets: 0.5, "share of examples where they agree"),
    ],
)
def test_more_accuracy_mistakes_are_named_in_every_case(wrong, words):
    result = _result("ch3.accuracy", wrong)
    assert all(words in case.hint for case in result.cases), [c.hint for c in result.cases]


def test_public_accuracy_cases_are_not_at_one_half():
    for params in find_exercise("ch3.accuracy").public_params:
        case = find_exercise("ch3.accuracy").make_case(params)
        assert not case.judge({"value": 0.5, "modified": []}).passed


def test_shuffled_batches_and_a_loss_measured_after_the_epoch_are_named(feedback):
    def shuffled(model, inputs, targets, optimizer, loss_fn, batch_size):
        order = torch.randperm(len(inputs))
        return train_one_epoch(model, inputs[order], targets[order], optimizer, loss_fn, batch_size)

    def measured_after(model, inputs, targets, optimizer, loss_fn, batch_size):
        train_one_epoch(model, inputs, targets, optimizer, loss_fn, batch_size)
        with torch.no_grad():
            return loss_fn(model(inputs), targets).item()

    assert "no shuffling" in feedback("ch3.train_one_epoch", shuffled)
    assert "measured again after the epoch" in feedback("ch3.train_one_epoch", measured_after)


@pytest.mark.parametrize(
    "wrong, words",
    [
        (lambda p, g: math.ceil(16 * p * (1 - p) / g**2), "the variances add"),
        (lambda p, g: math.ceil(2 * 1.96**2 * p * (1 - p) / g**2), "the factor is 2"),
        (lambda p, g: math.ceil(8 * p * (1 - p) / (100 * g) ** 2), "percentage points"),
        (lambda p, g: 7, "solve for n, and round up"),
    ],
)
def test_more_images_needed_mistakes_get_their_own_hint(feedback, wrong, words):
    assert words in feedback("ch3.images_needed", wrong)
