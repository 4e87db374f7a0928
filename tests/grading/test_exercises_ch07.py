"""Chapter 7's exercises: the reference solutions pass every public and hidden case, each planted
bug fails its own case and is named, and the experiment's budget and baseline are enforced.

Hidden cases come from where the grader reads them: COURSE_HIDDEN_TESTS, else the package's file
(COURSE_HIDDEN_TESTS=/work/hidden/ch07.json before the lead merges it).
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


@pytest.mark.parametrize(
    "function, words",
    [
        (contiguous, "deals the order out like cards"),
        (dealt_without_filling_up, "every rank must get the same count"),
        (dealt_after_dropping_the_tail, "that is what drop_last=True does"),
        (filled_up_with_the_last, "does not fill up with the last index"),
    ],
)
def test_shard_mistakes_are_named(feedback, function, words):
    assert words in feedback("ch7.shard_indices", function)


def test_shard_mistakes_get_a_nudge_first(feedback):
    text = feedback("ch7.shard_indices", dealt_without_filling_up, attempt=1)
    assert "count the indices each rank gets" in text
    assert "every rank must get the same count" not in text


def test_a_tensor_of_indices_is_read_as_its_list(feedback):
    def as_tensor(order, rank, world):
        return torch.tensor(shard_indices(order, rank, world))

    assert "passed (3/3 cases)" in feedback("ch7.shard_indices", as_tensor)


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
    ],
)
def test_scaling_mistakes_are_named(feedback, function, words):
    assert words in feedback("ch7.scale_for_workers", function)


# --- fastest_world_size ------------------------------------------------------------------------------


def fastest_with(
    passes=2, bytes_per_parameter=4, share_of_gradient=True, latency=True, shard=True, even=True
):
    """A learner's fastest_world_size; each keyword away from its default is one mistake."""

    def fastest(parameters, batch, fixed_ms, per_example_ms, gb_per_s, latency_ms, max_workers):
        times = {}
        for w in range(1, max_workers + 1):
            if even and batch % w:
                continue
            compute = fixed_ms + per_example_ms * (batch / w if shard else batch)
            sent = (w - 1) / w if share_of_gradient else w - 1
            gradient = bytes_per_parameter * parameters / (gb_per_s * 1e9) * 1000
            times[w] = (
                compute + passes * sent * gradient + (2 * (w - 1) * latency_ms if latency else 0)
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
    ],
)
def test_cost_model_mistakes_are_named(feedback, function, words):
    assert words in feedback("ch7.fastest_world_size", function)


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
    "seed per rank": "the same seed on every rank",
    "no set_epoch": "every epoch replays epoch 0's order",
    "batch norm": "statistics of its own shard",
    "summed gradients": "not their sum",
    "rank 0 steps": "every rank takes the optimizer step",
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


@pytest.mark.parametrize("bug", BUGS)
def test_each_planted_bug_is_named_in_the_hint_and_nudged_first(feedback, bug):
    function = make_train_data_parallel(bug)
    assert NAMED[bug] in feedback("ch7.train_data_parallel", function)
    assert NAMED[bug] not in feedback("ch7.train_data_parallel", function, attempt=1)


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

    assert "return the list of replicas" in feedback("ch7.train_data_parallel", returns_the_model)


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
    assert case.status == "failed" and "linear scaling rule" in case.hint, case.got


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
