"""Chapter 2 exercises: the solution passes everything, each planted bug and mistake is named.

The reference functions are the solution notebook's own cells, so these tests grade what the
notebook teaches; the debug exercise's bugs are put back one at a time from its broken code.
"""

import ast
from pathlib import Path

import nbformat
import pytest
import torch

from course_lib.grading.batch import load_hidden_tests
from course_lib.grading.exercise_index import find_exercise
from course_lib.grading.exercises import ch02
from course_lib.grading.runner import Status, report, run_exercise
from course_lib.tools.assign import strip_solutions

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "solutions" / "02_optimizers.ipynb"


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


@pytest.mark.parametrize("exercise", ch02.EXERCISES, ids=lambda e: e.id)
def test_the_solution_passes_every_public_and_hidden_case(exercise, grade_as_the_grader):
    hidden = _hidden().get(exercise.id, [])
    assert hidden, f"no hidden cases for {exercise.id}"
    cases = exercise.public_cases() + [exercise.make_case(params) for params in hidden]
    result = grade_as_the_grader(exercise, cases, solution(exercise.function_name))
    assert result.status == Status.PASSED, report(result, exercise)


def test_every_exercise_says_its_kind_time_and_what_comes_next():
    kinds = {exercise.kind for exercise in ch02.EXERCISES}
    assert {"derive", "debug", "experiment"} <= kinds
    for exercise in ch02.EXERCISES:
        assert exercise.minutes > 0 and exercise.nudge and exercise.praise and exercise.next_step
    intro = nbformat.read(NOTEBOOK, as_version=4).cells[0].source
    total = sum(exercise.minutes for exercise in ch02.EXERCISES)
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
    texts = _string_constants(ch02)
    leaks = [(line, text) for line in lines for text in texts if line in text]
    assert not leaks


# --- ch2.momentum_step and ch2.adam_step ------------------------------------------------------------


def _momentum(dampen=False, old_velocity=False, along_gradient=False):
    def momentum_step(w, grad, velocity, lr, beta):
        new = beta * velocity + ((1 - beta) * grad if dampen else grad)
        step = grad if along_gradient else new
        return w - lr * step, velocity if old_velocity else new

    return momentum_step


@pytest.mark.parametrize(
    "wrong, words",
    [
        (_momentum(dampen=True), "heavy-ball momentum adds the full gradient"),
        (_momentum(old_velocity=True), "the velocity you returned is the old one"),
        (_momentum(along_gradient=True), "not along the new velocity"),
        (
            lambda w, grad, velocity, lr, beta: (
                w + (beta * velocity - lr * grad),
                beta * velocity - lr * grad,
            ),
            "your velocity holds steps",
        ),
    ],
)
def test_momentum_mistakes_are_named(feedback, wrong, words):
    assert words in feedback("ch2.momentum_step", wrong)


def test_a_momentum_step_off_elsewhere_is_told_which_output_differs(feedback):
    def halved_velocity(w, grad, velocity, lr, beta):
        new_w, new_velocity = solution("momentum_step")(w, grad, velocity, lr, beta)
        return new_w, new_velocity / 2

    text = feedback("ch2.momentum_step", halved_velocity)
    assert "the new velocity is off, the new w is right" in text


def _adam_in_place(w, grad, m, v, t, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8):
    m.mul_(beta1).add_(grad, alpha=1 - beta1)
    v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    m_hat, v_hat = m / (1 - beta1**t), v / (1 - beta2**t)
    return w - lr * m_hat / (v_hat.sqrt() + eps), m, v


def test_adam_in_place_gets_its_own_nudge_then_hint(feedback):
    first = feedback("ch2.adam_step", _adam_in_place, attempt=1)
    assert "the caller still holds the tensors you were given" in first
    assert "zero" not in first.split("failed", 1)[1]  # not the bias-correction nudge
    assert "the caller keeps the old w, m and v" in feedback("ch2.adam_step", _adam_in_place)


def _adam(correct_m=True, correct_v=True, shift=0):
    reference = solution("adam_step")

    def adam_step(w, grad, m, v, t, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8):
        new_w, new_m, new_v = reference(w, grad, m, v, t + shift, lr, beta1, beta2, eps)
        m_hat = new_m / (1 - beta1 ** (t + shift)) if correct_m else new_m
        v_hat = new_v / (1 - beta2 ** (t + shift)) if correct_v else new_v
        return w - lr * m_hat / (v_hat.sqrt() + eps), new_m, new_v

    return adam_step


@pytest.mark.parametrize(
    "wrong, words",
    [
        (_adam(correct_m=False), "bias correction missing for m: your first step is 10x too small"),
        (_adam(correct_v=False), "bias correction missing for v"),
        (_adam(correct_m=False, correct_v=False), "bias correction missing for both"),
        (_adam(shift=1), "off by one in t"),
    ],
)
def test_adam_mistakes_are_named(feedback, wrong, words):
    text = feedback("ch2.adam_step", wrong)
    assert "2 of 2 cases failed" in text and words in text


def test_adam_reference_agrees_with_torch():
    w, grad = torch.randn(5), torch.randn(5)
    param = w.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([param], lr=0.01)
    param.grad = grad.clone()
    optimizer.step()
    mine = solution("adam_step")(w, grad, torch.zeros(5), torch.zeros(5), 1, lr=0.01)[0]
    assert torch.allclose(mine, param.detach(), atol=1e-7)


# --- ch2.nesterov_step (derive) ---------------------------------------------------------------------


def _nesterov(point, shifted=False):
    def nesterov_step(w, velocity, gradient_at, lr, beta):
        gradient = gradient_at(point(w, velocity, lr, beta))
        new = beta * velocity - lr * gradient
        return (w - lr * gradient + beta * new if shifted else w + new), new

    return nesterov_step


@pytest.mark.parametrize(
    "wrong, words",
    [
        (_nesterov(lambda w, v, lr, beta: w), "that is heavy-ball momentum"),
        (_nesterov(lambda w, v, lr, beta: w - beta * v), "goes the wrong way"),
        (_nesterov(lambda w, v, lr, beta: w + v), "first decayed by beta"),
        (_nesterov(lambda w, v, lr, beta: w - lr * beta * v), "that is section 1's look-ahead"),
        (_nesterov(lambda w, v, lr, beta: w + lr * beta * v), "lr is already inside it"),
        (_nesterov(lambda w, v, lr, beta: w + beta * v, shifted=True), "shifted form"),
    ],
)
def test_nesterov_mistakes_are_named(feedback, wrong, words):
    text = feedback("ch2.nesterov_step", wrong)
    assert "2 of 2 cases failed" in text and words in text


def test_nesterov_counts_the_gradients_asked_for(feedback):
    def twice(w, velocity, gradient_at, lr, beta):
        gradient_at(w)
        return solution("nesterov_step")(w, velocity, gradient_at, lr, beta)

    assert "2 calls" in feedback("ch2.nesterov_step", twice)


def test_nesterov_in_place_is_caught_as_in_momentum_step(feedback):
    def in_place(w, velocity, gradient_at, lr, beta):
        velocity.mul_(beta).sub_(lr * gradient_at(w + beta * velocity))
        w.add_(velocity)
        return w, velocity

    assert "changed in place" in feedback("ch2.nesterov_step", in_place)


def test_the_look_ahead_form_follows_torchs_nesterov_one_look_ahead_apart():
    curvature = torch.diag(torch.tensor([1.0, 10.0], dtype=torch.float64))
    step = solution("nesterov_step")
    lr, beta = 0.05, 0.8
    w, velocity = torch.tensor([1.0, 1.0], dtype=torch.float64), torch.zeros(2, dtype=torch.float64)
    shifted = w.clone().requires_grad_(True)
    optimizer = torch.optim.SGD([shifted], lr=lr, momentum=beta, nesterov=True)
    for _ in range(20):
        w, velocity = step(w, velocity, lambda point: curvature @ point, lr, beta)
        optimizer.zero_grad()
        (0.5 * shifted @ curvature @ shifted).backward()
        optimizer.step()
    assert torch.allclose(w + beta * velocity, shifted.detach(), atol=1e-10)


# --- ch2.fix_adamw (debug) --------------------------------------------------------------------------

FIXED = _solution(_cell_defining("adamw"))
BUGS = {  # case -> [(fixed text, its broken version in the exercise)]
    "probe B": [  # the moments
        ("    m, v = torch.zeros_like(w0), torch.zeros_like(w0)\n", ""),
        (
            "for t in range(1, steps + 1):\n",
            "for t in range(1, steps + 1):\n"
            "        m, v = torch.zeros_like(w0), torch.zeros_like(w0)\n",
        ),
    ],
    "probe A": [  # the decay
        (
            "            w.mul_(1 - lr * weight_decay)  # decoupled: apart from the adaptive step\n",
            "",
        ),
        ("(1 - beta1) * w.grad", "(1 - beta1) * (w.grad + weight_decay * w)"),
        ("(1 - beta2) * w.grad**2", "(1 - beta2) * (w.grad + weight_decay * w) ** 2"),
    ],
    "probe C": [("v_hat.sqrt()", "v_hat")],  # the units
    "probe D": [("        w.grad = None\n", "")],  # the gradients
}


def _with_bug(bug: str) -> str:
    source = FIXED
    for fixed, broken in BUGS[bug]:
        assert fixed in source, fixed
        source = source.replace(fixed, broken)
    return source


def test_the_broken_adamw_fails_every_bug_case():
    broken = _define(strip_solutions(_cell_defining("adamw")), "adamw")
    assert set(_statuses("ch2.fix_adamw", broken).values()) == {Status.FAILED}


@pytest.mark.parametrize("bug", BUGS)
def test_each_adamw_bug_left_in_alone_fails_its_own_case_only(bug):
    statuses = _statuses("ch2.fix_adamw", _define(_with_bug(bug), "adamw"))
    assert statuses.pop(bug) == Status.FAILED
    assert statuses.pop("the outcome") == Status.FAILED  # each of these bugs shows on a real loss
    assert set(statuses.values()) == {Status.PASSED}


@pytest.mark.parametrize(
    "bug, words",
    [
        ("probe B", "m and v start again from zero at every step"),
        ("probe A", "That is Adam with L2, not AdamW"),
        ("probe C", "you divide by v-hat, which has the units of a gradient squared"),
        ("probe D", "backward() adds to the .grad already there"),
    ],
)
def test_each_adamw_bug_is_named(feedback, bug, words):
    assert words in feedback("ch2.fix_adamw", _define(_with_bug(bug), "adamw"), attempt=3)


def test_the_first_check_names_no_bug_kind(feedback):
    broken = _define(strip_solutions(_cell_defining("adamw")), "adamw")
    text = feedback("ch2.fix_adamw", broken, attempt=1).lower()
    for kind in ("moment", "decay", "units", "sqrt", "root", "pile", "l2"):
        assert kind not in text, kind


def _torch_adamw(loss_fn, w0, steps, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
    w = w0.clone().requires_grad_(True)
    optimizer = torch.optim.AdamW([w], lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
    path = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss_fn(w).backward()
        optimizer.step()
        path.append(w.detach().clone())
    return path


def _course_lib_adamw(loss_fn, w0, steps, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
    from course_lib.optim import AdamW

    w = w0.clone().requires_grad_(True)
    optimizer = AdamW([w], lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
    path = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss_fn(w).backward()
        optimizer.step()
        path.append(w.detach().clone())
    return path


@pytest.mark.parametrize("wrapper", [_torch_adamw, _course_lib_adamw])
def test_wrapping_a_ready_made_adamw_fails_and_the_optimizers_come_back(wrapper):
    statuses = _statuses("ch2.fix_adamw", wrapper)
    assert set(statuses.values()) == {Status.ERROR}
    assert len(_torch_adamw(lambda w: (w**2).sum(), torch.ones(2), 2)) == 2  # restored


def test_decay_without_the_learning_rate_is_named(feedback):
    source = FIXED.replace("w.mul_(1 - lr * weight_decay)", "w.mul_(1 - weight_decay)")
    text = feedback("ch2.fix_adamw", _define(source, "adamw"), attempt=3)
    assert "shrinks by lr times weight_decay" in text


def test_decay_after_the_step_is_named(feedback):
    decay = "            w.mul_(1 - lr * weight_decay)  # decoupled: apart from the adaptive step\n"
    step = "            w -= lr * m_hat / (v_hat.sqrt() + eps)\n"
    source = FIXED.replace(decay + step, step + decay)
    assert source != FIXED
    text = feedback("ch2.fix_adamw", _define(source, "adamw"), attempt=2)
    assert "in which order do the shrinking and Adam's step come?" in text
    assert "shrinks the weights first" in feedback("ch2.fix_adamw", _define(source, "adamw"), 3)


# --- ch2.train_on_a_budget (experiment) ------------------------------------------------------------


def _plain(optimizer_class, lr, batch_size=32, repeat=1):
    def train_on_a_budget(model, inputs, targets, budget):
        optimizer = optimizer_class(model.parameters(), lr=lr)
        for _ in range(repeat):
            for rows in torch.arange(len(targets)).split(batch_size):
                loss = torch.nn.functional.cross_entropy(model(inputs[rows]), targets[rows])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()

    return train_on_a_budget


@pytest.mark.parametrize(
    "train, words",
    [
        (_plain(torch.optim.Adam, 1e-3, repeat=2), "tune it on a log scale"),  # the baseline
        (_plain(torch.optim.SGD, 0.1, repeat=2), "tune it on a log scale"),
        (_plain(torch.optim.Adam, 0.02, repeat=4), "over budget"),
        (_plain(torch.optim.Adam, 0.02, batch_size=64, repeat=1), "more training was on offer"),
        (lambda model, inputs, targets, budget: None, "the network was not trained"),
    ],
)
def test_budget_runs_that_miss_are_told_why(feedback, train, words):
    text = feedback("ch2.train_on_a_budget", train)
    assert "1 of 1 cases failed" in text and words in text


def test_examples_under_no_grad_are_free_and_counted_otherwise():
    def train(model, inputs, targets, budget):
        with torch.no_grad():
            model(inputs)
        model(inputs[:50])

    assert ch02.probe_digits(train, 0, 0, 3200)["examples"] == 50


def test_examples_through_model_forward_are_counted_too():
    def train(model, inputs, targets, budget):
        model.forward(inputs[:70])
        model[0](inputs[:30])

    assert ch02.probe_digits(train, 0, 0, 3200)["examples"] == 100


def test_a_run_the_count_cannot_see_fails_whatever_its_accuracy():
    exercise = find_exercise("ch2.train_on_a_budget")
    case = exercise.public_cases()[0]
    labels = ch02._digits(0)[3]
    verdict = case.judge({"predictions": labels.clone(), "examples": 0})
    assert not verdict.passed and "the network was not trained" in verdict.hint


def test_the_solution_beats_the_target_with_room():
    train = solution("train_on_a_budget")
    for params in [{"split_seed": 0, "model_seed": 0}, *_hidden()["ch2.train_on_a_budget"]]:
        report_ = ch02.probe_digits(train, params["split_seed"], params["model_seed"], 3200)
        labels = ch02._digits(params["split_seed"])[3]
        accuracy = (report_["predictions"] == labels).double().mean().item()
        assert accuracy > ch02.TARGET_ACCURACY + 0.02 and report_["examples"] <= 3200, params
