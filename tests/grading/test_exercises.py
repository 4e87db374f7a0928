"""The grading engine: probes report plain data, judges decide, feedback escalates.

These tests use a small exercise of their own, so they do not depend on any chapter's wording.
"""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from course_lib.grading import check, forget_attempts, list_exercises
from course_lib.grading.probing import MAX_TENSOR_ELEMENTS, Opaque, decode, encode
from course_lib.grading.runner import Status, report, run_exercise
from course_lib.grading.spec import Case, Exercise, Mistake, Probe, Verdict, compare_with_reference


def _double_case(params: dict) -> Case:
    x = torch.arange(params["size"], dtype=torch.float32)
    return compare_with_reference(
        f"{params['size']} numbers",
        (x,),
        reference=lambda x: 2 * x,
        mistakes=[Mistake(lambda x: x + 2, "you added two instead of doubling", "read the task")],
        shape_hint="keep the input's shape",
        in_place_hint="you changed x in place",
    )


def probe_sign(learner, number):
    return learner(number)


def _sign_case(params: dict) -> Case:
    def judge(value) -> Verdict:
        if value == "unreadable":
            raise KeyError("a judge that cannot read the answer")
        expected = "positive" if params["number"] > 0 else "negative"
        if value == expected:
            return Verdict(True)
        return Verdict(False, expected, str(value), "compare with zero", "which side of zero?")

    return Case(f"sign of {params['number']}", Probe(probe_sign, (params["number"],)), judge)


DOUBLE = Exercise(
    id="test.double",
    title="Double it",
    function_name="double",
    points=2,
    make_case=_double_case,
    public_params=[{"size": 3}, {"size": 5}],
    nudge="what does doubling do to each number?",
    praise="every number doubled, the input untouched.",
    next_step="try halving.",
)
SIGN = Exercise("test.sign", "Sign", "sign", 1, _sign_case, [{"number": 3}, {"number": -2}])


def run(exercise, function, attempt=2):
    result = run_exercise(exercise, function, exercise.public_cases(), time_limit=2)
    return result, report(result, exercise, attempt)


def test_a_correct_answer_passes_and_says_what_was_right_and_what_next():
    result, text = run(DOUBLE, lambda x: 2 * x)
    assert result.status == Status.PASSED and result.earned == 2
    assert "passed (2/2 cases)" in text
    assert "every number doubled" in text and "Next: try halving." in text


def test_a_named_mistake_shows_its_nudge_first_and_its_hint_after():
    _, first = run(DOUBLE, lambda x: x + 2, attempt=1)
    _, second = run(DOUBLE, lambda x: x + 2, attempt=2)
    assert "nudge:    read the task" in first and "added two" not in first
    assert "then says more" in first
    assert "hint:     you added two instead of doubling" in second
    assert "expected:" in second and "got:" in second


def test_a_debug_exercise_shows_symptoms_then_details_then_hints():
    debug = Exercise(**{**DOUBLE.__dict__, "id": "test.debug", "kind": "debug"})
    levels = [run(debug, lambda x: x + 2, attempt=n)[1] for n in (1, 2, 3)]
    assert "✗ 3 numbers: failed" in levels[0] and "expected:" not in levels[0]
    assert "nudge: what does doubling do" in levels[0]
    assert "expected:" in levels[1] and "nudge:    read the task" in levels[1]
    assert "hint:     you added two" in levels[2] and "says more" not in levels[2]


def test_without_a_pointed_hint_the_nudge_stays_a_nudge():
    _, second = run(DOUBLE, lambda x: 3 * x, attempt=2)
    assert "nudge:    what does doubling do" in second and "hint:" not in second
    assert "says more" not in second


def test_a_case_without_its_own_nudge_falls_back_to_the_exercise_nudge():
    _, first = run(DOUBLE, lambda x: 3 * x, attempt=1)
    assert "what does doubling do" in first


def test_check_escalates_from_nudge_to_hint_across_calls(capsys):
    forget_attempts()

    def gd_step(w, grad, lr):
        return w

    check("ch1.gd_step", gd_step)
    first = capsys.readouterr().out
    check("ch1.gd_step", gd_step)
    second = capsys.readouterr().out
    assert "nudge:" in first and "hint:" in second
    forget_attempts()
    check("ch1.gd_step", gd_step)
    assert "nudge:" in capsys.readouterr().out


def test_shape_and_in_place_problems_are_named():
    _, wrong_shape = run(DOUBLE, lambda x: (2 * x).reshape(1, -1))
    assert "keep the input's shape" in wrong_shape

    def in_place(x):
        x *= 2
        return x

    _, text = run(DOUBLE, in_place)
    assert "you changed x in place" in text


def test_untouched_stub_reports_not_attempted_without_a_traceback():
    def double(x):
        raise NotImplementedError

    result, text = run(DOUBLE, double)
    assert result.status == Status.NOT_ATTEMPTED and result.earned == 0
    assert "not attempted yet" in text and "Traceback" not in text


def test_an_exception_in_the_learners_code_is_located():
    def double(x):
        return x[100]

    _, text = run(DOUBLE, double)
    assert "IndexError" in text and "raised at line" in text and "x[100]" in text


def test_an_endless_loop_is_stopped():
    def double(x):
        while True:
            pass

    result, text = run(DOUBLE, double)
    assert {case.status for case in result.cases} == {Status.TIMEOUT}
    assert "endless loop" in text


def test_a_missing_function_scores_nothing():
    result, text = run(DOUBLE, None)
    assert result.status == Status.MISSING and "missing" in text


def test_an_answer_the_judge_cannot_read_fails_the_case_without_a_crash():
    result, _ = run(SIGN, lambda number: "unreadable")
    assert [case.status for case in result.cases] == [Status.FAILED, Status.FAILED]
    assert "could not read your answer" in result.cases[0].hint


def test_an_object_comes_back_as_opaque_and_is_judged_as_wrong():
    result, text = run(SIGN, lambda number: torch.nn.Linear(1, 1))
    assert result.status == Status.FAILED
    assert "a Linear" in text


def test_partial_credit_is_in_proportion_to_the_cases_passed():
    result, _ = run(SIGN, lambda number: "positive")
    assert result.status == Status.PARTIAL and result.earned == 0.5


def test_a_probe_must_be_a_top_level_function():
    def local(learner):
        return learner()

    with pytest.raises(ValueError, match="top-level"):
        Probe(local)


@pytest.mark.parametrize(
    "value",
    [
        torch.tensor([[1.5, -2.0], [float("nan"), float("inf")]]),
        torch.tensor([True, False]),
        torch.arange(6, dtype=torch.int64).reshape(2, 3),
        torch.tensor(3.0, dtype=torch.float64),
        (1, 2.5, "three", None, True),
        {"params": [torch.ones(2)], "lr": 1e-3},
        [float("-inf"), math.pi],
        Path("model/weights.safetensors"),
    ],
)
def test_plain_data_survives_the_trip_through_json(value):
    back = decode(json.loads(json.dumps(encode(value))))
    if isinstance(value, torch.Tensor):
        assert back.dtype == value.dtype and back.shape == value.shape
        assert torch.equal(back.nan_to_num(), value.nan_to_num())
    elif isinstance(value, dict):
        assert back["lr"] == value["lr"] and torch.equal(back["params"][0], value["params"][0])
    else:
        assert back == value or (isinstance(value, list) and back[0] == value[0])


def test_numpy_numbers_become_numbers_and_objects_become_opaque():
    assert decode(encode(np.float32(0.5))) == 0.5 and decode(encode(np.int64(7))) == 7
    opaque = decode(json.loads(json.dumps(encode(torch.nn.ReLU()))))
    assert isinstance(opaque, Opaque) and opaque.type_name == "ReLU"


def test_a_huge_answer_is_refused():
    with pytest.raises(ValueError, match="too large"):
        encode(torch.zeros(MAX_TENSOR_ELEMENTS + 1))


def test_decoding_runs_no_code():
    with pytest.raises(ValueError):
        decode({"__reduce__": "os.system"})
    with pytest.raises((ValueError, AttributeError)):
        decode({"__tensor__": {"dtype": "system", "shape": [1], "values": [1]}})


def test_unknown_exercise_lists_the_real_ones():
    with pytest.raises(ValueError, match="ch1.gd_step"):
        check("ch9.nothing", print)
    assert "ch2.momentum_step" in list_exercises()
