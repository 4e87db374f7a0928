"""Exercises of chapter 5: transfer learning (solutions/05_transfer_learning.ipynb).

Every probe below runs next to the learner's code (the notebook's kernel when grading). It
builds what the case needs from the case's parameters (a model of given widths, the digits of
a seed), calls the learner's function and reports what happened as plain data: counts, names,
parameter changes, predictions. The judges run in the grader's process: they rebuild the
expected answer from the same parameters (the architecture, the labels of the scored digits,
which the kernel never sends back) and decide.
"""

from __future__ import annotations

import contextlib
import dis
import inspect
import math
import operator
import time
from collections.abc import Sequence
from functools import cache

import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_pre_hook

from course_lib.data import Split, digits_splits, per_class_subset
from course_lib.grading.probing import Opaque, one_thread
from course_lib.grading.spec import Case, Exercise, Probe, Verdict, describe
from course_lib.transfer import SmallResNet, extract_features, load_backbone, replace_head

# --- what the probes and the judges share --------------------------------------------------------


def _fresh_model(classes: int) -> nn.Module:
    """The chapter's ResNet (random weights; only its structure matters) with a new head."""
    return replace_head(load_backbone("small_resnet"), classes)


def _batchnorm_layers(module: nn.Module) -> list[nn.Module]:
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def _is_whole_number(value) -> bool:
    """int, numpy or 0-d torch integers count; bools and floats do not."""
    if isinstance(value, bool):
        return False
    try:
        operator.index(value)
    except TypeError:
        return False
    return True


@cache
def _digits(seed: int) -> tuple[Split, Split, Split]:
    return digits_splits(size=16, seed=seed)


def _scored_split(seed: int, scored_on: str) -> Split:
    """Public cases score on validation digits (a learner may tune on them), hidden ones on test."""
    if scored_on not in ("validation", "test"):
        raise ValueError(f"scored_on must be 'validation' or 'test', got {scored_on!r}")
    _, val, test = _digits(seed)
    return val if scored_on == "validation" else test


def _accuracy(predictions, targets: torch.Tensor) -> float | None:
    """The share of correct predictions; None when the predictions are not one class per target."""
    if not isinstance(predictions, torch.Tensor) or predictions.shape != targets.shape:
        return None
    return float((predictions == targets).float().mean())


def _predictions(model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model(inputs[i : i + 512]).argmax(1) for i in range(0, len(inputs), 512)])


# --- Exercise: freeze all but the head, and count --------------------------------------------------


def probe_freeze(freeze_all_but_head, classes: int) -> dict:
    """What the learner's function returned, what trains afterwards, and how BatchNorm behaves.

    After the call the probe does what a training loop does (``model.train()`` and a forward
    pass) and reports how far each BatchNorm layer's running mean moved and how many of them
    ran in train mode (normalising with the batch's own statistics). A forward pass that
    fails (e.g. a pre-hook whose return value replaced a layer's input) is reported as data.
    """
    model = _fresh_model(classes)
    model.train()
    returned = freeze_all_but_head(model)
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    layers = _batchnorm_layers(model)
    before = [layer.running_mean.clone() for layer in layers]
    modes: list[bool] = []
    handles = [
        layer.register_forward_hook(lambda m, i, o: modes.append(bool(m.training)))
        for layer in layers
    ]
    model.train()  # what fit() does at the start of every epoch
    failed = None
    try:
        with torch.no_grad():
            model(torch.rand(8, 1, 16, 16))
    except (AttributeError, TypeError, RuntimeError) as error:
        failed = f"{type(error).__name__}: {error}"[:200]
    finally:
        for handle in handles:
            handle.remove()
    moved = [
        float((layer.running_mean - b).abs().max()) for layer, b in zip(layers, before, strict=True)
    ]
    return {
        "returned": returned,
        "trainable": trainable,
        "statistics_moved": moved,
        "ran_in_train_mode": sum(modes),
        "forward_failed": failed,
    }


def _freeze_case(params: dict) -> Case:
    classes = params["classes"]

    def judge(report: dict) -> Verdict:
        model = _fresh_model(classes)
        head = sum(p.numel() for p in model.fc.parameters())
        everything = sum(p.numel() for p in model.parameters())
        got, trainable = report["returned"], report["trainable"]
        fc = [name for name, _ in model.named_parameters() if name.startswith("fc.")]
        if isinstance(got, Opaque) and got.type_name == type(model).__name__:
            return Verdict(
                False,
                f"the number {head}",
                "a model",
                "the function returns a count, not the model: how many numbers will the "
                "optimizer change?",
                "what does the function promise to return?",
            )
        if not set(fc) <= set(trainable):
            return Verdict(
                False,
                "the head (model.fc) trainable",
                "the head frozen too",
                "you froze the new head as well: it is the one part that must train; make it "
                "trainable again after freezing the rest",
                "which part of the model is new, and must learn?",
            )
        others = [name for name in trainable if not name.startswith("fc.")]
        if others:
            return Verdict(
                False,
                "only fc's parameters trainable",
                f"also {others[:3]} ...",
                "some backbone parameters still train: every parameter outside the head needs "
                "requires_grad switched off",
                "list the parameters that still have requires_grad after your function: which "
                "of them are outside the head?",
            )
        if report.get("forward_failed"):
            return Verdict(
                False,
                "the model runs after model.train()",
                f"the forward pass failed: {report['forward_failed']}",
                "a forward pre-hook that returns something replaces the layer's input with it: "
                "if yours returns the module (as .eval() does), the layer receives a module "
                "instead of a tensor. Make the hook return nothing",
                "the model no longer runs: what did your code attach to its layers, and what "
                "does it return?",
            )
        in_train_mode = report.get("ran_in_train_mode", 0)
        if in_train_mode:
            return Verdict(
                False,
                "every BatchNorm layer in eval mode while it runs, after model.train()",
                f"{in_train_mode} BatchNorm layers ran in train mode",
                "in train mode a BatchNorm layer normalises each batch with that batch's own "
                "mean and variance (section 2's drift), even if its running statistics are "
                "kept still: model.train() undoes .eval(), so something must re-apply eval "
                "mode every time the layer runs",
                "a frozen BatchNorm layer still behaves differently in train mode: chapter 5, "
                "section 2",
            )
        moved = sum(change > 0 for change in report["statistics_moved"])
        if moved:
            return Verdict(
                False,
                "BatchNorm statistics unchanged by model.train() and a forward pass",
                f"{moved} BatchNorm layers updated their running mean",
                "requires_grad = False does not stop BatchNorm, and model.train() undoes .eval(): "
                "something must re-apply eval mode every time the layer runs",
                "a frozen BatchNorm layer still updates its statistics in train mode: chapter 5, "
                "section 2",
            )
        if isinstance(got, float):
            return Verdict(
                False,
                f"the whole number {head}",
                repr(got),
                "a float, not a whole number: a count of numbers is an int",
                "what type is a count?",
            )
        if _is_whole_number(got) and int(got) == everything:
            return Verdict(
                False,
                str(head),
                str(got),
                "count only the parameters with requires_grad, not all of them",
                "does a frozen parameter count among what the optimizer changes?",
            )
        if _is_whole_number(got) and int(got) == len(fc):
            return Verdict(
                False,
                str(head),
                str(got),
                "count numbers, not tensors: each trainable tensor holds numel() numbers",
                "how many numbers does one weight tensor hold?",
            )
        if not _is_whole_number(got) or int(got) != head:
            return Verdict(
                False,
                str(head),
                describe(got),
                "return how many numbers the optimizer will change: the elements of every "
                "parameter that still has requires_grad, added up, as a whole number",
                "which numbers will the optimizer change, and how many are there?",
            )
        return Verdict(True)

    return Case(
        f"a SmallResNet with a {classes}-class head", Probe(probe_freeze, (classes,)), judge
    )


# --- Exercise (derive): which blocks fit a memory budget -------------------------------------------

# Adam in float32: a gradient and two moment estimates per trainable number, 4 bytes each.
_BYTES_PER_TRAINED_NUMBER = 12


def _children(widths: Sequence[int], classes: int) -> dict[str, int]:
    """Parameters per top-level block (zero for relu, avgpool ...), in the order they run."""
    model = SmallResNet(num_classes=classes, widths=tuple(widths))
    return {
        name: sum(p.numel() for p in block.parameters()) for name, block in model.named_children()
    }


def _children_with_buffers(widths: Sequence[int], classes: int) -> dict[str, int]:
    """Numbers per top-level block counted from its state_dict: BatchNorm's buffers included."""
    model = SmallResNet(num_classes=classes, widths=tuple(widths))
    return {
        name: sum(t.numel() for t in block.state_dict().values())
        for name, block in model.named_children()
    }


def _top_down(sizes: dict[str, int], budget: int, per_number: int, *, skip: bool = False):
    """Blocks from the head down while their training state fits ``budget`` bytes."""
    chosen, used = [], 0
    for name in reversed(sizes):
        cost = sizes[name] * per_number
        if used + cost <= budget:
            chosen.append(name)
            used += cost
        elif not skip:
            break
    return chosen


def _bottom_up(sizes: dict[str, int], budget: int, per_number: int) -> list[str]:
    """The head, then blocks from the input up: the mistake of training general features first."""
    order = ["fc", *[name for name in sizes if name != "fc"]]
    return _top_down(dict((name, sizes[name]) for name in reversed(order)), budget, per_number)


def _strictly_below(sizes: dict[str, int], budget: int, per_number: int) -> list[str]:
    return _top_down(sizes, budget - 1, per_number)


def probe_blocks_to_unfreeze(blocks_to_unfreeze, widths: list, classes: int, budget: int):
    """The learner's block names for a SmallResNet of ``widths`` and a budget of ``budget`` bytes."""
    model = SmallResNet(num_classes=classes, widths=tuple(widths))
    return blocks_to_unfreeze(model, budget)


_UNDERCOUNTED = (
    "too many blocks: you counted less memory per trained number than training with Adam "
    "takes. List what exists for every trained number during training (backward() leaves "
    "one thing, Adam keeps two more), each a float32"
)
_PER_NUMBER_NUDGE = "how many bytes does training add for each trainable number, with Adam?"

# Each mistake: (the blocks it picks from (sizes, sizes with buffers, budget), hint, nudge).
_BLOCK_MISTAKES = (
    (lambda sizes, _, budget: _top_down(sizes, budget, 4), _UNDERCOUNTED, _PER_NUMBER_NUDGE),
    (lambda sizes, _, budget: _top_down(sizes, budget, 8), _UNDERCOUNTED, _PER_NUMBER_NUDGE),
    (
        lambda sizes, _, budget: _top_down(sizes, budget, 16),
        "too few blocks: the weights are in memory whether they train or not; the budget is "
        "only what training adds (the gradient and Adam's state)",
        _PER_NUMBER_NUDGE,
    ),
    (
        lambda sizes, _, budget: _bottom_up(sizes, budget, _BYTES_PER_TRAINED_NUMBER),
        "you unfroze from the input up: the early blocks hold the general features (edges, "
        "strokes) worth keeping; fine-tune from the head downwards",
        "which blocks' features are the most specific to the pretraining task?",
    ),
    (
        lambda sizes, _, budget: _top_down(sizes, budget, _BYTES_PER_TRAINED_NUMBER, skip=True),
        "a block that did not fit was skipped and an earlier one taken instead: the trained "
        "blocks must be one run from the head down, so stop at the first block that does not fit",
        "are the blocks you chose next to each other, ending at the head?",
    ),
    (
        lambda _, buffered, budget: _top_down(buffered, budget, _BYTES_PER_TRAINED_NUMBER),
        "you counted BatchNorm's running_mean and running_var too: they are buffers, not "
        "parameters; nothing trains them, so they have no gradient and no Adam state",
        "which of a block's numbers does the optimizer train?",
    ),
    (
        lambda sizes, _, budget: _strictly_below(sizes, budget, _BYTES_PER_TRAINED_NUMBER),
        "one block too few: a block whose cost meets the budget exactly still fits",
        "check the block at the edge of the budget: does 'fits' include equality?",
    ),
)


def _blocks_case(params: dict) -> Case:
    widths, classes, budget = params["widths"], params["classes"], params["budget_bytes"]

    def judge(got) -> Verdict:
        children = _children(widths, classes)
        sizes = {name: size for name, size in children.items() if size}
        buffered = {
            name: size
            for name, size in _children_with_buffers(widths, classes).items()
            if name in sizes
        }
        expected = _top_down(sizes, budget, _BYTES_PER_TRAINED_NUMBER)
        shown = "the head, and the blocks below it whose training memory fits the budget"
        if not isinstance(got, list | tuple | set) or not all(isinstance(n, str) for n in got):
            return Verdict(
                False,
                "a list of block names, such as 'layer4'",
                describe(got),
                "return the names of the top-level blocks (strings), as named_children() "
                "gives them",
                "what does the function promise to return?",
            )
        unknown = [name for name in got if name not in children]
        if unknown:
            return Verdict(
                False,
                shown,
                f"{sorted(got)}",
                f"{unknown[:3]} are not top-level blocks of the model: use the names of its "
                "direct children",
                "which blocks does the model list as its direct children?",
            )
        chosen = sorted(name for name in got if name in sizes)  # blocks without weights cost 0
        if chosen == sorted(expected):
            return Verdict(True)
        if "fc" not in chosen and sorted([*chosen, "fc"]) == sorted(expected):
            return Verdict(
                False,
                shown,
                f"{chosen}",
                "the head is missing: it is new, so it always trains, and it is paid for first",
                "which block must train whatever the budget?",
            )
        matched = [
            (hint, nudge)
            for wrong, hint, nudge in _BLOCK_MISTAKES
            if chosen == sorted(wrong(sizes, buffered, budget))
        ]
        if matched:  # two mistakes can give the same blocks: name each of them
            hints = list(dict.fromkeys(hint for hint, _ in matched))
            nudges = list(dict.fromkeys(nudge for _, nudge in matched))
            return Verdict(False, shown, f"{chosen}", " Or: ".join(hints), " Or: ".join(nudges))
        return Verdict(
            False,
            shown,
            f"{chosen}",
            "add up, block by block from the head down, what training each block adds to memory "
            "with Adam in float32, and stop before the budget is exceeded",
            "price one block by hand: its trainable numbers times the bytes training adds for "
            "each; does your function get the same?",
        )

    return Case(
        f"widths {tuple(widths)}, {classes} classes, budget {budget:,} bytes",
        Probe(probe_blocks_to_unfreeze, (list(widths), classes, budget)),
        judge,
    )


# --- Exercise: parameter groups ------------------------------------------------------------------


def _describe_group(group, names: dict[int, str]) -> dict:
    """A group as data: its keys, its parameters' names (or what else it held), its lr."""
    if not isinstance(group, dict):
        return {"type": type(group).__name__}
    members = []
    params = group.get("params", [])
    for member in [params] if isinstance(params, torch.Tensor) else list(params):
        if isinstance(member, torch.Tensor):
            members.append(names.get(id(member), "<a tensor not in the model>"))
        else:
            members.append(f"<not a tensor: {type(member).__name__}>")
    return {"type": "dict", "params": members, "lr": group.get("lr")}


def probe_param_groups(make_param_groups, head_lr: float, decay: float) -> dict:
    """The learner's groups (by parameter name), what trains, and whether an optimizer takes them."""
    model = _fresh_model(10)
    groups = make_param_groups(model, head_lr, decay)
    names = {id(p): name for name, p in model.named_parameters()}
    if isinstance(groups, list | tuple):
        described = [_describe_group(group, names) for group in groups]
    else:
        described = {"type": type(groups).__name__}
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    try:
        torch.optim.SGD(make_param_groups(_fresh_model(10), head_lr, decay))
        refused = None
    except (TypeError, ValueError) as error:  # the optimizer refuses the groups
        refused = f"{type(error).__name__}: {error}"
    return {"groups": described, "trainable": trainable, "optimizer_refused": refused}


def _kinds_of(groups) -> str:
    """'a dict', or '[dict, tuple]': what the learner returned, in words."""
    if isinstance(groups, dict):
        return f"a {groups.get('type')}"
    return f"[{', '.join(str(group.get('type')) for group in groups)}]"


_TRAINED_BLOCKS = ("fc", "layer4", "layer3")  # from the head down, each `decay` times slower


def _block_of(name: str) -> str:
    return name.split(".")[0]


def _rates_by_block(groups: list[dict]) -> dict[str, list]:
    """For each block, the learning rates its tensors got (one entry per tensor)."""
    rates: dict[str, list] = {}
    for group in groups:
        for name in group["params"]:
            rates.setdefault(_block_of(name), []).append(group["lr"])
    return rates


def _same_rate(got, expected: float) -> bool:
    return isinstance(got, int | float) and math.isclose(got, expected, rel_tol=1e-6)


def _groups_case(params: dict) -> Case:
    head_lr, decay = params["head_lr"], params["decay"]
    wanted = {block: head_lr * decay**depth for depth, block in enumerate(_TRAINED_BLOCKS)}
    shown = ", ".join(f"{block} at {rate:.3g}" for block, rate in wanted.items())

    def judge(report: dict) -> Verdict:
        groups = report["groups"]
        if not isinstance(groups, list) or not all(g.get("type") == "dict" for g in groups):
            return Verdict(
                False,
                "a list of dicts, each with 'params' and 'lr'",
                _kinds_of(groups),
                "an optimizer takes a list of groups, each a dict with the parameters it trains "
                "and their learning rate",
                "what does torch.optim accept besides a plain list of parameters?",
            )
        members = [name for group in groups for name in group["params"]]
        if any(name.startswith("<not a tensor") for name in members):
            return Verdict(
                False,
                "parameters (tensors) in 'params'",
                "something else",
                "named_parameters() gives (name, tensor) pairs; a group needs the tensors "
                "alone, as parameters() gives them",
                "what is each item you put in 'params'?",
            )
        if any(group["lr"] is None for group in groups):
            return Verdict(
                False,
                "an 'lr' in every group",
                "a group without its own 'lr'",
                "each group carries its own learning rate under the key 'lr'",
                "which rate would a group without 'lr' train at?",
            )
        model = _fresh_model(10)
        counts = {
            block: sum(_block_of(n) == block for n, _ in model.named_parameters())
            for block in _TRAINED_BLOCKS
        }
        rates = _rates_by_block(groups)
        seen = {
            block: sorted({f"{rate:.3g}" for rate in rates.get(block, [])})
            for block in _TRAINED_BLOCKS
        }
        if _same_rate(max(rates.get("layer3", [0]), default=0), head_lr) and _same_rate(
            max(rates.get("fc", [0]), default=0), wanted["layer3"]
        ):
            return Verdict(
                False,
                shown,
                f"rates per block: {seen}",
                "the rates are reversed: the new head learns fastest, and each block further "
                "from it keeps its pretrained features with a smaller rate",
                "which block is new, and which holds the most general features?",
            )
        if "layer3" not in rates and all(
            _same_rate(rate, wanted[block]) for block in ("fc", "layer4") for rate in rates[block]
        ):
            return Verdict(
                False,
                shown,
                f"rates per block: {seen}",
                "layer3 is missing: it trains too, at `decay` times layer4's rate",
                "how many blocks does the task train?",
            )
        for block in _TRAINED_BLOCKS:
            good = [rate for rate in rates.get(block, []) if _same_rate(rate, wanted[block])]
            if len(good) != counts[block] or len(rates.get(block, [])) != counts[block]:
                return Verdict(
                    False,
                    shown,
                    f"rates per block: {seen}",
                    f"{block} should train at {wanted[block]:.3g} (all {counts[block]} of its "
                    "tensors, each once): going down from the head, each block's rate is "
                    "`decay` times the rate of the block above it",
                    "write down the three rates by hand for head_lr 0.01 and decay 0.5: does "
                    "your function give the same?",
                )
        extra = sorted(set(rates) - set(_TRAINED_BLOCKS))
        if extra:
            return Verdict(
                False,
                "only fc, layer4 and layer3 in the groups",
                f"also {extra}",
                "the other blocks stay frozen: leave them out of the optimizer",
                "which blocks does the task train?",
            )
        trained = set(_TRAINED_BLOCKS)
        others = [n for n in report["trainable"] if _block_of(n) not in trained]
        if others:
            return Verdict(
                False,
                "blocks other than fc, layer4 and layer3 frozen",
                f"{others[:3]} ... still trainable",
                "set requires_grad = False on every parameter outside fc, layer4 and layer3",
                "what is requires_grad of a parameter you left out of the groups?",
            )
        if any(_block_of(n) in trained for n, _ in model.named_parameters()) and not {
            n for n, _ in model.named_parameters() if _block_of(n) in trained
        } <= set(report["trainable"]):
            return Verdict(
                False,
                "fc, layer4 and layer3 trainable",
                "some of them frozen",
                "freeze everything first, then make the trained blocks trainable again",
                "what is requires_grad of the parameters in your groups?",
            )
        if report["optimizer_refused"]:
            return Verdict(
                False,
                "groups an optimizer accepts",
                report["optimizer_refused"],
                "pass the groups to torch.optim.SGD yourself and read its error",
                "does torch.optim.SGD accept what your function returns?",
            )
        return Verdict(True)

    return Case(
        f"head lr {head_lr:g}, decay {decay:g} per block",
        Probe(probe_param_groups, (head_lr, decay)),
        judge,
    )


# --- Exercise: a head on cached features ------------------------------------------------------------


@cache
def _cached_features(seed: int, per_class: int, scored_on: str) -> tuple[Split, torch.Tensor]:
    """The labelled embeddings (with their labels) and the scored digits' embeddings (without)."""
    backbone = load_backbone("bundled")
    labelled = per_class_subset(_digits(seed)[0], per_class, seed=seed)
    scored = extract_features(backbone, _scored_split(seed, scored_on).inputs)
    return extract_features(backbone, labelled), scored


def prepare_features(seed: int, per_class: int, scored_on: str) -> None:
    """Compute (and cache) the embeddings before the learner's time limit starts."""
    _cached_features(seed, per_class, scored_on)


def _look_like_probabilities(outputs: torch.Tensor) -> bool:
    """Every row in 0..1 and summing to 1: a softmax inside the head."""
    inside = bool(((outputs >= 0) & (outputs <= 1)).all())
    return inside and bool(torch.allclose(outputs.sum(dim=1), torch.ones(len(outputs)), atol=1e-4))


def probe_train_head(train_head, seed: int, per_class: int, scored_on: str = "test") -> dict:
    """The learner's head, trained on the labelled embeddings; its predictions on the scored ones."""
    train, scored = _cached_features(seed, per_class, scored_on)
    torch.manual_seed(seed)
    head = train_head(Split(train.inputs.clone(), train.targets.clone()))
    if not isinstance(head, nn.Module):
        return {"returned": head}
    try:
        with torch.no_grad():
            outputs = head.eval()(scored[:64])
    except RuntimeError as error:  # e.g. a head made for another embedding size
        return {"returned": type(head).__name__, "failed": str(error)[:200]}
    if tuple(outputs.shape) != (len(scored[:64]), 10):
        return {"returned": type(head).__name__, "output_shape": list(outputs.shape)}
    return {
        "returned": type(head).__name__,
        "probabilities": _look_like_probabilities(outputs),
        "predictions": _predictions(head, scored),
    }


def _head_case(params: dict) -> Case:
    seed, per_class, target = params["seed"], params["per_class"], params["min_accuracy"]
    scored_on = params.get("scored_on", "test")

    def judge(report: dict) -> Verdict:
        if "predictions" not in report and "failed" not in report and "output_shape" not in report:
            return Verdict(
                False,
                "a trained head (an nn.Module)",
                describe(report["returned"]),
                "return the head you trained",
                "what does the function promise to return?",
            )
        if "failed" in report:
            return Verdict(
                False,
                "a module that takes (N, 128) embeddings",
                f"it failed: {report['failed']}",
                "the head works on the stored 128-number embeddings, not on images: its input "
                "size is the embedding's",
                "what shape is one row of features.inputs?",
            )
        if "output_shape" in report:
            return Verdict(
                False,
                "10 outputs per embedding",
                f"output of shape {tuple(report['output_shape'])}",
                "one score per digit class: the head's output size is the number of classes",
                "how many classes are there?",
            )
        if report.get("probabilities"):
            return Verdict(
                False,
                "scores (logits) out of the head",
                "outputs in 0..1 that sum to 1 (probabilities)",
                "your head ends in a softmax: CrossEntropyLoss applies log-softmax itself and "
                "expects raw scores, and probabilities squeeze its gradients (the bug Exercise "
                "5.5 hunts). Drop the softmax from the head",
                "what does nn.CrossEntropyLoss expect as its input: scores or probabilities?",
            )
        accuracy = _accuracy(report["predictions"], _scored_split(seed, scored_on).targets)
        if accuracy is None:
            return Verdict(
                False, f"a prediction per {scored_on} digit", describe(report["predictions"])
            )
        if accuracy < 0.2:
            return Verdict(
                False,
                f"{scored_on} accuracy >= {target}",
                f"{accuracy:.3f} (chance level)",
                "the head is not trained: it still predicts at random. Train it with fit (chapter "
                "3) before returning it",
                "did a training loop run on the head?",
            )
        if accuracy < target:
            return Verdict(
                False,
                f"{scored_on} accuracy >= {target}",
                f"{accuracy:.3f}",
                "undertrained: a head alone on fixed features takes a much larger learning rate "
                "and more epochs than the ones you used for whole networks in chapter 3 "
                "(chapter 5, section 3's table)",
                "how large a learning rate, and how many epochs, can a single linear layer on "
                "fixed features take?",
            )
        return Verdict(
            True, expected=f">= {target:.0%}", got=f"{accuracy:.1%} on {scored_on} digits"
        )

    return Case(
        f"{per_class} labels per class (seed {seed}), {scored_on} accuracy >= {target}",
        Probe(probe_train_head, (seed, per_class, scored_on), prepare=prepare_features),
        judge,
    )


# --- Exercise (debug): a fine-tuning function with planted bugs ------------------------------------


def _labelled(seed: int, per_class: int) -> Split:
    return per_class_subset(_digits(seed)[0], per_class, seed=seed)


def prepare_fine_tune(check: str, seed: int, per_class: int, scored_on: str) -> None:
    """Load the digits (and check the scored split's name) before the learner's time limit."""
    _labelled(seed, per_class)
    _scored_split(seed, scored_on)


def _outside(name: str) -> bool:
    """Parameters and buffers that the fine-tune must leave alone: all but layer4 and fc."""
    return not name.startswith(("layer4.", "fc."))


def _largest_change(before: dict[str, torch.Tensor], model: nn.Module) -> float | None:
    now = dict(model.named_parameters()) | dict(model.named_buffers())
    if not set(before) <= set(now):
        return None
    return max(float((now[n].detach() - b).abs().max()) for n, b in before.items())


def _rows_of(batch: torch.Tensor, data: torch.Tensor) -> list[int]:
    """For each row of ``batch``, its index in ``data`` (-1 when it is not one of them)."""
    flat, reference = batch.detach().flatten(1), data.flatten(1)
    if flat.shape[1] != reference.shape[1]:
        return [-1] * len(flat)
    same = (flat[:, None, :] == reference[None, :, :]).all(dim=2)
    return [int(row.nonzero()[0]) if row.any() else -1 for row in same]


def _is_batch(arguments: tuple) -> bool:
    return bool(arguments) and isinstance(arguments[0], torch.Tensor) and arguments[0].ndim > 1


class _FirstTrainingStep:
    """A forward hook on the model: the logits of the first forward pass with gradients, the
    gradient of the loss with respect to them, and the head's weights at that moment."""

    def __init__(self, model: nn.Module, data: torch.Tensor):
        self.model, self.data = model, data
        self.seen = None
        self.handle = model.register_forward_hook(self)

    def __call__(self, module, arguments, output):
        if self.seen is not None or not isinstance(output, torch.Tensor):
            return
        if not output.requires_grad:
            return
        head = getattr(module, "fc", None)
        weight = getattr(head, "weight", None)
        self.seen = {
            "logits": output.detach().clone(),
            "rows": _rows_of(arguments[0], self.data) if _is_batch(arguments) else [],
            "head": weight.detach().clone() if isinstance(weight, torch.Tensor) else None,
            "grad": None,
        }
        output.register_hook(self._keep_gradient)

    def _keep_gradient(self, gradient):
        if self.seen["grad"] is None:
            self.seen["grad"] = gradient.detach().clone()


# The last instrumented run: (function, seed, per_class, scored_on) -> its report, and the
# checks it has answered. The checks of one exercise share a run; a check asked again (the
# learner checks again, even with the same function) starts a fresh run.
_LAST_RUN: dict = {}


def probe_fine_tune(fine_tune, check: str, seed: int, per_class: int, scored_on: str) -> dict:
    """The report of an instrumented run of ``fine_tune``, shared by the checks of one round."""
    key = (fine_tune, seed, per_class, scored_on)
    if _LAST_RUN.get("key") != key or check in _LAST_RUN["answered"]:
        _LAST_RUN.clear()
        with one_thread():
            report = _instrumented_run(fine_tune, seed, per_class, scored_on)
        _LAST_RUN.update(key=key, report=report, answered=set())
    _LAST_RUN["answered"].add(check)
    return _LAST_RUN["report"]


def _instrumented_run(fine_tune, seed: int, per_class: int, scored_on: str) -> dict:
    """One instrumented run of the learner's fine_tune, reported for every check at once.

    The probe hands in the bundled backbone and records: how far the frozen blocks' weights
    and BatchNorm statistics moved; the logits of the first training step and the gradient
    of the loss with respect to them; whether the head changed after that step; which modules
    are in train mode when the function returns; the predictions (in eval mode) on the scored
    digits.
    """
    labelled = _labelled(seed, per_class)
    scored = _scored_split(seed, scored_on)
    model = load_backbone("bundled")
    frozen_weights = {n: p.detach().clone() for n, p in model.named_parameters() if _outside(n)}
    layer4_weights = {
        n: p.detach().clone() for n, p in model.named_parameters() if n.startswith("layer4.")
    }
    statistics = {
        n: b.clone()
        for n, b in model.named_buffers()
        if _outside(n) and n.endswith(("running_mean", "running_var"))
    }
    step = _FirstTrainingStep(model, labelled.inputs)
    optimizers: list[str] = []  # "Adam at 0.001": each optimizer step's kind and rates

    def record_optimizer(optimizer, arguments, keywords):
        rates = sorted({f"{group.get('lr'):g}" for group in optimizer.param_groups})
        optimizers.append(f"{type(optimizer).__name__} at {', '.join(rates)}")

    steps = register_optimizer_step_pre_hook(record_optimizer)
    torch.manual_seed(seed)
    try:
        returned = fine_tune(model, Split(labelled.inputs.clone(), labelled.targets.clone()))
    finally:
        step.handle.remove()
        steps.remove()
    seen = step.seen or {}
    head = getattr(getattr(model, "fc", None), "weight", None)
    head_change = None
    first = seen.get("head")
    if (
        isinstance(first, torch.Tensor)
        and isinstance(head, torch.Tensor)
        and head.shape == first.shape
    ):
        head_change = float((head.detach() - seen["head"]).abs().max())
    in_train_mode = [name or "model" for name, m in model.named_modules() if m.training]
    model.eval()
    with torch.no_grad():
        outputs = model(scored.inputs[:2]).shape[-1]
    return {
        "returned_the_model": returned is model,
        "returned": type(returned).__name__,
        "frozen_weights_moved": _largest_change(frozen_weights, model),
        "layer4_moved": _largest_change(layer4_weights, model),
        "optimizers": sorted(set(optimizers))[:5],
        "statistics_moved": _largest_change(statistics, model),
        "logits": seen.get("logits"),
        "logit_gradient": seen.get("grad"),
        "rows": seen.get("rows"),
        "head_change": head_change,
        "in_train_mode": in_train_mode[:20],
        "outputs": outputs,
        "predictions": _predictions(model, scored.inputs) if outputs == 10 else None,
    }


def _judge_head_trains(report: dict, params: dict) -> Verdict:
    if report["logits"] is None:
        return Verdict(
            False,
            "a training step",
            "no forward pass with gradients",
            "the model never ran with gradients: did the training loop run?",
        )
    change = report["head_change"]
    if change is None:
        return Verdict(
            False,
            "the new head's weights change during training",
            "the first forward pass with gradients ran through another head",
            "replace the head before anything runs the model with gradients, so that training "
            "starts on the final head",
        )
    if change == 0:
        return Verdict(
            False,
            "the new head's weights change during training",
            "the head ended exactly where it started",
            "the new head receives gradients, but no optimizer step ever changes it: the "
            "optimizer holds the parameters that existed when it was built. Build it after "
            "the model has its final head",
            "the head never moves: which parameters does the optimizer update?",
        )
    return Verdict(True)


def _judge_layer4_trains(report: dict, params: dict) -> Verdict:
    moved = report["layer4_moved"]
    if moved is None:
        return Verdict(
            False,
            "layer4's weights change during training",
            "layer4 is missing",
            "fine-tune the model you are given; replace only its head",
            "is layer4 still part of the model you return?",
        )
    if moved == 0:
        return Verdict(
            False,
            "layer4's weights change during training",
            "layer4 ended exactly where it started",
            "the recipe trains layer4 along with the head: it needs requires_grad, and the "
            "optimizer must hold its parameters",
            "which blocks does the recipe in the docstring train?",
        )
    used = report.get("optimizers", [])
    if used and used != ["Adam at 0.001"]:
        return Verdict(
            False,
            "Adam at lr 1e-3, as the docstring's recipe says",
            f"optimizer steps by {used}",
            "keep the recipe: one Adam optimizer at learning rate 1e-3 for layer4 and the head",
            "which optimizer and learning rate does the docstring promise?",
        )
    return Verdict(True)


def _judge_frozen_blocks(report: dict, params: dict) -> Verdict:
    weights, statistics = report["frozen_weights_moved"], report["statistics_moved"]
    if weights is None or statistics is None:
        return Verdict(
            False,
            "the backbone's blocks kept",
            "blocks missing",
            "fine-tune the model you are given; replace only its head",
        )
    if weights > 0:
        return Verdict(
            False,
            "conv1 ... layer3 unchanged",
            f"their weights moved by up to {weights:.3g}",
            "blocks before layer4 trained: only layer4 and the head may have requires_grad",
        )
    if statistics > 0:
        return Verdict(
            False,
            "the frozen blocks' BatchNorm statistics unchanged",
            f"their running statistics moved by up to {statistics:.3g}",
            "requires_grad = False stops the gradients, not BatchNorm: in train mode the frozen "
            "blocks still update their running mean and variance. Keep their BatchNorm layers "
            "in eval mode while training (chapter 5, section 2, and freeze())",
            "the frozen blocks changed during training, without any gradient: which layers "
            "do that in train mode?",
        )
    return Verdict(True)


def _judge_loss_on_logits(report: dict, params: dict) -> Verdict:
    logits, gradient, rows = report["logits"], report["logit_gradient"], report["rows"]
    if logits is None or gradient is None:
        return Verdict(
            False,
            "a loss computed from the model's output",
            "no gradient reached the model's output",
            "the loss must be computed from the model's output, and backward() called on it",
        )
    if not rows or min(rows) < 0 or logits.ndim != 2 or logits.shape[1] != 10:
        return Verdict(
            False,
            "10 scores per labelled image",
            f"output of shape {tuple(logits.shape)}",
            "train on the labelled images as given, with a 10-class head",
        )
    targets = _labelled(params["seed"], params["per_class"]).targets[rows]
    expected = logits.softmax(dim=1) - nn.functional.one_hot(targets, logits.shape[1])
    cosine = nn.functional.cosine_similarity(expected.flatten(), gradient.flatten(), dim=0)
    if float(cosine) < 0.99:
        return Verdict(
            False,
            "the gradient of cross-entropy on the logits",
            f"a gradient in another direction (cosine {float(cosine):.2f})",
            "CrossEntropyLoss applies log-softmax itself: it takes the raw scores (logits). "
            "Probabilities squeeze them into 0..1 and shrink the gradients; pass the "
            "model's output straight to the loss",
            "what does nn.CrossEntropyLoss expect as its input: scores or probabilities?",
        )
    return Verdict(True)


def _judge_eval_mode(report: dict, params: dict) -> Verdict:
    if not report["returned_the_model"]:
        return Verdict(
            False,
            "the fine-tuned model returned",
            report["returned"],
            "return the model you fine-tuned",
        )
    if report["in_train_mode"]:
        return Verdict(
            False,
            "the model returned in eval mode",
            f"in train mode: {report['in_train_mode'][:3]} ...",
            "returned in train mode, its BatchNorm layers would normalise each prediction batch "
            "with that batch's own statistics (and update them): switch it to eval mode before "
            "returning it",
            "the docstring promises a model ready to predict: in which mode?",
        )
    return Verdict(True)


def _judge_fine_tune_outcome(report: dict, params: dict) -> Verdict:
    target, scored_on = params["min_accuracy"], params["scored_on"]
    if report["outputs"] != 10:
        return Verdict(
            False,
            "10 scores per digit",
            f"{report['outputs']} scores",
            "the model still has the pretraining head: it needs a new one for the 10 digits",
        )
    targets = _scored_split(params["seed"], scored_on).targets
    accuracy = _accuracy(report["predictions"], targets)
    if accuracy is None or accuracy < target:
        return Verdict(
            False,
            f"{scored_on} accuracy >= {target}",
            describe(accuracy),
            "fix the planted bugs first; the recipe itself (layer4 and the head, Adam at 1e-3) "
            "reaches this. Did layer4 train, and does the optimizer hold every parameter that "
            "should learn?",
            "do the other cases pass? The recipe in the docstring reaches this once they do",
        )
    accuracy_text = f"{accuracy:.1%} on {scored_on} digits"
    return Verdict(True, expected=f">= {target:.0%}", got=accuracy_text)


_FINE_TUNE_CHECKS = {
    "head_trains": ("the new head's weights change during training", _judge_head_trains),
    "layer4_trains": (
        "layer4's weights change during training, by Adam at lr 1e-3",
        _judge_layer4_trains,
    ),
    "frozen_blocks": ("the earlier blocks stay frozen, BatchNorm included", _judge_frozen_blocks),
    "loss_on_logits": ("the loss is computed on the logits", _judge_loss_on_logits),
    "eval_mode": ("the model is returned ready to predict", _judge_eval_mode),
    "outcome": ("the fine-tuned model's accuracy", _judge_fine_tune_outcome),
}


def _fine_tune_case(params: dict) -> Case:
    title, judge = _FINE_TUNE_CHECKS[params["check"]]
    arguments = (params["check"], params["seed"], params["per_class"], params["scored_on"])
    description = title
    if params["check"] == "outcome":
        description += f": {params['scored_on']} accuracy >= {params['min_accuracy']}"
    return Case(
        f"{description} (seed {params['seed']})",
        Probe(probe_fine_tune, arguments, prepare=prepare_fine_tune),
        lambda report: judge(report, params),
    )


# --- Exercise (experiment): a target accuracy with three labels per class ---------------------------

MAX_TRAINING_BATCHES = 200  # the compute budget of ch5.few_labels


class _OutsideData(Exception):
    """Raised inside the learner's function when it loads the digits data set itself."""


class _Budget:
    """Counts training batches and blocks the digits data set while the learner's code runs.

    A training batch is a forward pass with gradients through a layer that trains: each
    layer with trainable parameters counts its calls with gradients enabled, and the budget
    used is the largest count (one per batch, whatever the loop or optimizer). Loading
    scikit-learn's digits (which every course loader of digits goes through, and which the
    notebook may have imported under its own name) is refused, so the model learns from the
    labelled images it is handed and nothing else.
    """

    def __init__(self):
        self.calls: dict[int, int] = {}
        self.loaded_data = False

    def count(self, module, arguments):
        if torch.is_grad_enabled() and any(p.requires_grad for p in module.parameters(False)):
            self.calls[id(module)] = self.calls.get(id(module), 0) + 1

    def refuse_data(self, *arguments, **keywords):
        self.loaded_data = True
        raise _OutsideData(
            "ch5.few_labels: train on the labelled digits you are given, not on the data set"
        )

    @property
    def batches(self) -> int:
        return max(self.calls.values(), default=0)

    @contextlib.contextmanager
    def watching(self, function):
        import sklearn.datasets

        original = sklearn.datasets.load_digits
        namespace = getattr(function, "__globals__", {})
        aliases = [name for name, value in namespace.items() if value is original]
        handle = torch.nn.modules.module.register_module_forward_pre_hook(self.count)
        sklearn.datasets.load_digits = self.refuse_data
        for name in aliases:
            namespace[name] = self.refuse_data
        try:
            yield self
        finally:
            sklearn.datasets.load_digits = original
            for name in aliases:
                namespace[name] = original
            handle.remove()


def _rows(value) -> int:
    """How many examples a Split or a tensor holds (0 for anything else)."""
    if isinstance(value, Split):
        return _rows(value.inputs)
    if isinstance(value, torch.Tensor) and value.ndim >= 1:
        return len(value)
    return 0


def _global_names(code) -> set[str]:
    """The global names a function's code reads (attribute names such as .train excluded),
    its nested functions and comprehensions included."""
    names = {
        instruction.argval
        for instruction in dis.get_instructions(code)
        if instruction.opname in ("LOAD_GLOBAL", "LOAD_NAME")
    }
    for constant in code.co_consts:
        if inspect.iscode(constant):
            names |= _global_names(constant)
    return names


def _outside_digits(function, limit: int) -> list[str]:
    """Names the function (or a function of the notebook it calls) reads that hold more than
    ``limit`` examples: digits loaded outside the function, e.g. a split of an earlier cell."""
    found, seen, waiting = [], set(), [function]
    while waiting:
        current = waiting.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        try:
            nonlocals = inspect.getclosurevars(current).nonlocals
        except TypeError:  # not a Python function (a builtin, a callable object)
            continue
        namespace = current.__globals__
        loaded = _global_names(current.__code__)
        named = {name: namespace[name] for name in loaded if name in namespace} | nonlocals
        for name, value in named.items():
            items = value if isinstance(value, list | tuple) else [value]
            if any(_rows(item) > limit for item in items):
                found.append(name)
            elif inspect.isfunction(value) and value.__module__ == function.__module__:
                waiting.append(value)
    return sorted(set(found))


def _forget_cached_digits() -> None:
    """Drop the probes' cached splits from the kernel before the learner's code runs."""
    _digits.cache_clear()
    _cached_features.cache_clear()
    _LAST_RUN.clear()


@cache
def _pretrained_conv1() -> torch.Tensor:
    return load_backbone("bundled").conv1.weight.detach().clone()


def prepare_few_labels(seed: int, per_class: int, scored_on: str) -> None:
    """Load the digits before the learner's code runs (and before the data set is blocked)."""
    _scored_split(seed, scored_on)
    _few_labels_subset(seed, per_class)
    _pretrained_conv1()


def _few_labels_subset(seed: int, per_class: int) -> Split:
    return per_class_subset(_digits(seed)[0], per_class, seed=seed + 100)


def _distance_from_pretrained(model: nn.Module) -> float | None:
    """How far the model's first convolution is from the bundled backbone's, relative to its
    size (None: no such layer). 0 when conv1 stayed frozen; a fresh SmallResNet, even one
    drawn from the seed pretraining started from, is about 0.26 or more away."""
    weight = getattr(getattr(model, "conv1", None), "weight", None)
    pretrained = _pretrained_conv1()
    if not isinstance(weight, torch.Tensor) or weight.shape != pretrained.shape:
        return None
    return float((weight.detach() - pretrained).norm() / pretrained.norm())


def probe_few_labels(train_with_few_labels, seed: int, per_class: int, scored_on: str) -> dict:
    """The learner's model trained on ``per_class`` labels per class; its budget and predictions.

    Reports the training batches used, whether the function tried to load the digits data
    set or reads digits loaded outside it, its seconds, how close its first convolution is
    to the pretrained one, and the model's predictions on the scored digits (not their labels).
    """
    labelled = _few_labels_subset(seed, per_class)
    scored_inputs = _scored_split(seed, scored_on).inputs
    _forget_cached_digits()  # the scored digits stay in this frame only
    outside = _outside_digits(train_with_few_labels, len(labelled.targets))
    if outside:
        return {"outside_data": outside, "loaded_data": False}
    budget = _Budget()
    torch.manual_seed(seed)
    started = time.perf_counter()
    with budget.watching(train_with_few_labels):
        try:
            model = train_with_few_labels(Split(labelled.inputs.clone(), labelled.targets.clone()))
        except _OutsideData:
            model = None
    report = {
        "batches": budget.batches,
        "loaded_data": budget.loaded_data,
        "seconds": time.perf_counter() - started,
        "returned": type(model).__name__,
    }
    if budget.loaded_data or not isinstance(model, nn.Module):
        return report
    report["distance_from_pretrained"] = _distance_from_pretrained(model)
    model.eval()
    with torch.no_grad():
        report["output_shape"] = list(model(scored_inputs[:2]).shape)
    if report["output_shape"] == [2, 10]:
        report["predictions"] = _predictions(model, scored_inputs)
    return report


def _few_labels_case(params: dict) -> Case:
    seed, per_class, target = params["seed"], params["per_class"], params["min_accuracy"]
    scored_on = params.get("scored_on", "test")
    handed = f"the {10 * per_class} labelled digits handed to you"

    def judge(report: dict) -> Verdict:
        if report.get("outside_data"):
            return Verdict(
                False,
                f"a model trained on {handed}",
                f"the function reads digits loaded outside it: {report['outside_data']}",
                "the budget is the labelled digits you are given: no other digits, loaded "
                "inside or outside your function. Train on the function's argument only",
                "which data does your function read besides its argument?",
            )
        if report["loaded_data"]:
            return Verdict(
                False,
                f"a model trained on {handed}",
                "the function loaded the digits data set itself",
                "the budget is the labelled digits you are given: loading the data set (every "
                "digit, with its label) is not allowed here",
                "which data does your function train on besides its argument?",
            )
        if report["batches"] > MAX_TRAINING_BATCHES:
            return Verdict(
                False,
                f"at most {MAX_TRAINING_BATCHES} training batches",
                f"{report['batches']} batches ({report['seconds']:.1f} s)",
                "over the compute budget: a pretrained start needs far fewer steps than "
                "training from scratch; cut the epochs or train fewer blocks",
                "count your training batches: epochs times batches per epoch",
            )
        if "output_shape" not in report:
            return Verdict(
                False,
                "a trained model",
                report["returned"],
                "return the model you trained",
                "what does the function promise to return?",
            )
        if report["output_shape"] != [2, 10]:
            return Verdict(
                False,
                "10 outputs per image",
                f"output of shape {tuple(report['output_shape'])}",
                "the pretrained model's head scores the pretraining classes: it needs a new "
                "head for the 10 digit classes",
                "how many scores does your model give per image?",
            )
        accuracy = _accuracy(report["predictions"], _scored_split(seed, scored_on).targets)
        if accuracy is None or accuracy < target:
            distance = report.get("distance_from_pretrained")
            if distance is not None and distance < 0.1:
                return Verdict(
                    False,
                    f"{scored_on} accuracy >= {target}",
                    f"{describe(accuracy)} (starting from the pretrained backbone)",
                    "the pretrained start is a good one; the training on top falls short. Tune "
                    "the learning rate (too large a rate wrecks the pretrained features) and "
                    "the number of steps on validation accuracy, and check which blocks train",
                    "print validation accuracy for a few learning rates and step counts: which "
                    "does best?",
                )
            return Verdict(
                False,
                f"{scored_on} accuracy >= {target}",
                describe(accuracy),
                "plain training from scratch reaches about 75% here: which start does "
                "chapter 5's learning curve show doing best with very few labels? Tune on "
                "validation accuracy",
                "which of chapter 5's strategies did best with very few labels per class?",
            )
        return Verdict(
            True,
            expected=f">= {target:.0%}, at most {MAX_TRAINING_BATCHES} batches",
            got=f"{accuracy:.1%} on {scored_on} digits, {report['batches']} batches, "
            f"{report['seconds']:.1f} s",
        )

    return Case(
        f"{per_class} labels per class (seed {seed}), at most {MAX_TRAINING_BATCHES} training "
        f"batches, {scored_on} accuracy >= {target}",
        Probe(probe_few_labels, (seed, per_class, scored_on), prepare=prepare_few_labels),
        judge,
    )


EXERCISES = [
    Exercise(
        id="ch5.freeze_all_but_head",
        title="Freeze all but the head, and count",
        function_name="freeze_all_but_head",
        points=1,
        make_case=_freeze_case,
        public_params=[{"classes": 10}, {"classes": 3}],
        nudge="which parameters must still learn, and what else changes in a layer during "
        "training without any gradient? Chapter 5, section 2",
        praise="only the head trains, BatchNorm keeps its statistics even after model.train(), "
        "and your count is what the optimizer will change.",
        next_step="print parameter_summary(model) after your function and compare it with "
        "freeze() and unfreeze() from course_lib.transfer.",
        minutes=7,
    ),
    Exercise(
        id="ch5.blocks_to_unfreeze",
        title="Which blocks fit a memory budget?",
        function_name="blocks_to_unfreeze",
        points=1,
        make_case=_blocks_case,
        public_params=[
            {"widths": [16, 32, 64, 128], "classes": 10, "budget_bytes": 3_000_000},
            # exactly the cost of fc, layer4 and layer3: a budget met exactly still fits
            {"widths": [8, 16, 32, 64], "classes": 5, "budget_bytes": 870_972},
        ],
        nudge="two questions: what does training with Adam keep in memory for each number it "
        "trains, and in which order would chapter 5 unfreeze the blocks?",
        praise="you priced training in memory (gradient plus Adam's two averages, per trained "
        "number) and spent the budget from the head down, as gradual unfreezing does.",
        next_step="redo the sum for resnet18 (load_backbone('resnet18')): how much memory does "
        "fine-tuning layer4 of the real thing add?",
        kind="derive",
        minutes=8,
    ),
    Exercise(
        id="ch5.param_groups",
        title="Parameter groups, one learning rate per block",
        function_name="make_param_groups",
        points=1,
        make_case=_groups_case,
        public_params=[{"head_lr": 1e-2, "decay": 0.3}, {"head_lr": 3e-3, "decay": 0.5}],
        nudge="discriminative fine-tuning, chapter 5, section 3: which block learns fastest, "
        "and how does the rate change going down?",
        praise="each trained block at its own rate, falling from the head down, and nothing "
        "else trains.",
        next_step="train with decay 1.0 and with 0.1 on the same labelled digits and compare "
        "validation accuracy.",
        minutes=5,
    ),
    Exercise(
        id="ch5.train_head",
        title="Train a head on cached features",
        function_name="train_head",
        points=1,
        make_case=_head_case,
        public_params=[
            {"seed": 0, "per_class": 10, "min_accuracy": 0.85, "scored_on": "validation"}
        ],
        nudge="the head is a single linear layer from the embedding to the classes; how large "
        "a learning rate, and how many steps, can such a small model take?",
        praise="a head on stored embeddings trains in a fraction of a second and classifies the "
        "validation digits well.",
        next_step="compare your head with fit_linear_head (trained to convergence) on 1 label "
        "per class.",
        minutes=5,
    ),
    Exercise(
        id="ch5.fine_tune",
        title="Debug a fine-tuning function",
        function_name="fine_tune",
        points=1,
        make_case=_fine_tune_case,
        public_params=[
            {"check": check, "seed": 0, "per_class": 10, "scored_on": "validation"}
            | ({"min_accuracy": 0.93} if check == "outcome" else {})
            for check in _FINE_TUNE_CHECKS
        ],
        nudge="each failed case names a symptom; for each, ask which line of the recipe "
        "(new head, freezing, optimizer, loss, mode) produces it",
        praise="the head and layer4 train, the frozen blocks stay frozen (BatchNorm too), the loss sees "
        "the logits and the model comes back ready to predict.",
        next_step="put one bug back at a time and watch validation accuracy: which of them "
        "would a score alone have revealed?",
        kind="debug",
        minutes=12,
    ),
    Exercise(
        id="ch5.few_labels",
        title="83% with 3 labels per class",
        function_name="train_with_few_labels",
        points=1,
        make_case=_few_labels_case,
        # while tuning, the learner sees validation accuracy; the hidden case reads the test set
        # of a seed the public case does not use
        public_params=[
            {"seed": 0, "per_class": 3, "min_accuracy": 0.83, "scored_on": "validation"}
        ],
        nudge="chapter 5's learning curve: which start does best with very few labels, and "
        "which blocks does it train?",
        praise="with 30 labelled digits and a small budget, your model reached the target on "
        "validation digits; grading measures it once more, on test digits of a draw you have "
        "not seen.",
        next_step="try 1 label per class, and compare feature extraction with fine-tuning there.",
        kind="experiment",
        minutes=8,
    ),
]
