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
        ("ch6.fgsm", "l2_attack"),
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


def _tampered(
    folder,
    *,
    skip_unlisted=False,
    skip_missing=False,
    include_manifest=False,
    any_name=False,
    paths=False,
):
    listed = json.loads((folder / "manifest.json").read_text())["files"]
    found = []
    for name, digest in listed.items():
        path = folder / name
        if not path.exists():
            found += [] if skip_missing else [name]
            continue
        actual = hashlib.sha256(path.read_bytes()).hexdigest()
        if (actual not in listed.values()) if any_name else (actual != digest):
            found.append(name)
    if not skip_unlisted:
        ignored = () if include_manifest else ("manifest.json", "manifest.sig")
        found += [
            p.name for p in folder.iterdir() if p.name not in listed and p.name not in ignored
        ]
    return sorted(str(folder / name) if paths else name for name in found)


def test_tampered_file_checks_name_each_missed_kind(feedback):
    assert "passed (6/6 cases)" in feedback("ch6.tampered_files", _tampered)
    unlisted = feedback("ch6.tampered_files", lambda f: _tampered(f, skip_unlisted=True))
    assert "2 of 6 cases failed" in unlisted and "the manifest does not list counts too" in unlisted
    assert "Hash every listed file" not in unlisted  # the hint follows what was left out
    first_only = feedback("ch6.tampered_files", lambda f: _tampered(f)[:1])
    assert "2 of 6 cases failed" in first_only and "Hash every listed file's bytes" in first_only
    missing = feedback("ch6.tampered_files", lambda f: _tampered(f, skip_missing=True))
    assert _failed(missing) == ["the weights file deleted"] and "whether it exists" in missing
    manifest = feedback("ch6.tampered_files", lambda f: _tampered(f, include_manifest=True))
    assert "leave them out" in manifest
    everything = feedback("ch6.tampered_files", lambda f: sorted(p.name for p in f.iterdir()))
    assert "leave them out" in everything
    names_only = feedback("ch6.tampered_files", lambda f: ["weights.safetensors"])
    assert "[] (nothing changed)" in names_only
    assert "return a list of names" in feedback("ch6.tampered_files", lambda f: None)


def test_a_hash_found_under_another_name_does_not_vouch_for_a_file(feedback):
    text = feedback("ch6.tampered_files", lambda f: _tampered(f, any_name=True))
    assert _failed(text) == ["two listed files' contents exchanged"]
    assert "under that file's own name" in text


def test_paths_instead_of_names_are_told_so(feedback):
    text = feedback("ch6.tampered_files", lambda f: _tampered(f, paths=True))
    assert "return the file names, not paths" in text
    assert "Hash every listed file" not in text


def test_reading_a_missing_file_gets_the_missing_file_hint(feedback):
    def reads_everything(folder):
        listed = json.loads((folder / "manifest.json").read_text())["files"]
        return sorted(
            name
            for name, digest in listed.items()
            if hashlib.sha256((folder / name).read_bytes()).hexdigest() != digest
        )

    text = feedback("ch6.tampered_files", reads_everything)
    assert "FileNotFoundError reading weights.safetensors" in text
    assert "whether it exists before you read it" in text


def test_a_swapped_file_is_named_only_by_its_hash():
    exercise = find_exercise("ch6.tampered_files")
    case = exercise.make_case({"tamper": "swap", "encrypted": True})
    result = run_exercise(exercise, lambda f: [], [case])
    assert "whatever its name" in report(result, exercise)


def test_tampered_file_nudges_come_first(feedback):
    text = feedback("ch6.tampered_files", lambda f: _tampered(f, skip_unlisted=True), attempt=1)
    assert "in both directions" in text and "the manifest does not list" not in text


# --- exercise 2: the broken guard ----------------------------------------------------------------------

_BUG_CASES = {  # neutral descriptions: the bug shows in expected/got, from the second check
    "dtype": "input 1: should be refused",
    "single": "input 2: should be accepted",
    "empty": "input 3: should be refused",
    "clamp": "input 4: should be refused",
    "nan": "input 5: should be refused",
}
_WHOLE_GUARD = "the whole guard: valid batches accepted unchanged, malformed ones refused"


def _hints(feedback, function, attempt=3):
    """A debug exercise shows its pointed hints from the third failed check on."""
    return feedback("ch6.input_guard", function, attempt=attempt)


def _guard(x, *, bugs=(), error=ValueError):
    """The solution's guard, with the named planted bugs put back, refusing with ``error``."""
    if not isinstance(x, torch.Tensor):
        raise TypeError("not a tensor")
    if "dtype" not in bugs and x.dtype != torch.float32:
        raise error("dtype")
    if "single" not in bugs and x.shape == (1, 16, 16):
        x = x.unsqueeze(0)
    if x.dim() != 4 or x.shape[1:] != (1, 16, 16):
        raise error("shape")
    if len(x) > 64 or ("empty" not in bugs and len(x) == 0):
        raise error("batch size")
    if "clamp" in bugs:
        x = x.clamp(0, 1)
    if "nan" not in bugs and not torch.isfinite(x).all():
        raise error("NaN or inf")
    if x.min() < 0 or x.max() > 1:
        raise error("range")
    return x


def test_a_guard_raising_its_own_value_error_subclass_passes(feedback):
    from course_lib.hardening import InvalidInput

    class GuardError(ValueError):
        pass

    for error in (InvalidInput, GuardError):
        text = _hints(feedback, lambda x, error=error: _guard(x, error=error))
        assert "passed (6/6 cases)" in text


def test_a_guard_raising_the_wrong_kind_of_error_is_told_to_raise_a_value_error(feedback):
    text = _hints(feedback, lambda x: _guard(x, error=RuntimeError))
    assert "raise a ValueError" in text and "the dtype is never checked" not in text


def test_the_first_check_names_no_planted_bug(feedback):
    text = _hints(feedback, GIVEN["check_input"], attempt=1)
    for words in ("uint8", "NaN", "empty", "0..255", "one image"):
        assert words not in text


def test_the_given_guard_fails_each_planted_bug_and_nothing_else(feedback):
    text = _hints(feedback, GIVEN["check_input"])
    assert sorted(_failed(text)) == sorted(_BUG_CASES.values())


@pytest.mark.parametrize("bug", sorted(_BUG_CASES))
def test_each_planted_bug_left_alone_fails_exactly_its_own_case(feedback, bug):
    text = _hints(feedback, lambda x: _guard(x, bugs=(bug,)))
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
    assert words in _hints(feedback, lambda x: _guard(x, bugs=(bug,)))


def test_the_hidden_inputs_tie_back_to_the_planted_bugs():
    exercise = find_exercise("ch6.input_guard")
    for bug, kind, words in [
        ("dtype", "float64 pixels", "the dtype is never checked"),
        ("clamp", "a negative pixel", "never repairs"),
        ("clamp", "an infinite pixel", "not clipped to 1"),
    ]:
        case = exercise.make_case({"case": kind, "seed": 3})
        result = run_exercise(exercise, lambda x, bug=bug: _guard(x, bugs=(bug,)), [case])
        assert words in report(result, exercise, attempt=3)


def test_over_fixing_fails_the_whole_guard_case(feedback):
    def normalizing(x):
        return (_guard(x) - 0.5) / 0.5

    text = _hints(feedback, normalizing)
    assert "does not change the input" in text
    assert _WHOLE_GUARD in text

    def refusing_big_batches(x):
        if len(x) > 8:
            raise ValueError("too many")
        return _guard(x)

    assert "this input is valid: accept it" in _hints(feedback, refusing_big_batches)

    def silent(x):
        try:
            return _guard(x)
        except ValueError:
            raise ValueError() from None

    assert "with no message" in _hints(feedback, silent)


def test_a_guard_that_trips_over_a_list_is_told_to_check_the_type_first(feedback):
    def untyped(x):
        if x.dim() == 3:  # AttributeError on a list
            x = x.unsqueeze(0)
        return _guard(x)

    text = _hints(feedback, untyped)
    assert _failed(text) == [_WHOLE_GUARD]
    assert "a list: refused with a ValueError that says what is wrong" in text
    assert "check that the input is a tensor before anything else" in text


def test_guard_nudges_come_before_hints(feedback):
    text = _hints(feedback, lambda x: _guard(x, bugs=("nan",)), attempt=2)
    assert "what does a comparison with NaN return?" in text
    assert "NaN compares False with everything" not in text


# --- exercise 3: the threshold --------------------------------------------------------------------------


def _threshold(model, inputs, rate, *, upper=False, logits=False, top_only=False):
    with torch.no_grad():
        outputs = model(inputs)
    top_two = (outputs if logits else outputs.softmax(dim=1)).topk(2, dim=1).values
    scores = top_two[:, 0] if top_only else top_two[:, 0] - top_two[:, 1]
    return torch.quantile(scores, 1 - rate if upper else rate).item()


def test_threshold_checks_name_the_wrong_score_quantile_and_logits(feedback):
    assert "passed (2/2 cases)" in feedback("ch6.ood_threshold", _threshold)
    upper = feedback("ch6.ood_threshold", lambda m, x, r: _threshold(m, x, r, upper=True))
    assert "not the 1 - false_positive_rate one" in upper
    logits = feedback("ch6.ood_threshold", lambda m, x, r: _threshold(m, x, r, logits=True))
    assert "not between raw logits" in logits
    top = feedback("ch6.ood_threshold", lambda m, x, r: _threshold(m, x, r, top_only=True))
    assert "not by the largest alone" in top
    assert "return the threshold as a float" in feedback("ch6.ood_threshold", lambda m, x, r: "0.9")
    median = feedback("ch6.ood_threshold", lambda m, x, r: _threshold(m, x, 0.5))
    assert "exactly that share" in median and "quantile function" not in median


def test_the_library_threshold_does_not_pass(feedback):
    from course_lib.hardening import calibrate_threshold, max_softmax_score

    def shipped(model, inputs, rate):
        with torch.no_grad():
            return float(calibrate_threshold(max_softmax_score(model(inputs)), rate))

    assert "passed" not in feedback("ch6.ood_threshold", shipped).splitlines()[0]


# --- exercise 4: the one-step attack under an L2 budget ---------------------------------------------


def _attack(model, x, y, epsilon, *, direction=1, clip=True, sign=False, per_image=True):
    x = x.clone().requires_grad_(True)
    (gradient,) = torch.autograd.grad(nn.functional.cross_entropy(model(x), y), x)
    if sign:
        step = gradient.sign()
    elif per_image:
        step = gradient / gradient.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    else:
        step = gradient / gradient.norm()
    moved = x + direction * epsilon * step
    return (moved.clamp(0, 1) if clip else moved).detach()


def test_attack_checks_name_fgsm_the_clip_the_direction_and_the_batch_norm(feedback):
    assert "passed (2/2 cases)" in feedback("ch6.fgsm", _attack)
    fgsm = feedback("ch6.fgsm", lambda m, x, y, e: _attack(m, x, y, e, sign=True))
    assert "the chapter's FGSM step" in fgsm
    against = feedback("ch6.fgsm", lambda m, x, y, e: _attack(m, x, y, e, direction=-1))
    assert "do not subtract it" in against
    unclipped = feedback("ch6.fgsm", lambda m, x, y, e: _attack(m, x, y, e, clip=False))
    assert "clip them to [0, 1]" in unclipped
    batch = feedback("ch6.fgsm", lambda m, x, y, e: _attack(m, x, y, e, per_image=False))
    assert "not over the whole batch" in batch
    doubled = feedback("ch6.fgsm", lambda m, x, y, e: _attack(m, x, y, 2 * e))
    assert "scale each image's gradient to length epsilon" in doubled


def test_the_chapter_fgsm_does_not_pass(feedback):
    from course_lib.hardening import fgsm

    assert "the chapter's FGSM step" in feedback("ch6.fgsm", fgsm)


def test_attack_side_effects_are_named(feedback):
    def in_place(model, x, y, epsilon):
        x += epsilon  # changes the caller's images
        return x.clamp(0, 1)

    assert "x changed in place" in feedback("ch6.fgsm", in_place)

    def on_the_callers_x(model, x, y, epsilon):
        x.requires_grad_(True)
        nn.functional.cross_entropy(model(x), y).backward()
        step = x.grad / x.grad.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
        return torch.clamp(x + epsilon * step, 0, 1)

    text = feedback("ch6.fgsm", on_the_callers_x)
    assert "x now requires gradients and holds a .grad" in text
    assert "a copy of x" in text

    def attached(model, x, y, epsilon):
        return _attack(model, x, y, epsilon) + 0 * model(x).sum()

    assert "detach the attacked images" in feedback("ch6.fgsm", attached)


def test_attack_failures_have_their_own_nudges(feedback):
    def in_place(model, x, y, epsilon):
        x += epsilon
        return x.clamp(0, 1)

    text = feedback("ch6.fgsm", in_place, attempt=1)
    assert "still the same?" in text and "which direction of a fixed length" not in text


# --- exercise 5: the OOD detector (experiment) ----------------------------------------------------


def _confidence_detector(model, train_inputs, val_inputs, rate):
    """The plain baseline: exercise 3's softmax threshold."""
    threshold = _threshold(model, val_inputs, rate)

    def detector(images):
        with torch.no_grad():
            return model(images).softmax(dim=1).amax(dim=1) < threshold

    return detector


def test_the_softmax_baseline_fails_and_is_told_which_kind_fell_short(feedback):
    text = feedback("ch6.ood_detector", _confidence_detector)
    assert "1 of 1 cases failed" in text and "too few noise images and glyphs caught" in text
    assert "the whole false-positive allowance" in text


def _pixel_detector(model, train_inputs, val_inputs, rate):
    """Cosine 5-NN on raw pixels: no model at all. The prompt allows any score."""
    known = nn.functional.normalize(train_inputs.flatten(1), dim=1)

    def score(images):
        return (nn.functional.normalize(images.flatten(1), dim=1) @ known.T).topk(5).values.mean(1)

    threshold = torch.quantile(score(val_inputs), rate).item()
    return lambda images: score(images) < threshold


def test_a_pixel_space_detector_is_accepted_as_the_prompt_says(feedback):
    assert "passed" in feedback("ch6.ood_detector", _pixel_detector).splitlines()[0]


def test_the_softmax_baseline_fails_the_hidden_cases_too():
    exercise = find_exercise("ch6.ood_detector")
    cases = [exercise.make_case(params) for params in _hidden("ch6.ood_detector")]
    result = run_exercise(exercise, _confidence_detector, cases)
    assert result.status == "failed"


def test_an_over_budget_build_fails(feedback):
    def slow(*arguments):
        time.sleep(1.7)  # stands for training something big
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
