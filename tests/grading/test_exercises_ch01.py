"""Chapter 1 exercises: the solution passes everything, each planted bug and mistake is named.

The reference functions are the solution notebook's own cells, so these tests grade what the
notebook teaches; the debug exercise's bugs are put back one at a time from its broken code.
"""

import ast
import re
from pathlib import Path

import nbformat
import pytest
import torch

from course_lib.grading.batch import load_hidden_tests
from course_lib.grading.exercise_index import find_exercise
from course_lib.grading.exercises import ch01
from course_lib.grading.runner import Status, report, run_exercise
from course_lib.tools.assign import strip_solutions

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "solutions" / "01_gradient_descent.ipynb"


def _cells() -> list[str]:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    return [cell.source for cell in notebook.cells if cell.cell_type == "code"]


def _solution(source: str) -> str:
    """A solution cell as the solution notebook runs it: markers and the broken part dropped."""
    lines, skipping = [], False
    for line in source.splitlines():
        marker = line.strip()
        if marker == "# EXERCISE":
            skipping = True
        elif marker == "# END SOLUTION":
            skipping = False
        elif marker != "# BEGIN SOLUTION" and not skipping:
            lines.append(line)
    return "\n".join(lines)


def _define(source: str, name: str):
    namespace = {"torch": torch, "nn": torch.nn}
    exec(compile(source, f"<{name}>", "exec"), namespace)
    return namespace[name]


def _cell_defining(name: str) -> str:
    return next(source for source in _cells() if source.startswith(f"def {name}("))


def solution(name: str):
    return _define(_solution(_cell_defining(name)), name)


def _hidden() -> dict:
    return load_hidden_tests()


def _statuses(exercise_id, function) -> dict[str, Status]:
    exercise = find_exercise(exercise_id)
    result = run_exercise(exercise, function, exercise.public_cases())
    return {case.description.split(":")[0]: case.status for case in result.cases}


@pytest.mark.parametrize("exercise", ch01.EXERCISES, ids=lambda e: e.id)
def test_the_solution_passes_every_public_and_hidden_case(exercise, grade_as_the_grader):
    hidden = _hidden().get(exercise.id, [])
    assert hidden, f"no hidden cases for {exercise.id}"
    cases = exercise.public_cases() + [exercise.make_case(params) for params in hidden]
    result = grade_as_the_grader(exercise, cases, solution(exercise.function_name))
    assert result.status == Status.PASSED, report(result, exercise)


def test_every_exercise_says_its_kind_time_and_what_comes_next():
    kinds = {exercise.kind for exercise in ch01.EXERCISES}
    assert {"derive", "debug", "experiment"} <= kinds
    for exercise in ch01.EXERCISES:
        assert exercise.minutes > 0 and exercise.nudge and exercise.praise and exercise.next_step
    intro = nbformat.read(NOTEBOOK, as_version=4).cells[0].source
    total = sum(exercise.minutes for exercise in ch01.EXERCISES)
    assert f"**Time:** about {total} minutes" in intro


def _string_constants(module) -> list[str]:
    tree = ast.parse(Path(module.__file__).read_text(encoding="utf-8"))
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    ]


def test_no_feedback_contains_a_line_of_the_solution():
    lines = {
        line.strip()
        for source in _cells()
        for line in _solution(source).splitlines()
        if len(line.strip()) > 12 and not line.strip().startswith(("#", '"""', "def "))
    }
    texts = _string_constants(ch01)
    leaks = [(line, text) for line in lines for text in texts if line in text]
    assert not leaks


# --- ch1.gd_step ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "wrong, words",
    [
        (lambda w, g, lr: w + lr * g, "stepped *up* the gradient"),
        (lambda w, g, lr: w - g, "learning rate is missing"),
        (lambda w, g, lr: -lr * g, "returned the step itself"),
        (lambda w, g, lr: w, "w came back unchanged"),
        (lambda w, g, lr: w.sub_(lr * g), "do not use w -= ..."),
    ],
)
def test_gd_step_mistakes_are_named(feedback, wrong, words):
    assert words in feedback("ch1.gd_step", wrong)


def test_gd_step_shows_a_nudge_before_the_hint(feedback):
    first = feedback("ch1.gd_step", lambda w, g, lr: w + lr * g, attempt=1)
    assert "uphill or downhill?" in first and "stepped *up*" not in first


# --- ch1.learning_rate_limits (derive) -------------------------------------------------------------


@pytest.mark.parametrize(
    "mistake, words",
    [
        (ch01._limits_without_the_two, "twice too large"),
        (ch01._limits_of_the_sum, "N times too small"),
        (ch01._limits_from_the_diagonal, "the Hessian's eigenvectors"),
        (ch01._limits_swapped, "the two rates are swapped"),
        (ch01._limit_one_over_l, "starts to grow"),
    ],
)
def test_learning_rate_mistakes_are_named(feedback, mistake, words):
    text = feedback("ch1.learning_rate_limits", mistake)
    assert "2 of 2 cases failed" in text and words in text


def test_the_derived_limit_is_where_gradient_descent_really_starts_to_diverge():
    features = ch01._correlated_features(0, 50, 3)
    targets = features @ torch.ones(3, dtype=torch.float64)
    limit, best = solution("learning_rate_limits")(features)

    def distance_after(lr, steps=300):
        w = torch.zeros(3, dtype=torch.float64)
        for _ in range(steps):
            w = w - lr * ch01._mean_gradient(features, targets, w)
        return (w - 1).norm().item()

    assert distance_after(0.99 * limit) < distance_after(0) < distance_after(1.01 * limit)
    assert distance_after(best, 60) < min(
        distance_after(0.8 * best, 60), distance_after(1.2 * best, 60)
    )


def test_a_float32_answer_passes(feedback):
    def in_float32(features):
        return solution("learning_rate_limits")(features.float())

    assert "passed (2/2 cases)" in feedback("ch1.learning_rate_limits", in_float32)


# --- ch1.fix_descent (debug) ----------------------------------------------------------------------

FIXED = _solution(_cell_defining("descend"))
BUGS = {  # case -> (fixed line, its broken version in the exercise)
    "probe A": ("inputs.shape[1], dtype", "inputs.shape[1], 1, dtype"),  # the shapes
    "probe B": (").mean()", ").sum()"),  # the loss's units
    "probe C": ("        w.grad.zero_()\n", ""),  # the gradients
    "probe D": ("w.detach().clone()", "w"),  # the path
}


def test_the_broken_loop_has_each_bug_the_fixes_remove():
    broken = strip_solutions(_cell_defining("descend"))
    for fixed_line, broken_line in BUGS.values():
        assert fixed_line in FIXED
        assert broken_line in broken and (fixed_line not in broken or not broken_line)
    statuses = _statuses("ch1.fix_descent", _define(broken, "descend"))
    assert set(statuses.values()) == {Status.FAILED}


@pytest.mark.parametrize("bug", BUGS)
def test_each_bug_left_in_alone_fails_its_own_case_only(bug):
    fixed_line, broken_line = BUGS[bug]
    one_bug = _define(FIXED.replace(fixed_line, broken_line), "descend")
    statuses = _statuses("ch1.fix_descent", one_bug)
    assert statuses.pop(bug) == Status.FAILED
    statuses.pop("the outcome")  # a bug may or may not spoil the outcome
    assert set(statuses.values()) == {Status.PASSED}


@pytest.mark.parametrize(
    "bug, words",
    [
        ("probe A", "broadcast to an (N, N) table"),
        ("probe B", "adds the squared errors up instead of averaging"),
        ("probe C", "backward() adds to the .grad already there"),
        ("probe D", "stores the weight tensor itself"),
    ],
)
def test_each_bug_is_named(feedback, bug, words):
    fixed_line, broken_line = BUGS[bug]
    one_bug = _define(FIXED.replace(fixed_line, broken_line), "descend")
    assert words in feedback("ch1.fix_descent", one_bug, attempt=3)


def test_the_first_check_names_no_bug_kind(feedback):
    broken = _define(strip_solutions(_cell_defining("descend")), "descend")
    text = feedback("ch1.fix_descent", broken, attempt=1).lower()
    for kind in ("shape", "units", "the gradients", "the path", "broadcast", "zero"):
        assert kind not in text, kind


def test_a_step_never_applied_is_told_the_weights_did_not_move(feedback):
    frozen = _define(FIXED.replace("w -= lr * w.grad", "w - lr * w.grad"), "descend")
    text = feedback("ch1.fix_descent", frozen, attempt=3)
    assert "the weights did not move" in text and not re.search(r"got: +weights of shape", text)


def test_a_step_uphill_with_the_right_shape_is_not_blamed_on_the_shape(feedback):
    uphill = _define(FIXED.replace("w -= lr * w.grad", "w += lr * w.grad"), "descend")
    text = feedback("ch1.fix_descent", uphill, attempt=3)
    assert "does not point straight down" in text and "the weights are a column" not in text


# --- ch1.fit_on_a_budget (experiment) --------------------------------------------------------------


def _sgd(batch_size, lr, calls=None):
    def fit(gradient, features, budget):
        w = torch.zeros(features, dtype=torch.float64)
        for _ in range(calls if calls is not None else budget // batch_size):
            w = w - lr * gradient(w, batch_size)
        return w

    return fit


@pytest.mark.parametrize(
    "fit, words",
    [
        (_sgd(1000, 0.3), "far from the optimum"),  # the plain baseline: full batches
        (_sgd(16, 3.0), "the run diverged"),
        (_sgd(32, 0.3), "keeps your weights hovering"),
        (_sgd(16, 0.05, calls=10), "more steps were on offer"),
        (_sgd(100, 0.2, calls=11), "over budget"),
    ],
)
def test_budget_runs_that_miss_are_told_why(feedback, fit, words):
    text = feedback("ch1.fit_on_a_budget", fit)
    assert "3 of 3 cases failed" in text and words in text


def test_the_budget_is_counted_by_the_grader_not_the_learner():
    report_ = ch01.probe_budgeted_fit(_sgd(40, 0.1, calls=7), *_budget_inputs())
    assert report_["examples"] == [280] * ch01.ORDERS


def _closure_reader(gradient, features, budget):
    """Reads the rows out of gradient's closure and fits them exactly: no gradient spent."""
    cells = dict(zip(gradient.__code__.co_freevars, gradient.__closure__, strict=True))
    inputs, targets = cells["inputs"].cell_contents, cells["targets"].cell_contents
    return torch.linalg.lstsq(inputs, targets.unsqueeze(1)).solution.squeeze(1)


def test_a_fit_that_asks_for_no_gradient_fails(feedback):
    assert "asked for no gradient" in feedback("ch1.fit_on_a_budget", _closure_reader)


def test_the_gradient_holds_no_more_rows_than_the_budget_pays_for():
    gradient, _ = ch01._budgeted_gradient(*_budget_inputs())
    cells = dict(zip(gradient.__code__.co_freevars, gradient.__closure__, strict=True))
    assert len(cells["inputs"].cell_contents) == 1000


@pytest.mark.parametrize("fit", [_sgd(50, 0.1), _sgd(16, 0.05)], ids=["50-0.1", "16-0.05"])
def test_a_tuned_constant_rate_passes_public_and_hidden_problems(fit):
    exercise = find_exercise("ch1.fit_on_a_budget")
    cases = exercise.public_cases() + [
        exercise.make_case(params) for params in _hidden()["ch1.fit_on_a_budget"]
    ]
    result = run_exercise(exercise, fit, cases)
    assert {case.status for case in result.cases} == {Status.PASSED}


def _budget_inputs():
    (inputs, targets), _ = ch01._budget_problem(0)
    return inputs, targets, 1000, 0


def test_the_solution_beats_the_target_with_room():
    hidden = _hidden()["ch1.fit_on_a_budget"]
    fit = solution("fit_on_a_budget")
    public = find_exercise("ch1.fit_on_a_budget").public_params
    for params in [*public, *hidden]:
        (inputs, targets), (test_x, test_y) = ch01._budget_problem(params["seed"])
        runs = ch01.probe_budgeted_fit(fit, inputs, targets, 1000, params["order_seed"])
        best = torch.linalg.lstsq(inputs, targets.unsqueeze(1)).solution.squeeze(1)
        best_loss = ((test_x @ best - test_y) ** 2).mean()
        for weights in runs["weights"]:  # every batch order, not only the median
            ratio = ((test_x @ weights - test_y) ** 2).mean() / best_loss
            assert ratio < ch01.TARGET_RATIO - 0.04, params


def test_feedback_never_names_the_solutions_settings():
    text = " ".join(_string_constants(ch01))
    assert not re.search(r"batch(_size)? (of )?16|0\.2 to 0\.005", text)
