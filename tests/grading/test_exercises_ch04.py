"""Chapter 4 exercises: the solutions pass every case, each likely mistake and each bug is named.

The reference solutions are the solution notebook's own cells; the broken loop of the debug
exercise is the one the exercise notebook hands out (``course assign``'s EXERCISE lines).
Hidden cases come from COURSE_HIDDEN_TESTS or the package's hidden-case file.
"""

import copy
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from course_lib.grading.batch import load_hidden_tests
from course_lib.grading.exercise_index import find_exercise
from course_lib.grading.exercises import ch04
from course_lib.grading.runner import run_exercise
from course_lib.tools.assign import strip_solutions

NOTEBOOK = Path(__file__).parents[2] / "solutions" / "04_generalization.ipynb"
EXERCISE_IDS = [exercise.id for exercise in ch04.EXERCISES]


def _definitions(*, exercise_version: bool = False) -> dict:
    """The functions the solution notebook defines (or, stripped, the exercise notebook's)."""
    cells = json.loads(NOTEBOOK.read_text(encoding="utf-8"))["cells"]
    namespace: dict = {}
    for cell in cells:
        source = "".join(cell["source"])
        if cell["cell_type"] != "code" or "check(" in source or "google.colab" in source:
            continue
        if exercise_version:
            source = strip_solutions(source, where="test")
        exec(compile(source, str(NOTEBOOK), "exec"), namespace)
    return namespace


SOLUTION = _definitions()


def _results(exercise_id: str, function, params: list[dict]) -> list:
    exercise = find_exercise(exercise_id)
    cases = [exercise.make_case(p) for p in params]
    return run_exercise(exercise, function, cases).cases


def _hidden_params(exercise_id: str) -> list[dict]:
    params = load_hidden_tests().get(exercise_id, [])
    if not params:
        pytest.skip(f"no hidden cases for {exercise_id} here (set COURSE_HIDDEN_TESTS)")
    return params


# --- the solutions pass, public and hidden cases -----------------------------------------------------


@pytest.mark.parametrize("exercise_id", EXERCISE_IDS)
def test_the_solution_passes_every_public_case_and_praises(feedback, exercise_id):
    exercise = find_exercise(exercise_id)
    text = feedback(exercise_id, SOLUTION[exercise.function_name])
    assert f"passed ({len(exercise.public_params)}/{len(exercise.public_params)} cases)" in text
    assert exercise.praise in text and exercise.next_step in text


@pytest.mark.parametrize("exercise_id", EXERCISE_IDS)
def test_the_solution_passes_every_hidden_case(exercise_id):
    function = SOLUTION[find_exercise(exercise_id).function_name]
    results = _results(exercise_id, function, _hidden_params(exercise_id))
    assert [(r.description, r.status) for r in results if r.status != "passed"] == []


def test_every_exercise_has_its_kind_time_and_feedback():
    kinds = {exercise.kind for exercise in ch04.EXERCISES}
    assert {"derive", "debug", "experiment"} <= kinds
    for exercise in ch04.EXERCISES:
        assert exercise.nudge and exercise.praise and exercise.next_step and exercise.minutes
    text = "".join(json.loads(NOTEBOOK.read_text(encoding="utf-8"))["cells"][0]["source"])
    assert f"about {sum(e.minutes for e in ch04.EXERCISES)} minutes" in text


def test_no_feedback_string_is_a_line_of_the_solution():
    import ast

    tree = ast.parse(Path(ch04.__file__).read_text(encoding="utf-8"))
    strings = {
        node.value.strip()
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    }
    cells = json.loads(NOTEBOOK.read_text(encoding="utf-8"))["cells"]
    lines = {
        line.strip().removeprefix("# ").strip()
        for cell in cells
        if cell["cell_type"] == "code"
        for line in "".join(cell["source"]).splitlines()
        if len(line.strip()) > 12
    }
    assert not [s for s in strings if any(line in s for line in lines)]


# --- ch4.dropout -------------------------------------------------------------------------------------


def _published(x, p, training):
    return x * (torch.rand_like(x) >= p) if training else x * (1 - p)


@pytest.mark.parametrize(
    "wrong, words",
    [
        (
            lambda x, p, training: x * (torch.rand_like(x) >= p) if training else x,
            "evaluation gives x as it is",
        ),
        (
            lambda x, p, training: x * (torch.rand_like(x) >= p) if training else x / (1 - p),
            "inverted dropout's factor",
        ),
        (
            lambda x, p, training: x * (torch.rand_like(x) >= p) if training else x * p,
            "you scaled by p",
        ),
        (torch.nn.functional.dropout, "rescaled the survivors in training"),
        (
            lambda x, p, training: x * (torch.rand_like(x) < p) if training else x * (1 - p),
            "probability to DROP",
        ),
        (
            lambda x, p, training: x * (torch.rand(1) >= p) if training else x * (1 - p),
            "dropped on its own",
        ),
        (
            lambda x, p, training: (
                x.masked_fill_(torch.rand_like(x) < p, 0) if training else x * (1 - p)
            ),
            "modified in place",
        ),
        (  # the factor measured on this draw's mask instead of worked out from p
            lambda x, p, training: (
                x * (torch.rand_like(x) >= p)
                if training
                else x * (torch.rand_like(x) >= p).float().mean()
            ),
            "follows from p alone",
        ),
    ],
)
def test_dropout_mistakes_are_named(feedback, wrong, words):
    assert words in feedback("ch4.dropout", wrong)
    assert "passed (2/2 cases)" in feedback("ch4.dropout", _published)


def test_dropout_nudges_first_then_hints(feedback):
    def unscaled(x, p, training):
        return x * (torch.rand_like(x) >= p) if training else x

    first, second = feedback("ch4.dropout", unscaled, 1), feedback("ch4.dropout", unscaled, 2)
    assert "nudge:" in first and "average of one output entry" in first
    assert "as it is, but" not in first and "as it is, but" in second


def test_a_float64_dropout_is_named(feedback):
    text = feedback(
        "ch4.dropout",
        lambda x, p, training: (x.double() * (torch.rand_like(x) >= p)) if training else x,
    )
    assert "same shape and dtype as x" in text and "Traceback" not in text


# --- ch4.should_stop ---------------------------------------------------------------------------------


def test_should_stop_mistakes_are_named_with_the_epoch(feedback):
    def previous_epoch(val_losses, patience):
        recent = val_losses[-patience - 1 :]
        return len(recent) == patience + 1 and all(
            b >= a for a, b in zip(recent, recent[1:], strict=False)
        )

    def late(val_losses, patience):
        return len(val_losses) - 1 - val_losses.index(min(val_losses)) > patience

    def last_tie(val_losses, patience):
        best = max(i for i, x in enumerate(val_losses) if x == min(val_losses))
        return len(val_losses) - 1 - best >= patience

    text = feedback("ch4.should_stop", previous_epoch)
    assert "compare with the best loss so far" in text and "after epoch 6" in text
    assert "one epoch too late" in feedback("ch4.should_stop", late)
    assert "the FIRST one that reached the lowest" in feedback("ch4.should_stop", last_tie)


def test_should_stop_reference_agrees_with_the_early_stopping_callback():
    from types import SimpleNamespace

    from course_lib.train import EarlyStopping

    losses = [2.0, 1.5, 1.2, 1.25, 1.1, 1.15, 1.2, 1.1, 1.3, 1.4, 0.5, 0.5, 0.6, 0.7]
    stopper = EarlyStopping(patience=2, restore_best=False)
    history = SimpleNamespace(epochs=[], stop_reason="")
    decisions = []
    for epoch, loss in enumerate(losses, start=1):
        history.epochs.append({"val_loss": loss})
        decisions.append(
            stopper.on_epoch_end(SimpleNamespace(history=history, epoch=epoch, model=None))
        )
    assert decisions == [
        ch04._reference_should_stop(losses[:end], 2) for end in range(1, len(losses) + 1)
    ]
    # a tie is no improvement
    assert decisions.index(True) == 6 and decisions[11:] == [False, True, True]


def _stops_via_the_chapter(val_losses, patience):
    from course_lib.lessons.ch04_generalization import stopping_epoch

    return stopping_epoch(val_losses, patience) is not None


def _counter_loop(val_losses, patience):
    best, since = float("inf"), 0
    for loss in val_losses:
        if loss < best:
            best, since = loss, 0
        else:
            since += 1
        if since >= patience:
            return True
    return False


@pytest.mark.parametrize("visibility", ["public", "hidden"])
@pytest.mark.parametrize("rule", [_stops_via_the_chapter, _counter_loop])
def test_rules_that_answer_differently_after_the_stop_pass(rule, visibility):
    """A loop never asks again once told to stop: later answers are not graded."""
    exercise = find_exercise("ch4.should_stop")
    params = exercise.public_params if visibility == "public" else _hidden_params(exercise.id)
    results = _results(exercise.id, rule, params)
    assert [r.status for r in results] == ["passed"] * len(params)


def test_the_table_in_the_prompt_is_the_course_rule():
    import re

    from course_lib.lessons.ch04_generalization import stopping_epoch

    cells = json.loads(NOTEBOOK.read_text(encoding="utf-8"))["cells"]
    prompt = next("".join(c["source"]) for c in cells if "Exercise 4.2" in "".join(c["source"]))
    rows = re.findall(r"^\| ([0-9., ]+) \| (\d+) \| (\d+|never)", prompt, flags=re.M)
    assert len(rows) >= 3
    for losses, patience, stop in rows:
        values = [float(v) for v in losses.split(",")]
        expected = None if stop == "never" else int(stop)
        assert stopping_epoch(values, int(patience)) == expected


# --- ch4.cosine_lr -----------------------------------------------------------------------------------


def test_cosine_reference_agrees_with_torch():
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.05)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=25, eta_min=5e-4)
    for epoch in range(26):
        assert optimizer.param_groups[0]["lr"] == pytest.approx(
            ch04._reference_cosine(epoch, 25, 0.05, 5e-4), abs=1e-12
        )
        optimizer.step()
        scheduler.step()


@pytest.mark.parametrize(
    "rule, words",
    [
        (lambda e, t, hi, lo: hi * (1 + math.cos(math.pi * e / t)) / 2, "should end at lr_min"),
        (
            lambda e, t, hi, lo: lo + (hi - lo) * (1 + math.cos(180 * e / t)) / 2,
            "math.cos takes radians",
        ),
        (
            lambda e, t, hi, lo: lo + (hi - lo) * (1 + math.cos(2 * math.pi * e / t)) / 2,
            "half a cosine, not a whole one",
        ),
        (lambda e, t, hi, lo: lo + (hi - lo) * (1 + math.cos(math.pi * e / t)), "halved"),
        (lambda e, t, hi, lo: lo + (hi - lo) * (1 - math.cos(math.pi * e / t)) / 2, "climbs"),
        (
            lambda e, t, hi, lo: lo + (hi - lo) * (1 + math.cos(math.pi * e / (t - 1))) / 2,
            "one epoch early",
        ),
    ],
)
def test_cosine_mistakes_are_named(feedback, rule, words):
    def cosine_lr(epoch, total_epochs, lr_max, lr_min=0.0):
        return rule(epoch, total_epochs, lr_max, lr_min)

    assert words in feedback("ch4.cosine_lr", cosine_lr)


def test_a_float32_cosine_passes(feedback):
    def cosine_float32(epoch, total_epochs, lr_max, lr_min=0.0):
        angle = torch.tensor(torch.pi * epoch / total_epochs)
        return lr_min + (lr_max - lr_min) * (1 + torch.cos(angle).item()) / 2

    assert "passed (2/2 cases)" in feedback("ch4.cosine_lr", cosine_float32)


# --- ch4.train_early_stopped (debug) -----------------------------------------------------------------


def _loop(*, eval_mode=True, train_each_epoch=True, deep_copy=True, no_leak=True):
    """The fixed loop, with the planted bugs put back in as asked (False: the bug is in)."""

    def train_early_stopped(model, train, val, epochs=60, patience=8, lr=1e-3, seed=0):
        torch.manual_seed(seed)
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
        best_loss, best_epoch, best_weights = float("inf"), 0, None
        inputs, targets = train.inputs, train.targets
        if not no_leak:
            inputs = torch.cat([train.inputs, val.inputs])
            targets = torch.cat([train.targets, val.targets])
        if not train_each_epoch:
            model.train()
        for epoch in range(1, epochs + 1):
            if train_each_epoch:
                model.train()
            for batch in torch.randperm(len(inputs)).split(32):
                loss = F.cross_entropy(model(inputs[batch]), targets[batch])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            if eval_mode:
                model.eval()
            with torch.no_grad():
                val_loss = F.cross_entropy(model(val.inputs), val.targets).item()
            if val_loss < best_loss:
                best_loss, best_epoch = val_loss, epoch
                best_weights = (
                    copy.deepcopy(model.state_dict()) if deep_copy else model.state_dict()
                )
            elif epoch - best_epoch >= patience:
                break
        model.load_state_dict(best_weights)
        return model

    return train_early_stopped


BUGS = {  # the check that names the bug -> the loop with that bug alone, and the hint's words
    "eval mode": (_loop(eval_mode=False), "dropout still on"),
    "train mode": (_loop(train_each_epoch=False), "stayed in it after a validation"),
    "best weights": (_loop(deep_copy=False), "not a copy but a view"),
    "leakage": (_loop(no_leak=False), "the validation images are trained on"),
}
# the outcome (the model returned is the run's best on validation, measured in eval mode, and
# tests about as well as the fixed loop's) fails too when the loop chose (eval mode) or kept
# (best weights) the wrong epoch; with the other two bugs it depends on the draw
OUTCOME_FAILS = {"eval mode", "best weights"}


def _debug_params(visibility: str) -> list[dict]:
    exercise = find_exercise("ch4.train_early_stopped")
    if visibility == "public":
        return list(exercise.public_params)
    return _hidden_params(exercise.id)


def _failing_checks(function, params: list[dict]) -> set[str]:
    results = _results("ch4.train_early_stopped", function, params)
    return {p["check"] for p, r in zip(params, results, strict=True) if r.status != "passed"}


@pytest.mark.parametrize("visibility", ["public", "hidden"])
@pytest.mark.parametrize("bug", list(BUGS))
def test_each_planted_bug_alone_fails_its_own_case(bug, visibility):
    params = _debug_params(visibility)
    failing = _failing_checks(BUGS[bug][0], params)
    assert failing - {"outcome"} == {bug}
    if bug in OUTCOME_FAILS:
        assert "outcome" in failing


def test_each_planted_bug_is_named(feedback):
    for bug, (function, words) in BUGS.items():
        text = feedback("ch4.train_early_stopped", function, 3)  # a debug's hints: third check
        assert words in text, bug


def test_the_loop_handed_out_fails_every_bug_it_shows():
    broken = _definitions(exercise_version=True)["train_early_stopped"]
    failing = _failing_checks(broken, _debug_params("public"))
    assert failing == {"eval mode", "train mode", "best weights", "leakage", "outcome"}


def _fixed_another_way(model, train, val, epochs=60, patience=8, lr=1e-3, seed=0):
    """Validation in chunks under inference mode; the best model kept as a deep copy."""
    torch.manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    best_loss, best_epoch, best_model = float("inf"), 0, None
    for epoch in range(1, epochs + 1):
        model.train()
        for batch in torch.randperm(len(train)).split(32):
            loss = F.cross_entropy(model(train.inputs[batch]), train.targets[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.inference_mode():
            chunks = zip(val.inputs.split(64), val.targets.split(64), strict=True)
            val_loss = sum(F.cross_entropy(model(x), y, reduction="sum").item() for x, y in chunks)
        if val_loss < best_loss:
            best_loss, best_epoch, best_model = val_loss, epoch, copy.deepcopy(model)
        elif epoch - best_epoch >= patience:
            break
    return best_model


@pytest.mark.parametrize("visibility", ["public", "hidden"])
def test_a_loop_fixed_another_way_passes(visibility):
    assert _failing_checks(_fixed_another_way, _debug_params(visibility)) == set()


def _fixed_with_a_diagnostic(model, train, val, epochs=60, patience=8, lr=1e-3, seed=0):
    """The fixed loop, measuring training accuracy too in its evaluation (no part of the loss)."""
    torch.manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    best_loss, best_epoch, best_weights = float("inf"), 0, None
    for epoch in range(1, epochs + 1):
        model.train()
        for batch in torch.randperm(len(train)).split(32):
            loss = F.cross_entropy(model(train.inputs[batch]), train.targets[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            val_loss = F.cross_entropy(model(val.inputs), val.targets).item()
            (model(train.inputs).argmax(1) == train.targets).float().mean()
        if val_loss < best_loss:
            best_loss, best_epoch, best_weights = val_loss, epoch, copy.deepcopy(model.state_dict())
        elif epoch - best_epoch >= patience:
            break
    model.load_state_dict(best_weights)
    return model


@pytest.mark.parametrize("visibility", ["public", "hidden"])
def test_a_fixed_loop_with_a_diagnostic_passes(visibility):
    assert _failing_checks(_fixed_with_a_diagnostic, _debug_params(visibility)) == set()


def test_the_first_debug_check_names_symptoms_not_fixes(feedback):
    broken = _definitions(exercise_version=True)["train_early_stopped"]
    first = feedback("ch4.train_early_stopped", broken, 1)
    for words in ("eval mode", "train mode", "deep copy", "put back", "kept out of training"):
        assert words not in first


def test_the_kept_weights_report_says_how_the_loop_measured(feedback):
    text = feedback("ch4.train_early_stopped", _loop(eval_mode=False, deep_copy=False))
    assert "as your loop measured it (dropout on)" in text


def test_the_debug_probe_reports_a_loop_that_returns_no_model(feedback):
    def returns_the_loss(model, train, val, epochs=60, patience=8):
        _loop()(model, train, val, epochs, patience)
        return 0.5

    assert "return the model" in feedback("ch4.train_early_stopped", returns_the_loss, 3)


# --- ch4.regularised_classifier (experiment) ---------------------------------------------------------


def test_plain_training_fails_the_experiment(feedback):
    from course_lib.lessons.ch04_generalization import Recipe, train_with

    def plain(train, val, max_steps):
        return train_with(Recipe(), train, val, epochs=50)[0]

    text = feedback("ch4.regularised_classifier", plain)
    assert "1 of 1 cases failed" in text and "no better than plain training" in text


def test_an_over_budget_run_fails_the_experiment(feedback):
    def over_budget(train, val, max_steps):
        model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        for _ in range(max_steps + 1):
            optimizer.zero_grad()
            F.cross_entropy(model(train.inputs), train.targets).backward()
            optimizer.step()
        return model

    text = feedback("ch4.regularised_classifier", over_budget)
    assert "over budget" in text and "1,001 steps" in text


def test_training_on_the_validation_split_fails_the_experiment(feedback):
    from course_lib.lessons.ch04_generalization import Recipe, train_with

    def on_validation(train, val, max_steps):
        return train_with(Recipe(), val, val, epochs=max_steps // 9)[0]

    text = feedback("ch4.regularised_classifier", on_validation)
    assert "your models trained on validation images" in text


def test_a_pass_shows_no_test_accuracy(feedback):
    text = feedback("ch4.regularised_classifier", SOLUTION["regularised_classifier"])
    assert "validation accuracy" in text and "test accuracy at least" not in text


def test_the_experiment_names_an_answer_that_is_no_model(feedback):
    assert "return the model you chose" in feedback(
        "ch4.regularised_classifier", lambda train, val, max_steps: 0.9
    )
