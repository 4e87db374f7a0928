"""Exercises of chapter 5: transfer learning (solutions/05_transfer_learning.ipynb)."""

from __future__ import annotations

import operator
from functools import cache

import torch
from torch import nn

from course_lib.data import Split, digits_splits, per_class_subset
from course_lib.grading.spec import Case, Exercise, Verdict, describe
from course_lib.train import evaluate
from course_lib.transfer import extract_features, load_backbone, replace_head


def _fresh_model(classes: int) -> nn.Module:
    torch.manual_seed(0)
    return replace_head(load_backbone("small_resnet"), classes)


def _count(parameters) -> int:
    return sum(p.numel() for p in parameters)


def _is_whole_number(value) -> bool:
    """int, numpy or 0-d torch integers count; bools and floats do not."""
    if isinstance(value, bool):
        return False
    try:
        operator.index(value)
    except TypeError:
        return False
    return True


def _batchnorm_layers(module: nn.Module) -> list[nn.Module]:
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


# --- Exercise 11: freeze all but the head ----------------------------------------------------------


def _freeze_case(params: dict) -> Case:
    classes = params["classes"]

    def check(freeze_all_but_head) -> Verdict:
        model = _fresh_model(classes)
        model.train()
        head = _count(model.fc.parameters())
        everything = _count(model.parameters())
        got = freeze_all_but_head(model)
        if isinstance(got, nn.Module):
            return Verdict(False, f"the number {head}", "a model",
                           "return the count: sum(p.numel() for p in model.parameters() if p.requires_grad)")
        if not all(p.requires_grad for p in model.fc.parameters()):
            return Verdict(False, "the head (model.fc) trainable", "the head frozen too",
                           "freeze everything, then set requires_grad = True on model.fc's parameters")
        still_trainable = [
            n for n, p in model.named_parameters() if p.requires_grad and not n.startswith("fc.")
        ]
        if still_trainable:
            return Verdict(False, "only fc's parameters trainable", f"also {still_trainable[:3]} ...",
                           "set requires_grad = False on every parameter outside model.fc")
        statistics = [b.running_mean.clone() for b in _batchnorm_layers(model)]
        model.train()  # what fit() does at the start of every epoch
        with torch.no_grad():
            model(torch.rand(8, 1, 16, 16))  # a forward pass, as a training step makes
        moved = sum(not torch.equal(b.running_mean, before)
                    for b, before in zip(_batchnorm_layers(model), statistics, strict=True))
        if moved:
            return Verdict(False, "BatchNorm statistics unchanged by model.train() and a forward pass",
                           f"{moved} BatchNorm layers updated their running mean",
                           "requires_grad = False does not stop BatchNorm, and model.train() undoes .eval(): "
                           "register a forward pre-hook on each BatchNorm layer that calls module.eval()")
        if _is_whole_number(got) and int(got) == everything:
            return Verdict(False, str(head), str(got),
                           "count only the parameters with requires_grad, not all of them")
        if _is_whole_number(got) and int(got) == len(list(model.fc.parameters())):
            return Verdict(False, str(head), str(got),
                           "count numbers, not tensors: add up p.numel() for each trainable parameter")
        if not _is_whole_number(got) or int(got) != head:
            return Verdict(False, str(head), describe(got),
                           "return sum(p.numel() for p in model.parameters() if p.requires_grad)")
        return Verdict(True)

    return Case(f"a SmallResNet with a {classes}-class head", check)


# --- Exercise 12: parameter groups ------------------------------------------------------------------


def _groups_case(params: dict) -> Case:
    head_lr, backbone_lr = params["head_lr"], params["backbone_lr"]

    def check(make_param_groups) -> Verdict:
        model = _fresh_model(10)
        groups = make_param_groups(model, head_lr, backbone_lr)
        if not isinstance(groups, list | tuple) or not all(isinstance(g, dict) for g in groups):
            return Verdict(False, "a list of dicts with 'params' and 'lr'", describe(groups),
                           "return [{'params': ..., 'lr': head_lr}, {'params': ..., 'lr': backbone_lr}]")
        found = []
        for group in groups:
            members = list(group.get("params", []))
            if any(not isinstance(p, torch.Tensor) for p in members):
                return Verdict(False, "parameters (tensors) in 'params'", "something else",
                               "use model.fc.parameters(), not named_parameters() (that gives (name, tensor) pairs)")
            found.append(({id(p) for p in members}, group.get("lr")))
        fc = {id(p) for p in model.fc.parameters()}
        layer4 = {id(p) for p in model.layer4.parameters()}
        rates = {frozenset(ids): lr for ids, lr in found}
        if rates.get(frozenset(fc)) == backbone_lr and rates.get(frozenset(layer4)) == head_lr:
            return Verdict(False, f"fc at {head_lr:g}, layer4 at {backbone_lr:g}", "the two rates swapped",
                           "the new head learns fastest: head_lr for fc, backbone_lr for layer4")
        if rates.get(frozenset(fc)) != head_lr or rates.get(frozenset(layer4)) != backbone_lr:
            seen = [(len(ids), lr) for ids, lr in found]
            return Verdict(False, f"one group of fc's {len(fc)} tensors at lr {head_lr:g} and one of layer4's "
                           f"{len(layer4)} tensors at lr {backbone_lr:g}", f"groups (tensors, lr): {seen}",
                           "two groups: {'params': model.fc.parameters(), 'lr': head_lr} and the same for layer4")
        if len(found) != 2:
            return Verdict(False, "exactly two groups", f"{len(found)} groups",
                           "other blocks stay frozen: leave them out of the optimizer")
        others = [n for n, p in model.named_parameters()
                  if p.requires_grad and not n.startswith(("fc.", "layer4."))]
        if others:
            return Verdict(False, "blocks other than fc and layer4 frozen", f"{others[:3]} ... still trainable",
                           "set requires_grad = False on every parameter outside fc and layer4")
        if not all(p.requires_grad for p in [*model.fc.parameters(), *model.layer4.parameters()]):
            return Verdict(False, "fc and layer4 trainable", "some of them frozen",
                           "freeze everything first, then set requires_grad = True on fc and layer4")
        # the optimizer accepts them
        torch.optim.SGD(
            make_param_groups(_fresh_model(10), head_lr, backbone_lr)
        )
        return Verdict(True)

    return Case(f"head lr {head_lr:g}, layer4 lr {backbone_lr:g}", check)


# --- Exercises 13 and 14: a head on cached features, and few labels ----------------------------------


@cache
def _digits(seed: int) -> tuple[Split, Split, Split]:
    return digits_splits(size=16, seed=seed)


@cache
def _cached_features(seed: int, per_class: int) -> tuple[Split, Split]:
    train, _, test = _digits(seed)
    backbone = load_backbone("bundled")
    labelled = per_class_subset(train, per_class, seed=seed)
    return extract_features(backbone, labelled), extract_features(backbone, test)


def _head_case(params: dict) -> Case:
    seed, per_class, target = params["seed"], params["per_class"], params["min_accuracy"]

    def check(train_head) -> Verdict:
        train, test = _cached_features(seed, per_class)
        torch.manual_seed(seed)
        head = train_head(Split(train.inputs.clone(), train.targets.clone()))
        if not isinstance(head, nn.Module):
            return Verdict(False, "a trained nn.Linear(128, 10)", describe(head),
                           "return the head you trained: head = nn.Linear(128, 10), train it, return head")
        try:
            output = head(test.inputs[:2])
        except RuntimeError as error:
            return Verdict(False, "a module that takes (N, 128) embeddings", f"it failed: {error}",
                           "the head works on the stored 128-number embeddings, not on images")
        if output.shape != (2, 10):
            return Verdict(False, "10 outputs per embedding", f"output of shape {tuple(output.shape)}",
                           "nn.Linear(128, 10): one score per digit class")
        accuracy = evaluate(head, test)["accuracy"]
        if accuracy < 0.2:
            return Verdict(False, f"test accuracy >= {target}", f"{accuracy:.3f} (chance level)",
                           "the head is not trained: fit(head, features, optimizer=..., loss_fn=..., epochs=...)")
        if accuracy < target:
            return Verdict(False, f"test accuracy >= {target}", f"{accuracy:.3f}",
                           "train longer or with a larger learning rate (Adam, lr 1e-2, 100 steps is enough)")
        return Verdict(True)

    return Case(f"{per_class} labels per class (seed {seed}), test accuracy >= {target}", check)


def _few_labels_case(params: dict) -> Case:
    """Public cases score on the validation split, which a learner may look at while tuning;
    the hidden case (no ``scored_on``) scores once on the test split, when grading."""
    seed, per_class, target = params["seed"], params["per_class"], params["min_accuracy"]
    scored_on = params.get("scored_on", "test")
    if scored_on not in ("validation", "test"):
        raise ValueError(f"scored_on must be 'validation' or 'test', got {scored_on!r}")

    def check(train_with_few_labels) -> Verdict:
        train, val, test = _digits(seed)
        scored = val if scored_on == "validation" else test
        labelled = per_class_subset(train, per_class, seed=seed + 100)
        torch.manual_seed(seed)
        model = train_with_few_labels(Split(labelled.inputs.clone(), labelled.targets.clone()))
        if not isinstance(model, nn.Module):
            return Verdict(
                False, "a trained model", describe(model), "return the model you trained"
            )
        with torch.no_grad():
            output = model.eval()(scored.inputs[:2])
        if output.shape != (2, 10):
            return Verdict(False, "10 outputs per image", f"output of shape {tuple(output.shape)}",
                           "replace the head for the 10 digit classes: replace_head(model, 10)")
        accuracy = evaluate(model, scored)["accuracy"]
        if accuracy < target:
            return Verdict(False, f"{scored_on} accuracy >= {target}", f"{accuracy:.3f}",
                           "so few labels are not enough from scratch: start from load_backbone('bundled') "
                           "and fine-tune layer4 + fc (about 100 steps, lr 1e-3)")
        return Verdict(True)

    return Case(
        f"{per_class} labels per class (seed {seed}), {scored_on} accuracy >= {target}", check
    )


EXERCISES = [
    Exercise(
        id="ch5.freeze_all_but_head",
        title="Freeze all but the head, and count",
        function_name="freeze_all_but_head",
        points=1,
        make_case=_freeze_case,
        public_params=[{"classes": 10}, {"classes": 3}],
        general_hint="requires_grad = False everywhere, True on model.fc; BatchNorm layers .eval(); "
        "return sum(p.numel() for p in model.parameters() if p.requires_grad)",
    ),
    Exercise(
        id="ch5.param_groups",
        title="Parameter groups with two learning rates",
        function_name="make_param_groups",
        points=1,
        make_case=_groups_case,
        public_params=[
            {"head_lr": 1e-2, "backbone_lr": 1e-3},
            {"head_lr": 3e-3, "backbone_lr": 1e-4},
        ],
        general_hint="[{'params': model.fc.parameters(), 'lr': head_lr}, "
        "{'params': model.layer4.parameters(), 'lr': backbone_lr}], the rest frozen",
    ),
    Exercise(
        id="ch5.train_head",
        title="Train a head on cached features",
        function_name="train_head",
        points=1,
        make_case=_head_case,
        public_params=[{"seed": 0, "per_class": 10, "min_accuracy": 0.85}],
        general_hint="head = nn.Linear(128, 10); fit(head, features, optimizer=torch.optim.Adam(head.parameters(), "
        "lr=1e-2), loss_fn=nn.CrossEntropyLoss(), epochs=...); return head",
    ),
    Exercise(
        id="ch5.few_labels",
        title="83% with 3 labels per class",
        function_name="train_with_few_labels",
        points=1,
        make_case=_few_labels_case,
        # while tuning, the learner sees validation accuracy; the hidden case reads the test set
        public_params=[{"seed": 0, "per_class": 3, "min_accuracy": 0.83, "scored_on": "validation"}],
        general_hint="load_backbone('bundled'), replace_head(model, 10), freeze + unfreeze('layer4', 'fc'), "
        "fit about 100 steps with Adam lr 1e-3",
    ),
]
