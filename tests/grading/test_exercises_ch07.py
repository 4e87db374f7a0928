"""Chapter 7's exercises: the reference solutions pass every public and hidden case, each planted
bug fails its own case and is named, and the experiment's budget and baseline are enforced.

Hidden cases come from where the grader reads them: COURSE_HIDDEN_TESTS, else the package's file.
"""

import copy
import math
from pathlib import Path

import nbformat
import pytest
import torch
from torch import nn

from course_lib.grading.batch import grade_submission, load_hidden_tests
from course_lib.grading.exercise_index import find_exercise
from course_lib.grading.runner import run_exercise
from course_lib.tools.assign import exercise_notebook, strip_solutions


def hidden_params(exercise_id):
    """The hidden cases the grader would run (COURSE_HIDDEN_TESTS, else the package's file)."""
    return load_hidden_tests().get(exercise_id, [])


def run_cases(exercise_id, function, params):
    exercise = find_exercise(exercise_id)
    return run_exercise(exercise, function, [exercise.make_case(p) for p in params])


def failed(result):
    return {case.description for case in result.cases if case.status != "passed"}


# --- the solution notebook's functions, and the code it hands out -------------------------------------

SOLUTION = Path(__file__).resolve().parents[2] / "solutions" / "07_scaling_out.ipynb"


def notebook_functions(handed_out=False):
    """The functions the solution notebook defines (or, handed out, the exercise's versions)."""
    namespace = {}
    for cell in nbformat.read(SOLUTION, as_version=4).cells:
        if cell.cell_type == "code" and cell.source.startswith(("import", "def ")):
            source = strip_solutions(cell.source) if handed_out else cell.source
            exec(compile(source, str(SOLUTION), "exec"), namespace)
    return namespace


SOLVED = notebook_functions()
shard_indices = SOLVED["shard_indices"]
scale_for_workers = SOLVED["scale_for_workers"]
train_at_scale_as_solved = SOLVED["train_at_scale"]


BUGS = ("seed per rank", "no set_epoch", "batch norm", "summed gradients", "rank 0 steps")


def make_train_data_parallel(*bugs):
    """The debug exercise's function, fixed, with the named planted bugs put back."""

    def train_data_parallel(model, inputs, targets, world, global_batch, epochs, lr, seed=0):
        replicas = [copy.deepcopy(model) for _ in range(world)]
        stepping = replicas[:1] if "rank 0 steps" in bugs else replicas
        optimizers = [torch.optim.SGD(replica.parameters(), lr=lr) for replica in stepping]
        per_rank = global_batch // world
        for epoch in range(epochs):
            for replica in replicas:
                replica.train()
                for module in replica.modules():
                    if "batch norm" not in bugs and isinstance(module, nn.BatchNorm1d):
                        module.eval()
            shards = []
            for rank in range(world):
                shuffle_seed = seed
                shuffle_seed += rank if "seed per rank" in bugs else 0
                shuffle_seed += 0 if "no set_epoch" in bugs else epoch
                generator = torch.Generator().manual_seed(shuffle_seed)
                shards.append(torch.randperm(len(inputs), generator=generator)[rank::world])
            for step in range(len(shards[0]) // per_rank):
                for rank, replica in enumerate(replicas):
                    rows = shards[rank][step * per_rank : (step + 1) * per_rank]
                    loss = nn.functional.cross_entropy(replica(inputs[rows]), targets[rows])
                    replica.zero_grad()
                    loss.backward()
                for copies in zip(*(replica.parameters() for replica in replicas), strict=True):
                    total = sum(p.grad for p in copies)
                    average = total if "summed gradients" in bugs else total / world
                    for p in copies:
                        p.grad = average.clone()
                for optimizer in optimizers:
                    optimizer.step()
        return replicas

    return train_data_parallel


def train_at_scale(model, inputs, targets, global_batch, epochs, base_lr, base_batch, warmup=4):
    """The solution's recipe with its knobs exposed, to build the baseline and over-budget runs."""
    lr = base_lr * global_batch / base_batch
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    step = 0
    for epoch in range(epochs):
        order = torch.randperm(len(inputs), generator=torch.Generator().manual_seed(epoch))
        for start in range(0, len(inputs), global_batch):
            rows = order[start : start + global_batch]
            for group in optimizer.param_groups:
                group["lr"] = lr * min(1.0, (step + 1) / warmup)
            loss = nn.functional.cross_entropy(model(inputs[rows]), targets[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1
    return model


def recipe_unchanged(model, inputs, targets, global_batch, epochs, base_lr, base_batch):
    """The plain baseline: the one-device recipe's learning rate at the large global batch."""
    return train_at_scale(model, inputs, targets, global_batch, epochs, base_lr, global_batch, 1)


def recipe_at_its_own_batch(model, inputs, targets, global_batch, epochs, base_lr, base_batch):
    """Over budget: the recipe at its own small batch, 8 times the steps the workers allow."""
    return train_at_scale(model, inputs, targets, base_batch, epochs, base_lr, base_batch, 1)


def extra_epochs(model, inputs, targets, global_batch, epochs, base_lr, base_batch):
    """Over budget: the unscaled recipe at the large batch, for twice the epochs."""
    return train_at_scale(
        model, inputs, targets, global_batch, 2 * epochs, base_lr, global_batch, 1
    )


# --- the reference passes everything -------------------------------------------------------------------

REFERENCES = {
    "ch7.shard_indices": shard_indices,
    "ch7.scale_for_workers": scale_for_workers,
    "ch7.fastest_world_size": SOLVED["fastest_world_size"],
    "ch7.train_data_parallel": SOLVED["train_data_parallel"],
    "ch7.train_at_scale": train_at_scale_as_solved,
}


@pytest.mark.parametrize("exercise_id", sorted(REFERENCES))
def test_the_reference_passes_the_public_cases_with_praise(feedback, exercise_id):
    text = feedback(exercise_id, REFERENCES[exercise_id])
    exercise = find_exercise(exercise_id)
    assert f"passed ({len(exercise.public_params)}/{len(exercise.public_params)} cases)" in text
    assert exercise.praise in text and exercise.next_step in text


@pytest.mark.parametrize("exercise_id", sorted(REFERENCES))
def test_the_reference_passes_the_hidden_cases(exercise_id):
    params = hidden_params(exercise_id)
    assert params, f"no hidden cases for {exercise_id}"
    result = run_cases(exercise_id, REFERENCES[exercise_id], params)
    assert result.status == "passed", [(c.description, c.got, c.hint) for c in result.cases]


def test_the_hidden_cases_of_chapter_7_name_only_its_exercises():
    chapter_7 = {key for key in load_hidden_tests() if key.startswith("ch7.")}
    assert chapter_7 == set(REFERENCES)


# --- shard_indices -----------------------------------------------------------------------------------


def contiguous(order, rank, world):
    size = math.ceil(len(order) / world)
    return order[rank * size : (rank + 1) * size]


def dealt_without_filling_up(order, rank, world):
    return order[rank::world]


def dealt_after_dropping_the_tail(order, rank, world):
    return order[: len(order) // world * world][rank::world]


def filled_up_with_the_last(order, rank, world):
    total = math.ceil(len(order) / world) * world
    return (order + [order[-1]] * (total - len(order)))[rank::world]


def filled_up_from_the_end(order, rank, world):
    missing = math.ceil(len(order) / world) * world - len(order)
    return (order + (order[-missing:] if missing else []))[rank::world]


def filled_up_once(order, rank, world):
    """The reviewer's attempt: passes every case where the order is at least the world size."""
    missing = math.ceil(len(order) / world) * world - len(order)
    return (order + order[:missing])[rank::world]


def contiguous_after_filling_up(order, rank, world):
    per_rank = math.ceil(len(order) / world)
    padded = shard_indices(order, 0, 1) * world
    return padded[: per_rank * world][rank * per_rank : (rank + 1) * per_rank]


@pytest.mark.parametrize(
    "function, words",
    [
        (contiguous, "deals the order out like cards"),
        (dealt_without_filling_up, "every rank must get the same count"),
        (dealt_after_dropping_the_tail, "that is what drop_last=True does"),
        (filled_up_with_the_last, "does not fill up from the end of the order"),
        (filled_up_from_the_end, "does not fill up from the end of the order"),
        (filled_up_once, "the sampler repeats it as often as it takes"),
        (contiguous_after_filling_up, "then gave each rank a contiguous block"),
    ],
)
def test_shard_mistakes_are_named(feedback, function, words):
    assert words in feedback("ch7.shard_indices", function)


def test_filling_up_once_fails_a_public_case_that_says_why(feedback):
    text = feedback("ch7.shard_indices", filled_up_once)
    assert "2 examples, rank 4 of 5" in text and "contiguous" not in text
    assert "the sampler repeats it as often as it takes" in text


def test_the_count_is_judged_before_the_layout():
    """A contiguous block that comes out empty is told about the count first."""
    params = [{"length": 2, "rank": 4, "world": 5, "seed": 3}]
    (case,) = run_cases("ch7.shard_indices", contiguous, params).cases
    assert "rank 4 must read 1 index" in case.hint and "contiguous" not in case.hint


def test_shard_answers_are_shown_as_lists_with_brackets(feedback):
    text = feedback("ch7.shard_indices", filled_up_once)
    assert "got:      []" in text and "expected: [" in text


def test_a_wrong_shard_that_matches_no_mistake_still_gets_a_pointed_hint(feedback):
    def reversed_shard(order, rank, world):
        return shard_indices(order, rank, world)[::-1]

    def shifted_by_one(order, rank, world):
        return shard_indices(order, (rank + 1) % world, world)

    assert "in another order" in feedback("ch7.shard_indices", reversed_shard)
    assert "the count is right, the indices are not" in feedback(
        "ch7.shard_indices", shifted_by_one
    )


def test_shard_mistakes_get_a_nudge_first(feedback):
    text = feedback("ch7.shard_indices", dealt_without_filling_up, attempt=1)
    assert "count the indices each rank gets" in text
    assert "every rank must get the same count" not in text


def test_a_tensor_of_indices_is_read_as_its_list(feedback):
    def as_tensor(order, rank, world):
        return torch.tensor(shard_indices(order, rank, world))

    assert "passed (4/4 cases)" in feedback("ch7.shard_indices", as_tensor)


def test_a_very_short_order_is_filled_up_more_than_once():
    result = run_cases(
        "ch7.shard_indices", shard_indices, [{"length": 2, "rank": 4, "world": 5, "seed": 3}]
    )
    assert result.status == "passed"
    wrong = run_cases(
        "ch7.shard_indices",
        lambda order, rank, world: (order + order)[rank::world][:1],
        [{"length": 2, "rank": 4, "world": 5, "seed": 3}],
    )
    assert wrong.status == "failed"


# --- scale_for_workers ---------------------------------------------------------------------------------


def scaled_mistake(steps_rule, lr_rule):
    def scale(examples, per_worker_batch, workers, base_lr, base_batch):
        global_batch = per_worker_batch * workers
        return steps_rule(examples, per_worker_batch, global_batch), lr_rule(
            base_lr, per_worker_batch, workers, global_batch, base_batch
        )

    return scale


def right_steps(examples, per_worker, global_batch):
    return math.ceil(examples / global_batch)


def right_lr(base_lr, per_worker, workers, global_batch, base_batch):
    return base_lr * global_batch / base_batch


@pytest.mark.parametrize(
    "function, words",
    [
        (scaled_mistake(right_steps, lambda lr, *_: lr), "the learning rate is not"),
        (
            scaled_mistake(lambda n, b, g: math.ceil(n / b), right_lr),
            "count steps with the global batch",
        ),
        (
            scaled_mistake(right_steps, lambda lr, b, w, g, base: lr * w),
            "not with the number of workers",
        ),
        (
            scaled_mistake(right_steps, lambda lr, b, w, g, base: lr * b / base),
            "the global one, not the per-worker one",
        ),
        (scaled_mistake(lambda n, b, g: n // g, right_lr), "round up"),
        (
            scaled_mistake(right_steps, lambda lr, b, w, g, base: lr * math.sqrt(g / base)),
            "square-root scaling",
        ),
        (
            scaled_mistake(right_steps, lambda lr, b, w, g, base: 3 * lr),
            "times the rule's",
        ),
        (
            scaled_mistake(lambda n, b, g: n // g + 2, right_lr),
            "the learning rate is right; the steps are not",
        ),
    ],
)
def test_scaling_mistakes_are_named(feedback, function, words):
    assert words in feedback("ch7.scale_for_workers", function)


def test_the_worked_example_of_the_prompt_is_not_a_check_case():
    exercise = find_exercise("ch7.scale_for_workers")
    assert all(
        (p["examples"], p["workers"], p["per_worker_batch"]) != (1000, 8, 16)
        for p in exercise.public_params
    )


# --- fastest_world_size ------------------------------------------------------------------------------


def fastest_with(
    passes=2,
    bytes_per_parameter=4,
    share_of_gradient=True,
    latency=True,
    shard=True,
    even=True,
    messages=lambda w: 2 * (w - 1),
    bytes_per_gb=1e9,
    extra_ms=0.0,
):
    """A learner's fastest_world_size; each keyword away from its default is one mistake."""

    def fastest(parameters, batch, fixed_ms, per_example_ms, gb_per_s, latency_ms, max_workers):
        times = {}
        for w in range(1, max_workers + 1):
            if even and batch % w:
                continue
            compute = fixed_ms + per_example_ms * (batch / w if shard else batch)
            sent = (w - 1) / w if share_of_gradient else w - 1
            gradient = bytes_per_parameter * parameters / (gb_per_s * bytes_per_gb) * 1000
            times[w] = (
                compute
                + passes * sent * gradient
                + (messages(w) * latency_ms if latency else 0)
                + (extra_ms if w > 1 else 0)
            )
        best = min(times, key=times.get)
        return best, times[best]

    return fastest


@pytest.mark.parametrize(
    "function, words",
    [
        (fastest_with(latency=False), "without the latency term"),
        (fastest_with(bytes_per_parameter=1), "count its bytes, not its elements"),
        (fastest_with(passes=1), "moves the gradient twice"),
        (fastest_with(share_of_gradient=False), "not W - 1 whole copies"),
        (fastest_with(shard=False), "each worker computes on its shard"),
        (fastest_with(even=False), "divide the global batch"),
        (fastest_with(messages=lambda w: w - 1), "you counted W - 1 latencies"),
        (fastest_with(messages=math.log2), "you counted log2(W) latencies"),
        (fastest_with(bytes_per_gb=2**30), "a GiB"),
        (fastest_with(extra_ms=3.0), "too long: a term is too large"),
        (fastest_with(messages=lambda w: 0.5 * (w - 1)), "too short: a term is missing"),
    ],
)
def test_cost_model_mistakes_are_named(feedback, function, words):
    assert words in feedback("ch7.fastest_world_size", function)


def test_the_worked_estimate_of_the_prompt_is_not_a_check_case():
    exercise = find_exercise("ch7.fastest_world_size")
    assert all(p["parameters"] != 100_000_000 for p in exercise.public_params)


def test_a_correct_cost_model_written_independently_passes(feedback):
    assert "passed (2/2 cases)" in feedback("ch7.fastest_world_size", fastest_with())


# --- train_data_parallel: each planted bug fails its own case --------------------------------------------

OWN_CHECK = {
    "seed per rank": "shards",
    "no set_epoch": "epochs",
    "batch norm": "batch_norm",
    "summed gradients": "averaging",
    "rank 0 steps": "replicas",
}
NAMED = {
    "seed per rank": "each rank draws a permutation of its own",
    "no set_epoch": "every epoch replays epoch 0's order",
    "batch norm": "statistics of its own shard",
    "summed gradients": "were added up where",
    "rank 0 steps": "some replicas never step",
}


def debug_params(exercise_id="ch7.train_data_parallel"):
    return list(find_exercise(exercise_id).public_params) + hidden_params(exercise_id)


@pytest.mark.parametrize("bug", BUGS)
def test_each_planted_bug_alone_fails_exactly_its_own_cases_and_the_outcome(bug):
    params = debug_params()
    result = run_cases("ch7.train_data_parallel", make_train_data_parallel(bug), params)
    failing = [
        p["check"] for p, case in zip(params, result.cases, strict=True) if case.status != "passed"
    ]
    should_fail = [p["check"] for p in params if p["check"] in (OWN_CHECK[bug], "outcome")]
    assert failing == should_fail


SYMPTOMS = {  # what the first failed check shows: the check's name, as a symptom
    "seed per rank": "no example is read by two ranks",
    "no set_epoch": "epoch 1 reads the examples in another order",
    "batch norm": "do not depend on which examples share a shard",
    "summed gradients": "the first step, and .grad",
    "rank 0 steps": "every replica's weights have moved",
}


@pytest.mark.parametrize("bug", BUGS)
def test_each_planted_bug_is_named_in_the_hint_and_nudged_first(feedback, bug):
    function = make_train_data_parallel(bug)
    first, second, third = (
        feedback("ch7.train_data_parallel", function, attempt=attempt) for attempt in (1, 2, 3)
    )
    assert NAMED[bug] in third
    assert NAMED[bug] not in first and NAMED[bug] not in second
    assert SYMPTOMS[bug] in first and "expected:" not in first and "got:" not in first
    assert "expected:" in second


def test_the_first_check_of_the_handed_out_code_lists_symptoms_only(feedback):
    handed_out = notebook_functions(handed_out=True)["train_data_parallel"]
    text = feedback("ch7.train_data_parallel", handed_out, attempt=1)
    for words in ("both read", "epoch 0's batches again", "training mode", "times the size"):
        assert words not in text
    assert all(symptom in text for symptom in SYMPTOMS.values())


def test_no_debug_hint_dictates_the_fix(feedback):
    text = feedback("ch7.train_data_parallel", make_train_data_parallel(*BUGS), attempt=3)
    for dictated in ("the same seed on every rank", "back in eval mode", "put its BatchNorm"):
        assert dictated not in text


def summed_gradients_with_a_smaller_lr(
    model, inputs, targets, world, global_batch, epochs, lr, seed=0
):
    """The reviewer's attempt: .grad keeps the sum, the learning rate is divided by the world."""
    train = make_train_data_parallel("summed gradients")
    return train(model, inputs, targets, world, global_batch, epochs, lr / world, seed)


def test_summed_gradients_with_the_learning_rate_divided_fail_the_averaging_case():
    params = debug_params()
    result = run_cases("ch7.train_data_parallel", summed_gradients_with_a_smaller_lr, params)
    failing = {
        p["check"] for p, case in zip(params, result.cases, strict=True) if case.status != "passed"
    }
    assert failing == {"averaging"}
    (case,) = [c for p, c in zip(params, result.cases, strict=True) if p["check"] == "averaging"][
        :1
    ]
    assert "holds 2 times the average, the sum" in case.hint


def test_an_unusual_correct_fix_passes(feedback):
    """One optimizer on rank 0, its weights copied to the others after each step; eval() for the
    replicas instead of freezing BatchNorm layer by layer."""

    def synced_from_rank_0(model, inputs, targets, world, global_batch, epochs, lr, seed=0):
        replicas = [copy.deepcopy(model).eval() for _ in range(world)]
        optimizer = torch.optim.SGD(replicas[0].parameters(), lr=lr)
        per_rank = global_batch // world
        for epoch in range(epochs):
            order = torch.randperm(
                len(inputs), generator=torch.Generator().manual_seed(seed + epoch)
            )
            for step in range(len(inputs) // global_batch):
                for rank, replica in enumerate(replicas):
                    rows = order[rank::world][step * per_rank : (step + 1) * per_rank]
                    replica.zero_grad()
                    nn.functional.cross_entropy(replica(inputs[rows]), targets[rows]).backward()
                for copies in zip(*(replica.parameters() for replica in replicas), strict=True):
                    average = torch.stack([p.grad for p in copies]).mean(0)
                    for p in copies:
                        p.grad = average.clone()
                optimizer.step()
                with torch.no_grad():
                    for replica in replicas[1:]:
                        for mine, first in zip(
                            replica.parameters(), replicas[0].parameters(), strict=True
                        ):
                            mine.copy_(first)
        return replicas

    assert "passed (6/6 cases)" in feedback("ch7.train_data_parallel", synced_from_rank_0)


def test_the_broken_function_as_handed_out_fails_every_case(feedback):
    handed_out = notebook_functions(handed_out=True)["train_data_parallel"]
    assert "6 of 6 cases failed" in feedback("ch7.train_data_parallel", handed_out)
    assert "6 of 6 cases failed" in feedback(
        "ch7.train_data_parallel", make_train_data_parallel(*BUGS)
    )


def test_the_test_copy_without_bugs_passes(feedback):
    assert "passed (6/6 cases)" in feedback("ch7.train_data_parallel", make_train_data_parallel())


def test_returning_something_else_than_the_replicas_is_explained(feedback):
    def returns_the_model(model, inputs, targets, world, global_batch, epochs, lr, seed=0):
        make_train_data_parallel()(model, inputs, targets, world, global_batch, epochs, lr, seed)
        return model.state_dict()

    assert "return the list of replicas" in feedback(
        "ch7.train_data_parallel", returns_the_model, attempt=3
    )


# --- train_at_scale: target on hidden data, within the budget -------------------------------------------


def experiment_params():
    return list(find_exercise("ch7.train_at_scale").public_params) + hidden_params(
        "ch7.train_at_scale"
    )


@pytest.mark.parametrize("index", range(3))
def test_the_plain_baseline_misses_the_target_on_every_split(index):
    params = experiment_params()
    if index >= len(params):
        pytest.skip("fewer splits")
    result = run_cases("ch7.train_at_scale", recipe_unchanged, [params[index]])
    (case,) = result.cases
    assert case.status == "failed" and "how far" in case.hint, case.got
    assert "linear scaling" not in case.hint and "warm-up" not in case.hint


@pytest.mark.parametrize("function", [recipe_at_its_own_batch, extra_epochs])
def test_an_over_budget_run_fails_even_when_accurate(feedback, function):
    text = feedback("ch7.train_at_scale", function)
    assert "went over its budget" in text


def test_training_a_copy_counts_against_the_budget(feedback):
    def sweep_on_copies(model, inputs, targets, global_batch, epochs, base_lr, base_batch):
        for factor in (1, 2, 4, 8):
            trial = copy.deepcopy(model)
            train_at_scale(
                trial, inputs, targets, global_batch, epochs, base_lr * factor / 8, base_batch
            )
        return train_at_scale(model, inputs, targets, global_batch, epochs, base_lr, base_batch)

    assert "went over its budget" in feedback("ch7.train_at_scale", sweep_on_copies)


# --- through the batch grader: probes sent as source to a kernel, judged here ---------------------------


@pytest.mark.slow
def test_the_grader_gives_the_solution_full_points_and_the_handed_out_code_none(tmp_path):
    name = "07_scaling_out"
    solution = nbformat.read(SOLUTION, as_version=4)
    handed_out = exercise_notebook(solution, name)
    solved = nbformat.from_dict(handed_out)
    for cell, source in zip(solved.cells, solution.cells, strict=True):
        cell.source = source.source
    hidden = load_hidden_tests()
    grades = {}
    for label, notebook in (("solved", solved), ("handed", handed_out)):
        path = tmp_path / f"{label}__{name}.ipynb"
        nbformat.write(notebook, path)
        grades[label] = grade_submission(path, hidden=hidden)
    assert grades["solved"].status == "ok", grades["solved"].detail
    assert grades["solved"].total == grades["solved"].max_points == 8
    assert grades["handed"].total == 0
    debug = next(r for r in grades["handed"].results if r["exercise_id"].endswith("parallel"))
    assert debug["status"] == "failed"  # run and failed, not merely not attempted


def small_batches_layer_by_layer(model, inputs, targets, global_batch, epochs, base_lr, base_batch):
    """Over budget, calling the layers one by one instead of the network."""
    optimizer = torch.optim.SGD(model.parameters(), lr=base_lr, momentum=0.9)
    for start in range(0, epochs * len(inputs), base_batch):
        rows = torch.arange(start, start + base_batch) % len(inputs)
        outputs = inputs[rows]
        for layer in model:
            outputs = layer(outputs)
        loss = nn.functional.cross_entropy(outputs, targets[rows])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model


def small_batches_after_replacing_the_first_layer(
    model, inputs, targets, global_batch, epochs, base_lr, base_batch
):
    """Over budget, with the network's first layer replaced by a fresh one."""
    model[0] = nn.Linear(model[0].in_features, model[0].out_features)
    return recipe_at_its_own_batch(
        model, inputs, targets, global_batch, epochs, base_lr, base_batch
    )


@pytest.mark.parametrize(
    "function", [small_batches_layer_by_layer, small_batches_after_replacing_the_first_layer]
)
def test_the_budget_cannot_be_dodged_by_going_around_the_network(feedback, function):
    assert "went over its budget" in feedback("ch7.train_at_scale", function)


def trained_in_a_fresh_network(model, inputs, targets, global_batch, epochs, base_lr, base_batch):
    """The reviewer's dodge: the weights copied into a network built here, trained at the
    recipe's own batch (8 times the steps), copied back."""
    fresh = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 4))
    fresh.load_state_dict(model.state_dict())
    recipe_at_its_own_batch(fresh, inputs, targets, global_batch, 8 * epochs, base_lr, base_batch)
    model.load_state_dict(fresh.state_dict())
    return model


def hand_written_forward(model, inputs, targets, global_batch, epochs, base_lr, base_batch):
    """The reviewer's other dodge: the layers' weights used directly, never calling a module."""
    optimizer = torch.optim.SGD(model.parameters(), lr=base_lr, momentum=0.9)
    for start in range(0, 32 * len(inputs), base_batch):
        rows = torch.arange(start, start + base_batch) % len(inputs)
        hidden = nn.functional.linear(inputs[rows], model[0].weight, model[0].bias).relu()
        outputs = nn.functional.linear(hidden, model[2].weight, model[2].bias)
        loss = nn.functional.cross_entropy(outputs, targets[rows])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model


@pytest.mark.parametrize("function", [trained_in_a_fresh_network, hand_written_forward])
def test_the_budget_counts_every_network_and_every_forward(function):
    params = experiment_params()
    result = run_cases("ch7.train_at_scale", function, params)
    for case in result.cases:
        assert case.status == "failed" and "went over its budget" in case.hint, case.got


def test_a_pass_shows_the_score_and_the_bar(feedback):
    text = feedback("ch7.train_at_scale", train_at_scale_as_solved)
    assert (
        "on the check's validation split" in text
        and "(needed: >= 72% within 16 steps of 256)" in text
    )


def half_the_scaling(model, inputs, targets, global_batch, epochs, base_lr, base_batch):
    """A learning rate scaled by 2 instead of 8: the weights still travel too little."""
    return train_at_scale(
        model, inputs, targets, global_batch, epochs, 2 * base_lr, global_batch, 1
    )


def test_half_hearted_scaling_misses_the_target_on_every_split():
    result = run_cases("ch7.train_at_scale", half_the_scaling, experiment_params())
    assert all(case.status == "failed" and "how far" in case.hint for case in result.cases)
