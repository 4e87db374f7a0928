"""Chapter 6 exercises: the solution passes every case, each likely mistake and each planted bug
is named by its own case, and the experiment's baseline and an over-budget run fail."""

import hashlib
import json
import time
from pathlib import Path

import nbformat
import pytest
import torch
from torch import nn

from course_lib.grading.batch import load_hidden_tests
from course_lib.grading.exercise_index import find_exercise
from course_lib.grading.runner import report, run_exercise
from course_lib.tools.assign import strip_solutions

SOLUTION = Path(__file__).resolve().parents[2] / "solutions" / "06_deployment_hardening.ipynb"


def _cells() -> list[str]:
    notebook = nbformat.read(SOLUTION, as_version=4)
    return [cell.source for cell in notebook.cells if cell.cell_type == "code"]


def _defined(sources: list[str]) -> dict:
    """The functions the notebook's cells define (without running its checks or installs)."""
    namespace: dict = {}
    for source in sources:
        if "check(" not in source and "google.colab" not in source:
            exec(source, namespace)
    return namespace


SOLVED = _defined(_cells())
GIVEN = _defined([strip_solutions(source) for source in _cells()])  # what the learner gets


def _hidden(exercise_id: str) -> list[dict]:
    hidden = load_hidden_tests()  # COURSE_HIDDEN_TESTS, else the package's hidden cases
    if not any(key.startswith("ch6.") for key in hidden):
        pytest.skip("no chapter-6 hidden cases here: set COURSE_HIDDEN_TESTS to their file")
    return hidden.get(exercise_id, [])


def _failed(text: str) -> list[str]:
    """The descriptions of the failed cases in a report."""
    return [line.split("✗ ", 1)[1].rsplit(":", 1)[0] for line in text.splitlines() if "✗" in line]


@pytest.mark.parametrize(
    "exercise_id, name",
    [
        ("ch6.tampered_files", "find_tampered_files"),
        ("ch6.input_guard", "check_input"),
        ("ch6.ood_threshold", "calibrate_ood_threshold"),
        ("ch6.fgsm", "fgsm_attack"),
        ("ch6.ood_detector", "build_ood_detector"),
    ],
)
def test_the_solution_passes_every_public_and_hidden_case(feedback, exercise_id, name):
    exercise = find_exercise(exercise_id)
    assert "passed" in feedback(exercise_id, SOLVED[name]).splitlines()[0]
    cases = [exercise.make_case(params) for params in _hidden(exercise_id)]
    assert cases, f"no hidden case for {exercise_id}"
    result = run_exercise(exercise, SOLVED[name], cases)
    assert result.status == "passed", report(result, exercise)


def test_every_exercise_has_a_kind_minutes_and_feedback_for_passing():
    exercises = [find_exercise(f"ch6.{name}") for name in _EXERCISE_NAMES]
    assert {exercise.kind for exercise in exercises} == {"derive", "debug", "experiment"}
    assert sum(exercise.minutes for exercise in exercises) == 45
    assert "**Time:** about 45 minutes" in nbformat.read(SOLUTION, as_version=4).cells[0].source
    assert all(e.nudge and e.praise and e.next_step for e in exercises)


_EXERCISE_NAMES = ("tampered_files", "input_guard", "ood_threshold", "fgsm", "ood_detector")


# --- exercise 1: tampered files ----------------------------------------------------------------------


def _tampered(folder, *, skip_unlisted=False, skip_missing=False, include_manifest=False):
    listed = json.loads((folder / "manifest.json").read_text())["files"]
    found = []
    for name, digest in listed.items():
        path = folder / name
        if not path.exists():
            found += [] if skip_missing else [name]
        elif hashlib.sha256(path.read_bytes()).hexdigest() != digest:
            found.append(name)
    if not skip_unlisted:
        ignored = () if include_manifest else ("manifest.json", "manifest.sig")
        found += [
            p.name for p in folder.iterdir() if p.name not in listed and p.name not in ignored
        ]
    return sorted(found)


def test_tampered_file_checks_name_each_missed_kind(feedback):
    assert "passed (5/5 cases)" in feedback("ch6.tampered_files", _tampered)
    unlisted = feedback("ch6.tampered_files", lambda f: _tampered(f, skip_unlisted=True))
    assert "2 of 5 cases failed" in unlisted and "the manifest does not list counts too" in unlisted
    first_only = feedback("ch6.tampered_files", lambda f: _tampered(f)[:1])
    assert "1 of 5 cases failed" in first_only and "not only the first one" in first_only
    missing = feedback("ch6.tampered_files", lambda f: _tampered(f, skip_missing=True))
    assert _failed(missing) == ["the weights file deleted"] and "whether it exists" in missing
    manifest = feedback("ch6.tampered_files", lambda f: _tampered(f, include_manifest=True))
    assert "leave them out" in manifest
    everything = feedback("ch6.tampered_files", lambda f: sorted(p.name for p in f.iterdir()))
    assert "leave them out" in everything
    names_only = feedback("ch6.tampered_files", lambda f: ["weights.safetensors"])
    assert "[] (nothing changed)" in names_only
    assert "return a list of names" in feedback("ch6.tampered_files", lambda f: None)


def test_a_swapped_file_is_named_only_by_its_hash():
    exercise = find_exercise("ch6.tampered_files")
    case = exercise.make_case({"tamper": "swap", "encrypted": True})
    result = run_exercise(exercise, lambda f: [], [case])
    assert "whatever its name" in report(result, exercise)


def test_tampered_file_nudges_come_first(feedback):
    text = feedback("ch6.tampered_files", lambda f: _tampered(f, skip_unlisted=True), attempt=1)
    assert "in both directions" in text and "the manifest does not list" not in text


# --- exercise 2: the broken guard ----------------------------------------------------------------------

_BUG_CASES = {
    "dtype": "uint8 pixels: refused",
    "single": "one image (1, 16, 16): accepted",
    "empty": "an empty batch: refused",
    "clamp": "values 0..255: refused",
    "nan": "a NaN pixel: refused",
}


def _guard(x, *, bugs=()):
    """The solution's guard, with the named planted bugs put back."""
    if not isinstance(x, torch.Tensor):
        raise TypeError("not a tensor")
    if "dtype" not in bugs and x.dtype != torch.float32:
        raise ValueError("dtype")
    if "single" not in bugs and x.shape == (1, 16, 16):
        x = x.unsqueeze(0)
    if x.dim() != 4 or x.shape[1:] != (1, 16, 16):
        raise ValueError("shape")
    if len(x) > 64 or ("empty" not in bugs and len(x) == 0):
        raise ValueError("batch size")
    if "clamp" in bugs:
        x = x.clamp(0, 1)
    if "nan" not in bugs and not torch.isfinite(x).all():
        raise ValueError("NaN or inf")
    if x.min() < 0 or x.max() > 1:
        raise ValueError("range")
    return x


def test_the_given_guard_fails_each_planted_bug_and_nothing_else(feedback):
    text = feedback("ch6.input_guard", GIVEN["check_input"])
    assert sorted(_failed(text)) == sorted(_BUG_CASES.values())


@pytest.mark.parametrize("bug", sorted(_BUG_CASES))
def test_each_planted_bug_left_alone_fails_exactly_its_own_case(feedback, bug):
    text = feedback("ch6.input_guard", lambda x: _guard(x, bugs=(bug,)))
    assert _failed(text) == [_BUG_CASES[bug]]


@pytest.mark.parametrize(
    "bug, words",
    [
        ("dtype", "the dtype is never checked"),
        ("single", "give it a batch axis of one"),
        ("empty", "RuntimeError"),
        ("clamp", "it never repairs its input"),
        ("nan", "NaN compares False with everything"),
    ],
)
def test_each_planted_bug_is_named(feedback, bug, words):
    assert words in feedback("ch6.input_guard", lambda x: _guard(x, bugs=(bug,)))


def test_the_hidden_inputs_tie_back_to_the_planted_bugs():
    exercise = find_exercise("ch6.input_guard")
    for bug, kind, words in [
        ("dtype", "float64 pixels", "the dtype is never checked"),
        ("clamp", "a negative pixel", "never repairs"),
        ("clamp", "an infinite pixel", "not clipped to 1"),
    ]:
        case = exercise.make_case({"case": kind, "seed": 3})
        result = run_exercise(exercise, lambda x, bug=bug: _guard(x, bugs=(bug,)), [case])
        assert words in report(result, exercise)


def test_over_fixing_fails_the_whole_guard_case(feedback):
    def normalizing(x):
        return (_guard(x) - 0.5) / 0.5

    text = feedback("ch6.input_guard", normalizing)
    assert "does not change the input" in text
    assert "the whole guard: valid batches returned unchanged, malformed ones refused" in text

    def refusing_big_batches(x):
        if len(x) > 8:
            raise ValueError("too many")
        return _guard(x)

    assert "this input is valid: accept it" in feedback("ch6.input_guard", refusing_big_batches)

    def silent(x):
        try:
            return _guard(x)
        except ValueError:
            raise ValueError() from None

    assert "with no message" in feedback("ch6.input_guard", silent)


def test_a_guard_that_trips_over_a_list_is_told_to_check_the_type_first(feedback):
    def untyped(x):
        if x.dim() == 3:  # AttributeError on a list
            x = x.unsqueeze(0)
        return _guard(x)

    text = feedback("ch6.input_guard", untyped)
    assert _failed(text) == [
        "the whole guard: valid batches returned unchanged, malformed ones refused"
    ]
    assert "a list: a ValueError that says what is wrong" in text
    assert "check that the input is a tensor before anything else" in text


def test_guard_nudges_come_before_hints(feedback):
    text = feedback("ch6.input_guard", lambda x: _guard(x, bugs=("nan",)), attempt=1)
    assert "what does a comparison with NaN return?" in text
    assert "NaN compares False with everything" not in text


# --- exercise 3: the threshold --------------------------------------------------------------------------


def _threshold(model, inputs, rate, *, upper=False, logits=False):
    with torch.no_grad():
        outputs = model(inputs)
    scores = outputs.max(dim=1).values if logits else outputs.softmax(dim=1).max(dim=1).values
    return torch.quantile(scores, 1 - rate if upper else rate).item()


def test_threshold_checks_name_the_wrong_quantile_and_logits(feedback):
    assert "passed (2/2 cases)" in feedback("ch6.ood_threshold", _threshold)
    upper = feedback("ch6.ood_threshold", lambda m, x, r: _threshold(m, x, r, upper=True))
    assert "not the 1 - false_positive_rate one" in upper
    logits = feedback("ch6.ood_threshold", lambda m, x, r: _threshold(m, x, r, logits=True))
    assert "not the raw logits" in logits
    assert "return the threshold as a float" in feedback("ch6.ood_threshold", lambda m, x, r: "0.9")
    median = feedback("ch6.ood_threshold", lambda m, x, r: _threshold(m, x, 0.5))
    assert "exactly that share" in median


# --- exercise 4: FGSM --------------------------------------------------------------------------------


def _attack(model, x, y, epsilon, *, direction=1, clip=True, sign=True):
    x = x.clone().requires_grad_(True)
    (gradient,) = torch.autograd.grad(nn.functional.cross_entropy(model(x), y), x)
    moved = x + direction * epsilon * (gradient.sign() if sign else gradient)
    return (moved.clamp(0, 1) if clip else moved).detach()


def test_fgsm_checks_name_the_sign_the_clip_and_the_direction(feedback):
    assert "passed (1/1 cases)" in feedback("ch6.fgsm", _attack)
    against = feedback("ch6.fgsm", lambda m, x, y, e: _attack(m, x, y, e, direction=-1))
    assert "do not subtract it" in against
    unclipped = feedback("ch6.fgsm", lambda m, x, y, e: _attack(m, x, y, e, clip=False))
    assert "clip them to [0, 1]" in unclipped
    raw = feedback("ch6.fgsm", lambda m, x, y, e: _attack(m, x, y, e, sign=False))
    assert "not the gradient itself" in raw
    doubled = feedback("ch6.fgsm", lambda m, x, y, e: _attack(m, x, y, 2 * e))
    assert "no pixel may move more than epsilon" in doubled

    def in_place(model, x, y, epsilon):
        x += epsilon  # changes the caller's images
        return x.clamp(0, 1)

    assert "x changed in place" in feedback("ch6.fgsm", in_place)


# --- exercise 5: the OOD detector (experiment) ----------------------------------------------------


def _confidence_detector(model, train_inputs, val_inputs, rate):
    """The plain baseline: exercise 3's softmax threshold."""
    threshold = _threshold(model, val_inputs, rate)

    def detector(images):
        with torch.no_grad():
            return model(images).softmax(dim=1).amax(dim=1) < threshold

    return detector


def test_the_softmax_baseline_fails_and_is_told_where_to_look(feedback):
    text = feedback("ch6.ood_detector", _confidence_detector)
    assert "1 of 1 cases failed" in text and "embeddings of the training digits" in text


def test_the_softmax_baseline_fails_the_hidden_cases_too():
    exercise = find_exercise("ch6.ood_detector")
    cases = [exercise.make_case(params) for params in _hidden("ch6.ood_detector")]
    result = run_exercise(exercise, _confidence_detector, cases)
    assert result.status == "failed"


def test_an_over_budget_build_fails(feedback):
    def slow(*arguments):
        time.sleep(3.2)  # stands for training something big
        return SOLVED["build_ood_detector"](*arguments)

    assert "over the compute budget" in feedback("ch6.ood_detector", slow)


def test_flagging_too_many_digits_fails(feedback):
    def wide(model, train_inputs, val_inputs, rate):
        return SOLVED["build_ood_detector"](model, train_inputs, val_inputs, 0.3)

    assert "too many normal digits flagged" in feedback("ch6.ood_detector", wide)


def test_a_detector_of_the_wrong_form_is_explained(feedback):
    assert "return a function" in feedback("ch6.ood_detector", lambda *a: 0.5)
    one_answer = feedback("ch6.ood_detector", lambda *a: lambda images: torch.tensor(True))
    assert "one True/False per image" in one_answer
