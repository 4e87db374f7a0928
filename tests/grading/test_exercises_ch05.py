"""Chapter 5 exercises: the reference passes every case, each likely mistake is named, each
planted bug fails its own case, and the experiment's budget and hidden split hold."""

from pathlib import Path

import nbformat
import numpy as np
import pytest
import torch
from torch import nn

from course_lib.data import Split
from course_lib.grading.batch import load_hidden_tests
from course_lib.grading.exercise_index import find_exercise
from course_lib.grading.exercises import ch05
from course_lib.grading.runner import report, run_exercise
from course_lib.train import fit
from course_lib.transfer import freeze, load_backbone, replace_head, unfreeze

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Cases are sized for one thread (a grading kernel may get no more)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def solutions() -> dict:
    """The reference functions, run from the solution notebook's code cells."""
    notebook = nbformat.read(ROOT / "solutions" / "05_transfer_learning.ipynb", as_version=4)
    namespace: dict = {}
    for cell in notebook.cells:
        runnable = "check(" not in cell.source and "google.colab" not in cell.source
        if cell.cell_type == "code" and runnable:
            exec(cell.source, namespace)
    return namespace


def hidden_cases(exercise) -> list:
    """The package's hidden cases (or COURSE_HIDDEN_TESTS's), never skipped when absent."""
    cases = load_hidden_tests().get(exercise.id, [])
    assert cases, f"no hidden cases for {exercise.id}"
    return [exercise.make_case(p) for p in cases]


def judged(exercise_id, function, cases=None, attempt=2, time_limit=10.0) -> str:
    exercise = find_exercise(exercise_id)
    cases = exercise.public_cases() if cases is None else cases
    return report(run_exercise(exercise, function, cases, time_limit), exercise, attempt)


# --- the reference solution ----------------------------------------------------------------------


@pytest.mark.parametrize("exercise", ch05.EXERCISES, ids=lambda e: e.id)
def test_the_reference_passes_every_public_and_hidden_case(exercise, solutions):
    hidden = hidden_cases(exercise)
    assert hidden, f"{exercise.id} has no hidden case"
    cases = exercise.public_cases() + hidden
    text = judged(exercise.id, solutions[exercise.function_name], cases)
    assert f"passed ({len(cases)}/{len(cases)} cases)" in text, text


def test_the_chapter_has_each_kind_and_fits_its_time():
    kinds = {exercise.kind for exercise in ch05.EXERCISES}
    assert {"derive", "debug", "experiment"} <= kinds
    assert sum(exercise.minutes for exercise in ch05.EXERCISES) <= 45


# --- ch5.freeze_all_but_head ---------------------------------------------------------------------


def _keep_in_eval(layer, inputs):
    layer.eval()  # returns None: a value returned by a pre-hook would replace the inputs


def _freeze_head_only(model, batchnorm="hook", count=lambda ps: sum(p.numel() for p in ps)):
    for parameter in model.parameters():
        parameter.requires_grad = False
    for parameter in model.fc.parameters():
        parameter.requires_grad = True
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            if batchnorm == "hook":
                module.register_forward_pre_hook(_keep_in_eval)
            elif batchnorm == "eval":
                module.eval()  # undone by the next model.train()
    return count([p for p in model.parameters() if p.requires_grad])


def test_freezing_checks_name_batchnorm_and_counting_mistakes(feedback):
    def course_freeze(model):
        unfreeze(freeze(model), "fc")
        return np.int64(sum(p.numel() for p in model.parameters() if p.requires_grad))

    assert "passed (2/2 cases)" in feedback("ch5.freeze_all_but_head", _freeze_head_only)
    assert "passed (2/2 cases)" in feedback("ch5.freeze_all_but_head", course_freeze)
    for batchnorm in ("none", "eval"):
        text = feedback("ch5.freeze_all_but_head", lambda m, b=batchnorm: _freeze_head_only(m, b))
        assert "model.train() undoes .eval()" in text and "re-apply eval mode" in text
        nudge = feedback(
            "ch5.freeze_all_but_head", lambda m, b=batchnorm: _freeze_head_only(m, b), attempt=1
        )
        assert "section 2" in nudge and "re-apply" not in nudge
    tensors = feedback("ch5.freeze_all_but_head", lambda m: _freeze_head_only(m, count=len))
    assert "count numbers, not tensors" in tensors

    def everything(model):
        _freeze_head_only(model)
        return sum(p.numel() for p in model.parameters())

    assert "not all of them" in feedback("ch5.freeze_all_but_head", everything)

    def returns_the_model(model):
        _freeze_head_only(model)
        return model

    assert "returns a count, not the model" in feedback(
        "ch5.freeze_all_but_head", returns_the_model
    )

    def head_frozen_too(model):
        count = _freeze_head_only(model)
        model.fc.requires_grad_(False)
        return count

    assert "froze the new head as well" in feedback("ch5.freeze_all_but_head", head_frozen_too)


@pytest.mark.parametrize("setting", [("momentum", 0.0), ("track_running_stats", False)])
def test_batchnorm_kept_still_but_in_train_mode_fails(feedback, setting):
    """Statistics that do not move are not enough: in train mode BatchNorm uses batch statistics."""

    def still(model):
        count = _freeze_head_only(model, batchnorm="none")
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                setattr(module, *setting)
        return count

    text = feedback("ch5.freeze_all_but_head", still)
    assert "ran in train mode" in text and "re-apply eval mode" in text


def test_freezing_names_a_float_and_a_pre_hook_that_returns_the_module(feedback):
    text = feedback("ch5.freeze_all_but_head", lambda m: float(_freeze_head_only(m)))
    assert "got:      1290.0" in text and "a float, not a whole number" in text

    def returning_hook(model):
        count = _freeze_head_only(model, batchnorm="none")
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.register_forward_pre_hook(lambda m, i: m.eval())
        return count

    text = feedback("ch5.freeze_all_but_head", returning_hook)
    assert "the forward pass failed" in text and "replaces the layer's input" in text


def test_each_failing_freeze_verdict_has_its_own_nudge(feedback):
    """The first attempt's nudge fits the mistake, not always BatchNorm's."""
    tensors = feedback("ch5.freeze_all_but_head", lambda m: _freeze_head_only(m, count=len), 1)
    assert "how many numbers does one weight tensor hold?" in tensors
    assert "section 2" not in tensors


# --- ch5.blocks_to_unfreeze (derive) -------------------------------------------------------------


def _blocks(
    model,
    budget,
    per_number=12,
    order="top-down",
    skip=False,
    strict=False,
    head=True,
    buffers=False,
):
    def size(block):
        numbers = block.state_dict().values() if buffers else block.parameters()
        return sum(t.numel() for t in numbers)

    blocks = [(n, size(b)) for n, b in model.named_children()]
    # top-down: from the head; otherwise the head, then from the input up
    blocks = blocks[::-1] if order == "top-down" else [blocks[-1], *blocks[:-1]]
    chosen, used = [], 0
    for name, size in blocks:
        fits = used + size * per_number < budget if strict else used + size * per_number <= budget
        if fits:
            chosen.append(name)
            used += size * per_number
        elif not skip:
            break
    return chosen if head else [n for n in chosen if n != "fc"]


@pytest.mark.parametrize(
    ("mistake", "named"),
    [
        ({"per_number": 4}, "backward() leaves one thing, Adam keeps two more"),
        ({"per_number": 8}, "backward() leaves one thing, Adam keeps two more"),
        ({"per_number": 16}, "the weights are in memory whether they train or not"),
        ({"order": "bottom-up"}, "fine-tune from the head downwards"),
        ({"skip": True}, "stop at the first block that does not fit"),
        ({"strict": True}, "meets the budget exactly still fits"),
        ({"head": False}, "the head is missing"),
        ({"buffers": True}, "running_mean and running_var too: they are buffers"),
    ],
)
def test_block_budget_checks_name_each_mistake(feedback, mistake, named):
    text = feedback(
        "ch5.blocks_to_unfreeze", lambda model, budget: _blocks(model, budget, **mistake)
    )
    assert "failed" in text and named in text, text
    nudge = feedback(
        "ch5.blocks_to_unfreeze", lambda model, budget: _blocks(model, budget, **mistake), attempt=1
    )
    assert named not in nudge


def test_block_budget_accepts_blocks_without_weights_and_refuses_unknown_names(feedback):
    assert "passed (2/2 cases)" in feedback("ch5.blocks_to_unfreeze", _blocks)

    def with_avgpool(model, budget):
        return [*_blocks(model, budget), "avgpool", "relu"]

    assert "passed (2/2 cases)" in feedback("ch5.blocks_to_unfreeze", with_avgpool)
    made_up = feedback("ch5.blocks_to_unfreeze", lambda m, b: ["fc", "layer4.0.conv1"])
    assert "not top-level blocks" in made_up
    counted = feedback("ch5.blocks_to_unfreeze", lambda m, b: 2)
    assert "a list of block names" in counted


# --- ch5.param_groups ----------------------------------------------------------------------------


def _groups(model, head_lr, decay, blocks=("fc", "layer4", "layer3"), reverse=False, freeze=True):
    for name, parameter in model.named_parameters():
        parameter.requires_grad = name.split(".")[0] in blocks or not freeze
    rates = [head_lr * decay**depth for depth in range(len(blocks))]
    rates = rates[::-1] if reverse else rates
    return [
        {"params": getattr(model, block).parameters(), "lr": rate}
        for block, rate in zip(blocks, rates, strict=True)
    ]


def test_param_group_checks_name_reversed_rates_missing_blocks_and_unfrozen_ones(feedback):
    assert "passed (2/2 cases)" in feedback("ch5.param_groups", _groups)
    reversed_rates = feedback("ch5.param_groups", lambda m, h, d: _groups(m, h, d, reverse=True))
    assert "the rates are reversed" in reversed_rates
    two_blocks = feedback("ch5.param_groups", lambda m, h, d: _groups(m, h, d, ("fc", "layer4")))
    assert "layer3 is missing" in two_blocks
    unfrozen = feedback("ch5.param_groups", lambda m, h, d: _groups(m, h, d, freeze=False))
    assert "requires_grad = False on every parameter outside fc, layer4 and layer3" in unfrozen

    def same_rate_below(model, head_lr, decay):
        groups = _groups(model, head_lr, decay)
        groups[2]["lr"] = groups[1]["lr"]
        return groups

    same = feedback("ch5.param_groups", same_rate_below)
    assert "layer3 should train at" in same and "times the rate of the block above it" in same

    def named(model, head_lr, decay):
        return [{"params": list(model.fc.named_parameters()), "lr": head_lr}]

    assert "named_parameters()" in feedback("ch5.param_groups", named)
    assert "a list of dicts" in feedback("ch5.param_groups", lambda m, h, d: {"fc": h})


def test_param_groups_accept_one_group_per_tensor(feedback):
    """Any grouping an optimizer takes is fine, as long as each tensor gets its block's rate."""

    def per_tensor(model, head_lr, decay):
        groups = _groups(model, head_lr, decay)
        return [{"params": [p], "lr": g["lr"]} for g in groups for p in g["params"]]

    assert "passed (2/2 cases)" in feedback("ch5.param_groups", per_tensor)


# --- ch5.train_head ------------------------------------------------------------------------------


def test_head_checks_measure_accuracy_and_name_the_head_size(feedback):
    untrained = feedback("ch5.train_head", lambda features: nn.Linear(128, 10))
    assert "chance level" in untrained and "the head is not trained" in untrained
    wrong_size = feedback("ch5.train_head", lambda features: nn.Linear(64, 10))
    assert "not on images" in wrong_size
    too_many = feedback("ch5.train_head", lambda features: nn.Linear(128, 1000))
    assert "one score per digit class" in too_many

    def fit_defaults(features):
        head = nn.Linear(128, 10)
        optimizer = torch.optim.Adam(head.parameters(), lr=1e-3)
        fit(
            head,
            features,
            optimizer=optimizer,
            loss_fn=nn.CrossEntropyLoss(),
            epochs=10,
            progress=False,
        )
        return head

    assert "undertrained" in feedback("ch5.train_head", fit_defaults)


def test_a_head_that_outputs_probabilities_is_refused(feedback, solutions):
    def softmax_head(features):
        head = solutions["train_head"](features)
        return nn.Sequential(head, nn.Softmax(dim=1))

    text = feedback("ch5.train_head", softmax_head)
    assert "your head ends in a softmax" in text


def test_the_public_head_case_is_scored_on_validation_digits():
    exercise = find_exercise("ch5.train_head")
    assert [p["scored_on"] for p in exercise.public_params] == ["validation"]
    for case in hidden_cases(exercise):
        assert case.probe.arguments[-1] == "test"


# --- ch5.fine_tune (debug): each planted bug fails its own case ----------------------------------

BUG_CASES = {
    "optimizer": "the new head's weights change during training",
    "drift": "the earlier blocks stay frozen",
    "softmax": "the loss is computed on the logits",
    "train mode": "the model is returned ready to predict",
}
BUG_HINTS = {
    "optimizer": "the optimizer holds the parameters that existed when it was built",
    "drift": "requires_grad = False stops the gradients, not BatchNorm",
    "softmax": "CrossEntropyLoss applies log-softmax itself",
    "train mode": "switch it to eval mode before returning it",
}


def fine_tune_with(*bugs):
    """The exercise's fine_tune, fixed except for ``bugs`` (the notebook's planted ones)."""

    def fine_tune(model, labelled, epochs=30):
        if "optimizer" in bugs:  # built before the new head exists
            optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        replace_head(model, 10)
        if "drift" in bugs:  # requires_grad alone: frozen BatchNorm layers still update
            for name, parameter in model.named_parameters():
                parameter.requires_grad = name.startswith(("layer4.", "fc."))
        else:
            unfreeze(freeze(model), "layer4", "fc")
        if "optimizer" not in bugs:
            optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], 1e-3)
        loss_fn = nn.CrossEntropyLoss()
        for _ in range(epochs):
            model.train()
            output = model(labelled.inputs)
            if "softmax" in bugs:
                output = output.softmax(dim=1)
            loss = loss_fn(output, labelled.targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        return model if "train mode" in bugs else model.eval()

    return fine_tune


def _failed_cases(text: str) -> set[str]:
    return {
        title
        for title in [*BUG_CASES.values(), "the fine-tuned model's accuracy"]
        if f"✗ {title}" in text
    }


def test_the_fixed_function_passes_and_the_given_one_fails_every_bug_case(feedback, solutions):
    assert "passed (6/6 cases)" in feedback("ch5.fine_tune", fine_tune_with())
    broken = feedback("ch5.fine_tune", fine_tune_with(*BUG_CASES), attempt=3)
    assert set(BUG_CASES.values()) <= _failed_cases(broken)
    for hint in BUG_HINTS.values():
        assert hint in broken


def test_the_notebook_hands_out_the_four_bugs(solutions):
    """The code handed out (the EXERCISE part, uncommented) fails every case: no free points."""
    from course_lib.tools.assign import strip_solutions

    notebook = nbformat.read(ROOT / "solutions" / "05_transfer_learning.ipynb", as_version=4)
    [cell] = [c for c in notebook.cells if c.source.startswith("def fine_tune(")]
    namespace = dict(solutions)
    exec(strip_solutions(cell.source), namespace)
    exercise = find_exercise("ch5.fine_tune")
    cases = exercise.public_cases() + hidden_cases(exercise)
    text = judged("ch5.fine_tune", namespace["fine_tune"], cases)
    # every case but "layer4 trains" (it does, in the given code), the outcome too
    assert f"{len(cases) - 1} of {len(cases)} cases failed" in text, text


@pytest.mark.parametrize("bug", BUG_CASES)
def test_each_planted_bug_alone_fails_its_own_case_and_names_it(feedback, bug):
    text = feedback("ch5.fine_tune", fine_tune_with(bug), attempt=3)
    failed = _failed_cases(text) & set(BUG_CASES.values())
    assert failed == {BUG_CASES[bug]}, text
    assert BUG_HINTS[bug] in text
    assert BUG_HINTS[bug] not in feedback("ch5.fine_tune", fine_tune_with(bug), attempt=2)


def test_fine_tune_checks_ask_for_the_model_and_a_new_head(feedback):
    def untouched(model, labelled, epochs=30):
        return model

    text = feedback("ch5.fine_tune", untouched, attempt=3)
    assert "the model never ran with gradients" in text
    assert "it needs a new one for the 10 digits" in text

    def returns_nothing(model, labelled, epochs=30):
        fine_tune_with()(model, labelled, epochs)

    assert "return the model you fine-tuned" in feedback(
        "ch5.fine_tune", returns_nothing, attempt=3
    )


def test_a_fine_tune_that_leaves_layer4_frozen_fails(feedback):
    """The recipe trains layer4: freezing it (or leaving it out of the optimizer) fails a case."""

    def head_only(model, labelled, epochs=30):
        replace_head(model, 10)
        unfreeze(freeze(model), "layer4", "fc")
        optimizer = torch.optim.Adam(model.fc.parameters(), lr=1e-2)
        for _ in range(epochs):
            model.train()
            loss = nn.functional.cross_entropy(model(labelled.inputs), labelled.targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        return model.eval()

    text = feedback("ch5.fine_tune", head_only, attempt=3)
    assert "✗ layer4's weights change during training" in text
    assert "the recipe trains layer4 along with the head" in text


def test_a_fine_tune_with_another_learning_rate_fails(feedback):
    def faster(model, labelled, epochs=30):
        replace_head(model, 10)
        unfreeze(freeze(model), "layer4", "fc")
        trainable = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.Adam(trainable, lr=1e-2)
        for _ in range(epochs):
            model.train()
            loss = nn.functional.cross_entropy(model(labelled.inputs), labelled.targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        return model.eval()

    text = feedback("ch5.fine_tune", faster, attempt=3)
    assert "Adam at 0.01" in text and "keep the recipe" in text


# --- ch5.few_labels (experiment) -----------------------------------------------------------------


def pretrained(labelled, epochs=100, start="bundled", batch_size=32):
    model = replace_head(load_backbone(start), 10)
    if start == "bundled":
        unfreeze(freeze(model), "layer4", "fc")
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=1e-3)
    fit(
        model,
        labelled,
        optimizer=optimizer,
        loss_fn=nn.CrossEntropyLoss(),
        epochs=epochs,
        batch_size=batch_size,
        progress=False,
    )
    return model


def from_scratch(labelled):
    return pretrained(labelled, start="small_resnet")


def test_the_plain_baseline_fails_public_and_hidden_cases():
    """Scratch (the chapter's small ResNet from random weights), same budget: short of target."""
    exercise = find_exercise("ch5.few_labels")
    cases = exercise.public_cases() + hidden_cases(exercise)
    # a generous time limit: this test is about accuracy (scratch trains every block, slowly)
    text = judged("ch5.few_labels", from_scratch, cases, time_limit=60)
    assert f"{len(cases)} of {len(cases)} cases failed" in text, text
    assert "plain training from scratch reaches about 75% here" in text


def test_an_over_budget_run_fails_even_when_accurate(feedback):
    # 26 epochs of 8 batches (30 images in batches of 4): cheap batches, but too many of them
    text = feedback("ch5.few_labels", lambda labelled: pretrained(labelled, 26, batch_size=4))
    assert "at most 200 training batches" in text and "208 batches" in text
    assert "over the compute budget" in text


def test_batches_are_counted_whatever_the_loop():
    """A hand-written loop without torch.optim, and a feature-extraction head, are counted too."""

    def manual_steps(labelled):
        model = replace_head(load_backbone("small_resnet"), 10)
        for _ in range(7):
            loss = nn.functional.cross_entropy(model(labelled.inputs), labelled.targets)
            loss.backward()
            with torch.no_grad():
                for parameter in model.parameters():
                    parameter -= 1e-3 * parameter.grad
                    parameter.grad = None
        return model

    probe_report = ch05.probe_few_labels(manual_steps, 0, 3, "validation")
    assert probe_report["batches"] == 7 and not probe_report["loaded_data"]


def test_loading_the_digits_inside_the_function_is_refused(feedback):
    from course_lib.data import digits_splits

    def everything(labelled):
        train, _, _ = digits_splits(size=16, seed=0)
        return pretrained(Split(train.inputs[:64], train.targets[:64]), epochs=1)

    text = feedback("ch5.few_labels", everything)
    assert "loaded the digits data set itself" in text
    assert digits_splits(size=16, seed=0)[0].inputs.shape[1:] == (1, 16, 16)  # restored after


def test_few_label_checks_name_the_head_and_scratch(feedback):
    glyph_head = feedback("ch5.few_labels", lambda labelled: load_backbone("bundled"))
    assert "it needs a new head for the 10 digit classes" in glyph_head
    untrained = feedback(
        "ch5.few_labels", lambda labelled: replace_head(load_backbone("small_resnet"), 10)
    )
    assert "plain training from scratch reaches about 75% here" in untrained


def test_a_pretrained_start_that_falls_short_gets_a_tuning_hint(feedback):
    def barely_trained(labelled):
        model = replace_head(load_backbone("bundled"), 10)
        unfreeze(freeze(model), "layer4", "fc")
        optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-5)
        for _ in range(5):
            loss = nn.functional.cross_entropy(model(labelled.inputs), labelled.targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        return model

    text = feedback("ch5.few_labels", barely_trained)
    assert "starting from the pretrained backbone" in text and "Tune the learning rate" in text
    assert "75%" not in text


SHARED_SPLIT: list = []


def test_digits_loaded_outside_the_function_are_refused(feedback):
    """A split of an earlier cell, read as a global (or through a helper), is other digits."""
    from course_lib.data import digits_splits

    SHARED_SPLIT[:] = [digits_splits(size=16, seed=3)[0]]
    everything = SHARED_SPLIT[0]

    def reads_a_split(labelled):
        return pretrained(Split(everything.inputs[:64], everything.targets[:64]), epochs=1)

    text = feedback("ch5.few_labels", reads_a_split)
    assert "reads digits loaded outside it: ['everything']" in text
    assert "no other digits, loaded inside or outside your function" in text


def test_a_global_named_like_an_attribute_is_not_mistaken_for_data(feedback, solutions):
    """model.train() reads the attribute train, not a notebook's split called train."""
    namespace = dict(solutions) | {"reference": solutions["train_with_few_labels"]}
    assert namespace["train"].inputs.shape[0] > 30  # the notebook's setup cell
    exec(
        "def train_with_few_labels(labelled):\n"
        "    model = reference(labelled)\n"
        "    model.train()\n"
        "    return model.eval()\n",
        namespace,
    )
    text = feedback("ch5.few_labels", namespace["train_with_few_labels"])
    assert "passed (1/1 cases)" in text, text


def test_an_imported_load_digits_is_refused_and_restored(feedback):
    namespace: dict = {}
    exec(
        "from sklearn.datasets import load_digits\n"
        "def train_with_few_labels(labelled):\n"
        "    load_digits()\n",
        namespace,
    )
    text = feedback("ch5.few_labels", namespace["train_with_few_labels"])
    assert "loaded the digits data set itself" in text
    import sklearn.datasets

    assert namespace["load_digits"] is sklearn.datasets.load_digits


def test_the_scored_split_is_not_left_cached_for_the_learner():
    seen = {}

    def peeks(labelled):
        seen["cached"] = ch05._digits.cache_info().currsize
        return None

    ch05.prepare_few_labels(7, 3, "test")
    ch05.probe_few_labels(peeks, 7, 3, "test")
    assert seen["cached"] == 0


def test_a_pass_prints_the_accuracy_and_the_batches(feedback, solutions):
    text = feedback("ch5.few_labels", solutions["train_with_few_labels"])
    assert "% on validation digits, 100 batches" in text, text


def test_the_hidden_case_is_scored_on_test_digits_the_kernel_gets_no_labels_of():
    exercise = find_exercise("ch5.few_labels")
    [public] = exercise.public_params
    assert public["scored_on"] == "validation"
    for case in hidden_cases(exercise):
        seed, _, scored_on = case.probe.arguments
        assert scored_on == "test" and seed != public["seed"]
    report_keys = set(ch05.probe_few_labels(lambda labelled: None, 0, 3, "validation"))
    assert not report_keys & {"targets", "labels", "accuracy"}
