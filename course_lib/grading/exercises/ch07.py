"""Exercises of chapter 7: scaling out (solutions/07_scaling_out.ipynb).

Five exercises: how DistributedSampler deals out an epoch (derive), steps and learning rate when
the number of workers grows (derive), the number of workers whose step is fastest under the
chapter's cost model (derive), a simulated data-parallel run with planted bugs (debug), and a
large-batch run that must reach a target on data the learner never sees (experiment).

Probes (``probe_*``) run next to the learner's code and only report what it did, as data; every
expected answer and every threshold is computed here, in the judges, in the grader's process.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.utils.data import DistributedSampler

from course_lib.grading.spec import (
    Case,
    Exercise,
    Mistake,
    Probe,
    Verdict,
    compare_with_reference,
)

# --- Exercise 1: shard indices like DistributedSampler ---------------------------------------------


def _sampler_shard(order: list[int], rank: int, world: int) -> list[int]:
    """The oracle: a real DistributedSampler (no shuffle) over positions, mapped to ``order``."""
    sampler = DistributedSampler(range(len(order)), num_replicas=world, rank=rank, shuffle=False)
    return [order[i] for i in sampler]


def _contiguous(order: list[int], rank: int, world: int) -> list[int]:
    size = math.ceil(len(order) / world)
    return order[rank * size : (rank + 1) * size]


def _unpadded(order: list[int], rank: int, world: int) -> list[int]:
    return order[rank::world]


def _truncated(order: list[int], rank: int, world: int) -> list[int]:
    return order[: len(order) // world * world][rank::world]


def _padded_with_the_end(order: list[int], rank: int, world: int) -> list[int]:
    total = math.ceil(len(order) / world) * world
    return (order + [order[-1]] * (total - len(order)))[rank::world]


def _shard_case(params: dict) -> Case:
    length, rank, world, seed = params["length"], params["rank"], params["world"], params["seed"]
    order = torch.randperm(length, generator=torch.Generator().manual_seed(seed)).tolist()
    uneven = (
        ""
        if length % world == 0
        else f"{length} examples do not divide evenly over {world} ranks: "
    )
    case = compare_with_reference(
        f"{length} examples, rank {rank} of {world}",
        (order, rank, world),
        reference=_sampler_shard,
        mistakes=[
            Mistake(
                _contiguous,
                "that is a contiguous block; DistributedSampler deals the order out like "
                "cards, so that each rank's k-th batch comes from the same part of the order",
                "which positions of the order does rank r read? Section 3 of chapter 7 says",
            ),
            Mistake(
                _unpadded,
                uneven + "every rank must get the same count (a rank with a batch fewer would "
                "leave the others waiting in the all-reduce), so the sampler first fills the "
                "order up to a multiple of the world size; find out with what",
                "count the indices each rank gets when the length is not a multiple of the "
                "world size",
            ),
            Mistake(
                _truncated,
                "you dropped the tail so that the order divides evenly: that is what "
                "drop_last=True does; by default the sampler keeps every example and fills up "
                "instead",
                "does every example of the order reach some rank?",
            ),
            Mistake(
                _padded_with_the_end,
                "the count is right, but the sampler does not fill up with the last index: try "
                "it on a short range and see which indices it repeats",
                "which indices does the sampler repeat to fill up? Try it on range(10)",
            ),
        ],
        shape_hint="each rank reads the same number of indices: len(order) / world, rounded up",
    )

    def judge(report: dict) -> Verdict:
        value = report["value"]
        if isinstance(value, torch.Tensor):  # a tensor of indices reads as the list it holds
            value = value.tolist()
        return case.judge({**report, "value": value})

    return Case(case.description, case.probe, judge)


# --- Exercise 2: steps and learning rate when the world grows ---------------------------------------


def _scaled(examples, per_worker_batch, workers, base_lr, base_batch):
    global_batch = per_worker_batch * workers
    return math.ceil(examples / global_batch), base_lr * global_batch / base_batch


def _lr_unscaled(examples, per_worker_batch, workers, base_lr, base_batch):
    return _scaled(examples, per_worker_batch, workers, base_lr, base_batch)[0], base_lr


def _steps_per_worker_batch(examples, per_worker_batch, workers, base_lr, base_batch):
    return math.ceil(examples / per_worker_batch), _scaled(
        examples, per_worker_batch, workers, base_lr, base_batch
    )[1]


def _lr_by_workers(examples, per_worker_batch, workers, base_lr, base_batch):
    return _scaled(examples, per_worker_batch, workers, base_lr, base_batch)[0], base_lr * workers


def _floor_steps(examples, per_worker_batch, workers, base_lr, base_batch):
    steps, lr = _scaled(examples, per_worker_batch, workers, base_lr, base_batch)
    return examples // (per_worker_batch * workers), lr


def _lr_by_per_worker_batch(examples, per_worker_batch, workers, base_lr, base_batch):
    steps, _ = _scaled(examples, per_worker_batch, workers, base_lr, base_batch)
    return steps, base_lr * per_worker_batch / base_batch


def _scale_case(params: dict) -> Case:
    inputs = (
        params["examples"],
        params["per_worker_batch"],
        params["workers"],
        params["base_lr"],
        params["base_batch"],
    )
    examples, per_worker, workers, base_lr, base_batch = inputs
    return compare_with_reference(
        f"{examples} examples, {workers} workers x batch {per_worker}, lr {base_lr:g} "
        f"tuned for batch {base_batch}",
        inputs,
        reference=_scaled,
        mistakes=[
            Mistake(
                _lr_unscaled,
                "the steps are right, the learning rate is not: each step now averages the "
                "gradient over a larger global batch, and the linear scaling rule (Goyal et al., "
                "2017) grows the learning rate in proportion to that batch",
                "the steps are right; does the learning rate stay the same when each step "
                "averages over more examples?",
            ),
            Mistake(
                _steps_per_worker_batch,
                "one step consumes a batch on every worker at once: count steps with the "
                "global batch, not the per-worker one",
                "how many examples does one optimizer step consume, over all workers together?",
            ),
            Mistake(
                _lr_by_workers,
                "the rule scales with the global batch relative to the batch the base learning "
                "rate was tuned for (base_batch), not with the number of workers",
                "the learning rate was tuned for a batch, not for a number of workers",
            ),
            Mistake(
                _lr_by_per_worker_batch,
                "each worker's gradient is averaged with the others' before the step: the "
                "batch that counts for the learning rate is the global one, not the per-worker one",
                "over which examples does the gradient of one step average, after the all-reduce?",
            ),
            Mistake(
                _floor_steps,
                "the last, partial batch is a step too (drop_last=False): round up",
                "what happens to the examples left over after the last full global batch?",
            ),
        ],
        shape_hint="return a pair: (steps per epoch, learning rate)",
    )


# --- Exercise 3 (derive): the number of workers with the fastest step ----------------------------------


def _step_ms(
    workers,
    parameters,
    global_batch,
    fixed_ms,
    per_example_ms,
    bandwidth_gb_s,
    latency_ms,
    *,
    passes=2,
    bytes_per_gradient=4,
    share=True,
    latency=True,
    sharded=True,
):
    """Chapter 7's cost model of one step without overlap: compute on the worker's shard, then a
    ring all-reduce of the float32 gradients. The keywords plant the mistakes."""
    batch = global_batch / workers if sharded else global_batch
    compute = fixed_ms + per_example_ms * batch
    part = (workers - 1) / workers if share else workers - 1
    seconds = passes * part * bytes_per_gradient * parameters / (bandwidth_gb_s * 1e9)
    messages = 2 * (workers - 1) * latency_ms if latency else 0.0
    return compute + 1e3 * seconds + messages


def _fastest(
    parameters,
    global_batch,
    fixed_ms,
    per_example_ms,
    bandwidth_gb_s,
    latency_ms,
    max_workers,
    *,
    divisors=True,
    **mistake,
):
    arguments = (parameters, global_batch, fixed_ms, per_example_ms, bandwidth_gb_s, latency_ms)
    options = [w for w in range(1, max_workers + 1) if global_batch % w == 0 or not divisors]
    best = min(options, key=lambda w: _step_ms(w, *arguments, **mistake))
    return best, _step_ms(best, *arguments, **mistake)


def _planted(**mistake):
    """The answer of a learner who made ``mistake`` (a keyword of _step_ms or _fastest)."""
    return lambda *arguments: _fastest(*arguments, **mistake)


def _fastest_case(params: dict) -> Case:
    inputs = (
        params["parameters"],
        params["global_batch"],
        params["fixed_ms"],
        params["per_example_ms"],
        params["bandwidth_gb_s"],
        params["latency_ms"],
        params["max_workers"],
    )
    return compare_with_reference(
        f"{params['parameters']:,} parameters, global batch {params['global_batch']}, "
        f"{params['bandwidth_gb_s']:g} GB/s, latency {params['latency_ms']:g} ms, up to "
        f"{params['max_workers']} workers",
        inputs,
        reference=_fastest,
        mistakes=[
            Mistake(
                _planted(latency=False),
                "without the latency term more workers always look faster: every worker added "
                "to the ring adds messages, and each message pays the latency (section 4, 'A "
                "depends on W')",
                "what grows with the number of workers in the all-reduce's time?",
            ),
            Mistake(
                _planted(bytes_per_gradient=1),
                "a gradient is a float32 per trainable parameter: count its bytes, not its "
                "elements, against a bandwidth in bytes per second",
                "in which unit is the bandwidth, and in which unit did you count the gradient?",
            ),
            Mistake(
                _planted(passes=1),
                "a ring all-reduce moves the gradient twice: a reduce-scatter, then an all-gather "
                "(section 4 and the FSDP paragraph)",
                "how many times does a ring all-reduce send each worker's share around?",
            ),
            Mistake(
                _planted(share=False),
                "in each pass a worker sends the (W - 1) shares of 1/W of the gradient, not W - 1 "
                "whole copies of it: the bandwidth term hardly grows with W",
                "how much of the gradient does one worker send in one pass of the ring?",
            ),
            Mistake(
                _planted(sharded=False),
                "each worker computes on its shard, the global batch divided among the workers, "
                "not on the whole global batch: that is where the speed-up comes from",
                "on how many examples does each worker compute per step?",
            ),
            Mistake(
                _planted(divisors=False),
                "only worker counts that divide the global batch give every worker the same "
                "shard (unequal shards break the equivalence of section 3): leave the others out",
                "can every number of workers split this global batch evenly?",
            ),
        ],
        tolerance=1e-4,
        shape_hint="return a pair: (number of workers, step time in ms)",
    )


# --- Exercise 4 (debug): a simulated data-parallel run with planted bugs ------------------------------

_FEATURES, _HIDDEN, _CLASSES = 6, 8, 3
_DEBUG_LR = 0.5


def prepare_optimizers(*arguments) -> None:
    """Build one optimizer before the learner's time starts: the first one built in a process
    imports a good part of torch (seconds), which is not the learner's time."""
    torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)


class RecordingReplica(nn.Module):
    """A network that writes down, at every forward pass, which examples it saw (their indices in
    the probe's data set) and whether any of its BatchNorm layers was in training mode. A copy
    (copy.deepcopy, one per replica) keeps its own records."""

    def __init__(self, network: nn.Module, index_of_row: dict):
        super().__init__()
        self.network = network
        self.index_of_row = index_of_row
        self.seen: list[list[int]] = []
        self.batch_norm_training: list[bool] = []

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        self.seen.append([self.index_of_row.get(tuple(row), -1) for row in inputs.tolist()])
        self.batch_norm_training.append(
            any(
                module.training
                for module in self.network.modules()
                if isinstance(module, nn.modules.batchnorm._BatchNorm)
            )
        )
        return self.network(inputs)


def debug_data(seed: int, examples: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``examples`` random inputs of 6 features and random labels of 3 classes."""
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(examples, _FEATURES, generator=generator)
    targets = torch.randint(0, _CLASSES, (examples,), generator=generator)
    return inputs, targets


def debug_network(seed: int, batch_norm: bool) -> nn.Module:
    """A small network (optionally with a BatchNorm layer), its weights and statistics from ``seed``."""
    generator = torch.Generator().manual_seed(seed + 1)
    middle = [nn.BatchNorm1d(_HIDDEN)] if batch_norm else []
    network = nn.Sequential(
        nn.Linear(_FEATURES, _HIDDEN), *middle, nn.Tanh(), nn.Linear(_HIDDEN, _CLASSES)
    )
    with torch.no_grad():
        for parameter in network.parameters():
            parameter.copy_(0.5 * torch.randn(parameter.shape, generator=generator))
        for layer in middle:
            layer.running_mean.copy_(0.5 * torch.randn(_HIDDEN, generator=generator))
            layer.running_var.copy_(0.5 + torch.rand(_HIDDEN, generator=generator))
    return network


def probe_data_parallel(
    train_data_parallel, seed, world, global_batch, steps_per_epoch, epochs, batch_norm
):
    """Run the learner's simulated data-parallel training on recording replicas; report what each
    replica read, the mode of its BatchNorm layers at every forward pass, and its final weights."""
    inputs, targets = debug_data(seed, global_batch * steps_per_epoch)
    index_of_row = {tuple(row): index for index, row in enumerate(inputs.tolist())}
    model = RecordingReplica(debug_network(seed, batch_norm), index_of_row)
    replicas = train_data_parallel(
        model, inputs, targets, world, global_batch, epochs, _DEBUG_LR, seed
    )
    if not isinstance(replicas, list | tuple) or not all(
        isinstance(replica, RecordingReplica) for replica in replicas
    ):
        return {"returned": f"a {type(replicas).__name__}"}
    return {
        "seen": [replica.seen for replica in replicas],
        "batch_norm_training": [replica.batch_norm_training for replica in replicas],
        "parameters": [
            [parameter.detach().clone() for parameter in replica.network.parameters()]
            for replica in replicas
        ],
    }


def _single_process_run(params: dict) -> list[torch.Tensor]:
    """The outcome to reach: one process on the whole global batch, BatchNorm frozen, plain SGD,
    the data in DistributedSampler's order for one replica."""
    examples = params["global_batch"] * params["steps_per_epoch"]
    inputs, targets = debug_data(params["seed"], examples)
    network = debug_network(params["seed"], params["batch_norm"]).eval()
    optimizer = torch.optim.SGD(network.parameters(), lr=_DEBUG_LR)
    batch = params["global_batch"]
    for epoch in range(params["epochs"]):
        sampler = DistributedSampler(
            range(examples), num_replicas=1, rank=0, shuffle=True, seed=params["seed"]
        )
        sampler.set_epoch(epoch)
        order = list(sampler)
        for start in range(0, examples, batch):
            rows = order[start : start + batch]
            loss = nn.functional.cross_entropy(network(inputs[rows]), targets[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return [parameter.detach() for parameter in network.parameters()]


def _averaged_step(params: dict, shards: list[list[int]]) -> list[torch.Tensor]:
    """One SGD step from the initial weights with the average of the replicas' gradients, each
    replica's gradient taken on the examples it actually read (whatever they were)."""
    inputs, targets = debug_data(params["seed"], params["global_batch"] * params["steps_per_epoch"])
    network = debug_network(params["seed"], params["batch_norm"]).eval()
    gradients = []
    for rows in shards:
        loss = nn.functional.cross_entropy(network(inputs[rows]), targets[rows])
        gradients.append(torch.autograd.grad(loss, list(network.parameters())))
    return [
        parameter.detach() - _DEBUG_LR * torch.stack(parts).mean(0)
        for parameter, parts in zip(network.parameters(), zip(*gradients, strict=True), strict=True)
    ]


def _largest_difference(first: list[torch.Tensor], second: list[torch.Tensor]) -> float:
    return max((a - b).abs().max().item() for a, b in zip(first, second, strict=True))


def _distance(first: list[torch.Tensor], second: list[torch.Tensor]) -> float:
    """The Euclidean distance between two lists of tensors taken as one vector."""
    return math.sqrt(sum(((a - b) ** 2).sum().item() for a, b in zip(first, second, strict=True)))


def _steps(params: dict) -> int:
    return params["steps_per_epoch"] * params["epochs"]


def _wrong_return(report: dict) -> Verdict | None:
    if "returned" in report:
        return Verdict(
            False,
            "the list of replicas",
            report["returned"],
            "return the list of replicas (copies of the model you were given), one per rank",
        )
    return None


def _wrong_passes(report: dict, params: dict) -> Verdict | None:
    expected = _steps(params)
    counts = [len(seen) for seen in report["seen"]]
    if len(counts) != params["world"] or any(count != expected for count in counts):
        return Verdict(
            False,
            f"{params['world']} replicas, {expected} forward passes each (one per step)",
            f"{len(counts)} replicas, forward passes {counts}",
            "one replica per rank, and each replica computes the loss of its shard once per step",
        )
    return None


def _judge_shards(params: dict, report: dict) -> Verdict:
    world, per_rank = params["world"], params["global_batch"] // params["world"]
    examples = params["global_batch"] * params["steps_per_epoch"]
    for epoch in range(params["epochs"]):
        read_this_epoch = []
        for step in range(params["steps_per_epoch"]):
            index = epoch * params["steps_per_epoch"] + step
            shards = [seen[index] for seen in report["seen"]]
            if any(len(shard) != per_rank for shard in shards):
                return Verdict(
                    False,
                    f"{per_rank} examples per rank and step",
                    f"shards of {[len(shard) for shard in shards]} examples in step {index}",
                    "each rank reads its share of the global batch per step: the global batch "
                    "divided by the number of ranks",
                )
            for first in range(world):
                for second in range(first + 1, world):
                    shared = set(shards[first]) & set(shards[second])
                    if shared:
                        return Verdict(
                            False,
                            "disjoint shards in every step",
                            f"in step {index}, ranks {first} and {second} both read examples "
                            f"{sorted(shared)[:6]}",
                            "the ranks shuffled differently, so their shards overlap and some "
                            "examples are never read: every rank must draw the same permutation "
                            "(the same seed on every rank) and take only its own positions of it",
                            "compare what two ranks read in the same step; section 3 says what "
                            "the sampler seeds its shuffle with",
                        )
            read_this_epoch += [i for shard in shards for i in shard]
        if sorted(read_this_epoch) != list(range(examples)):
            return Verdict(
                False,
                f"every example read exactly once in epoch {epoch}",
                f"{len(set(read_this_epoch))} of {examples} examples read",
                "over an epoch, the ranks' shards together cover the data set once",
            )
    return Verdict(True)


def _judge_epochs(params: dict, report: dict) -> Verdict:
    steps = params["steps_per_epoch"]
    for rank, seen in enumerate(report["seen"]):
        if seen[:steps] == seen[steps : 2 * steps]:
            return Verdict(
                False,
                "a new shuffle in epoch 1",
                f"rank {rank} read epoch 0's batches again, in the same order",
                "every epoch replays epoch 0's order: the shuffle must change with the epoch, "
                "the way set_epoch changes what DistributedSampler seeds its permutation with "
                "(section 3, and the no-set_epoch run)",
                "print the first shard of epoch 0 and of epoch 1: are they the same?",
            )
    return Verdict(True)


def _judge_batch_norm(params: dict, report: dict) -> Verdict:
    training = [rank for rank, modes in enumerate(report["batch_norm_training"]) if any(modes)]
    if training:
        return Verdict(
            False,
            "BatchNorm in eval mode at every forward pass",
            f"BatchNorm in training mode on replica(s) {training}",
            "in training mode each replica's BatchNorm normalises with the statistics of its own "
            "shard, which one process on the whole batch never computes: after switching a "
            "replica to training, put its BatchNorm layers back in eval mode (chapter 7, "
            "section 3, 'One more condition')",
            "which layer computes something from the batch itself? Section 3, 'One more condition'",
        )
    return Verdict(True)


def _judge_averaging(params: dict, report: dict) -> Verdict:
    shards = [seen[0] for seen in report["seen"]]
    initial = [p.detach() for p in debug_network(params["seed"], False).parameters()]
    expected = _averaged_step(params, shards)
    got = report["parameters"][0]
    if _largest_difference(got, expected) <= 1e-5:
        return Verdict(True)
    ratio = _distance(got, initial) / _distance(expected, initial)
    summary = f"replica 0's first step {ratio:.3g} times the size of the averaged-gradient step"
    if abs(ratio - params["world"]) < 0.05 * params["world"]:
        return Verdict(
            False,
            "the step of the average of the replicas' gradients",
            summary,
            f"your step is {params['world']} times too large: the all-reduce hands every replica "
            "the average of the replicas' gradients, not their sum",
            "compare the size of one step with what one process on the whole batch would take "
            "(section 1)",
        )
    return Verdict(
        False,
        "the step of the average of the replicas' gradients",
        summary,
        "one step must move the weights by the learning rate times the average of the replicas' "
        "gradients (section 1)",
    )


def _judge_replicas(params: dict, report: dict) -> Verdict:
    initial = [p.detach() for p in debug_network(params["seed"], False).parameters()]
    first, others = report["parameters"][0], report["parameters"][1:]
    unchanged = [
        rank for rank, p in enumerate(report["parameters"]) if _largest_difference(p, initial) == 0
    ]
    apart = max((_largest_difference(first, other) for other in others), default=0.0)
    if not unchanged and apart <= 1e-6:
        return Verdict(True)
    return Verdict(
        False,
        "every replica trained, all ending with the same weights",
        f"replicas that never changed: {unchanged}; largest difference between replicas {apart:.2g}",
        "the replicas ended with different weights: every rank takes the optimizer step with the "
        "averaged gradient; only logging and checkpoints are rank 0's alone",
        "after training, compare the replicas' weights: section 1 says why they stay identical",
    )


def _judge_outcome(params: dict, report: dict) -> Verdict:
    expected = _single_process_run(params)
    differences = [_largest_difference(p, expected) for p in report["parameters"]]
    if max(differences) <= 1e-5:
        return Verdict(True)
    return Verdict(
        False,
        "every replica's weights within 1e-5 of one process's training on the global batch",
        f"largest difference {max(differences):.2g}",
        "the run trains something else than one process on the whole global batch: make the "
        "other cases of this exercise pass first; if they do, compare the two runs step by step",
    )


_DEBUG_CHECKS = {
    "shards": ("each step, the ranks read disjoint shards of one global batch", _judge_shards),
    "epochs": ("every epoch is shuffled anew", _judge_epochs),
    "batch_norm": ("BatchNorm stays frozen while the replicas train", _judge_batch_norm),
    "averaging": ("one step uses the average of the replicas' gradients", _judge_averaging),
    "replicas": ("every replica steps, and all end identical", _judge_replicas),
    "outcome": ("the run equals one process training on the global batch", _judge_outcome),
}
# what each check runs: (steps per epoch, epochs, with a BatchNorm layer)
_DEBUG_RUNS = {
    "shards": (2, 2, False),
    "epochs": (2, 2, False),
    "batch_norm": (2, 1, True),
    "averaging": (1, 1, False),
    "replicas": (2, 2, False),
    "outcome": (2, 2, True),
}


def _debug_case(params: dict) -> Case:
    check = params["check"]
    steps_per_epoch, epochs, batch_norm = _DEBUG_RUNS[check]
    run = {**params, "steps_per_epoch": steps_per_epoch, "epochs": epochs, "batch_norm": batch_norm}
    description, judge_run = _DEBUG_CHECKS[check]

    def judge(report: dict) -> Verdict:
        problem = _wrong_return(report) or _wrong_passes(report, run)
        return problem or judge_run(run, report)

    arguments = (
        params["seed"],
        params["world"],
        params["global_batch"],
        steps_per_epoch,
        epochs,
        batch_norm,
    )
    return Case(
        f"{description} ({params['world']} ranks, global batch {params['global_batch']})",
        Probe(probe_data_parallel, arguments, prepare=prepare_optimizers),
        judge,
    )


# --- Exercise 5 (experiment): a larger global batch that still reaches the target ---------------------

_INPUTS, _WIDTH, _LABELS = 16, 64, 4
_TEACHER_SEED = 1000
_TRAIN_EXAMPLES, _VALIDATION_EXAMPLES = 1024, 2048
TARGET_ACCURACY = 0.70


def scaling_task(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(train inputs, train labels, validation inputs, validation labels): 16 random features,
    4 classes given by a fixed random network (the same for every seed)."""
    teacher = torch.Generator().manual_seed(_TEACHER_SEED)
    first = torch.randn(_INPUTS, 32, generator=teacher)
    second = torch.randn(32, _LABELS, generator=teacher)
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(_TRAIN_EXAMPLES + _VALIDATION_EXAMPLES, _INPUTS, generator=generator)
    labels = (torch.tanh(inputs @ first) @ second).argmax(1)
    cut = _TRAIN_EXAMPLES
    return inputs[:cut], labels[:cut], inputs[cut:], labels[cut:]


def scaling_network(seed: int) -> nn.Sequential:
    """The network to train: 16 -> 64 -> 4 with a ReLU, initialised from ``seed`` as PyTorch
    initialises linear layers by default (uniform within 1/sqrt(fan-in))."""
    generator = torch.Generator().manual_seed(seed)
    network = nn.Sequential(nn.Linear(_INPUTS, _WIDTH), nn.ReLU(), nn.Linear(_WIDTH, _LABELS))
    with torch.no_grad():
        for layer in (network[0], network[2]):
            bound = 1 / math.sqrt(layer.in_features)
            for parameter in (layer.weight, layer.bias):
                parameter.copy_((2 * torch.rand(parameter.shape, generator=generator) - 1) * bound)
    return network


def _counter(counts: dict):
    """A forward pre-hook that adds each pass with gradients, and its examples, to ``counts``."""

    def count(module, arguments):
        if torch.is_grad_enabled():
            batch = len(arguments[0])
            counts["passes"] += 1
            counts["examples"] += batch
            counts["largest_batch"] = max(counts["largest_batch"], batch)

    return count


def probe_train_at_scale(train_at_scale, seed, global_batch, epochs, base_lr, base_batch):
    """Hand the learner the training split and a fresh network; count the examples and forward
    passes it trains on (with gradients); report its predictions on the validation inputs."""
    train_inputs, train_labels, validation_inputs, _ = scaling_task(seed)
    network = scaling_network(seed)
    # counted on the whole network and on its first layer (the larger count stands), so that
    # neither replacing that layer nor calling the layers one by one escapes the count
    counters = [{"passes": 0, "examples": 0, "largest_batch": 0} for _ in range(2)]
    hooks = [
        module.register_forward_pre_hook(_counter(counter))  # copies of the network count too
        for module, counter in zip((network, network[0]), counters, strict=True)
    ]
    train_at_scale(network, train_inputs, train_labels, global_batch, epochs, base_lr, base_batch)
    for hook in hooks:
        hook.remove()
    counts = {key: max(counter[key] for counter in counters) for key in counters[0]}
    network.eval()
    with torch.no_grad():
        predictions = network(validation_inputs).argmax(1)
    return {**counts, "predictions": predictions}


def _experiment_case(params: dict) -> Case:
    seed, global_batch, epochs = params["seed"], params["global_batch"], params["epochs"]
    base_lr, base_batch = params["base_lr"], params["base_batch"]
    steps_allowed = epochs * math.ceil(_TRAIN_EXAMPLES / global_batch)
    examples_allowed = epochs * _TRAIN_EXAMPLES

    def judge(report: dict) -> Verdict:
        budget = (
            f"{steps_allowed} training passes and {examples_allowed} examples at most "
            f"({epochs} epochs at a global batch of {global_batch})"
        )
        if report["passes"] > steps_allowed or report["examples"] > examples_allowed:
            return Verdict(
                False,
                budget,
                f"{report['passes']} passes over {report['examples']} examples "
                f"(largest batch {report['largest_batch']})",
                f"the run went over its budget: with {global_batch // base_batch} workers of "
                f"{base_batch}, an epoch is {steps_allowed // epochs} steps of the global batch; "
                "more or smaller steps are not what the workers give you, so make each of those "
                "steps count",
                "count your training passes and the examples they read against the budget",
            )
        labels = scaling_task(seed)[3]
        predictions = report["predictions"]
        accuracy = (predictions.long() == labels).float().mean().item()
        expected = f"validation accuracy of at least {TARGET_ACCURACY:.0%}, with {budget}"
        got = f"{accuracy:.1%} on the check's validation split ({report['passes']} passes)"
        if accuracy >= TARGET_ACCURACY:
            return Verdict(True)
        return Verdict(
            False,
            expected,
            got,
            f"the recipe's learning rate was tuned for batches of {base_batch}; with a global "
            f"batch of {global_batch}, an epoch has {global_batch // base_batch} times fewer "
            "steps, each averaging over more examples. Scale the learning rate as the linear "
            "scaling rule says, and if the first steps then blow up, ramp it up over a few "
            "steps (warm-up); compare on your own validation split",
            "how many steps does your run take, compared with the recipe's at its batch? "
            "Chapter 7, section 6, on a larger global batch",
        )

    return Case(
        f"data seed {seed}: {epochs} epochs at a global batch of {global_batch}",
        Probe(
            probe_train_at_scale,
            (seed, global_batch, epochs, base_lr, base_batch),
            prepare=prepare_optimizers,
        ),
        judge,
    )


# --- the exercises --------------------------------------------------------------------------------------

EXERCISES = [
    Exercise(
        id="ch7.shard_indices",
        title="Shard indices like DistributedSampler",
        function_name="shard_indices",
        points=1,
        make_case=_shard_case,
        public_params=[
            {"length": 12, "rank": 1, "world": 2, "seed": 0},
            {"length": 10, "rank": 3, "world": 4, "seed": 1},
            {"length": 10, "rank": 1, "world": 4, "seed": 2},
        ],
        nudge="section 3 of chapter 7 says which positions of the shuffled order a rank reads; "
        "try the sampler on a short range in a cell of your own and compare with your function",
        praise="your shards match DistributedSampler's: the same count on every rank, dealt out "
        "like cards, filled up the way the sampler fills up.",
        next_step="find out what drop_last=True changes, and why filling up counts a few "
        "examples twice in a distributed evaluation.",
        kind="derive",
        minutes=8,
    ),
    Exercise(
        id="ch7.scale_for_workers",
        title="Steps and learning rate when the world size grows",
        function_name="scale_for_workers",
        points=1,
        make_case=_scale_case,
        public_params=[
            {
                "examples": 256,
                "per_worker_batch": 32,
                "workers": 4,
                "base_lr": 0.05,
                "base_batch": 64,
            },
            {
                "examples": 1000,
                "per_worker_batch": 32,
                "workers": 2,
                "base_lr": 0.1,
                "base_batch": 32,
            },
        ],
        nudge="work out first how many examples one optimizer step consumes over all workers; "
        "both answers follow from it (chapter 7, section 6)",
        praise="you counted steps with the global batch, rounded the partial batch up, and "
        "scaled the learning rate by the global batch relative to the tuned one.",
        next_step="look up why the linear scaling rule needs a warm-up, and where Goyal et al. "
        "saw it stop working.",
        kind="derive",
        minutes=6,
    ),
    Exercise(
        id="ch7.fastest_world_size",
        title="How many workers make the fastest step",
        function_name="fastest_world_size",
        points=1,
        make_case=_fastest_case,
        public_params=[
            {
                "parameters": 25_000_000,
                "global_batch": 256,
                "fixed_ms": 5,
                "per_example_ms": 1.0,
                "bandwidth_gb_s": 10,
                "latency_ms": 1.0,
                "max_workers": 16,
            },
            {
                "parameters": 230_666,
                "global_batch": 64,
                "fixed_ms": 2,
                "per_example_ms": 0.05,
                "bandwidth_gb_s": 1,
                "latency_ms": 0.5,
                "max_workers": 8,
            },
        ],
        nudge="write the step time for W workers as the sum of section 4's two costs, each with "
        "its units, then try every admissible W",
        praise="your step time adds the compute on the shard to the ring all-reduce's bandwidth "
        "and latency terms, in consistent units, over the worker counts that split the batch "
        "evenly.",
        next_step="find the bandwidth at which 16 workers become the fastest for the first case, "
        "and compare it with NVLink's and with a 10 Gb/s network's.",
        kind="derive",
        minutes=7,
    ),
    Exercise(
        id="ch7.train_data_parallel",
        title="Debug a simulated data-parallel run",
        function_name="train_data_parallel",
        points=3,
        make_case=_debug_case,
        public_params=[
            {"check": check, "seed": 0, "world": 2, "global_batch": 8} for check in _DEBUG_CHECKS
        ],
        nudge="read the docstring sentence by sentence against the code: each sentence is a "
        "promise the code must keep, and sections 1 and 3 of chapter 7 say why",
        praise="your simulated run is one process's training on the global batch: one shuffle "
        "per epoch shared by all ranks, frozen BatchNorm, averaged gradients and the same step "
        "on every replica.",
        next_step="plant a loss summed over the batch instead of averaged, and predict by how "
        "much the first step changes before you run it.",
        kind="debug",
        minutes=14,
    ),
    Exercise(
        id="ch7.train_at_scale",
        title="A global batch 8 times larger, the same accuracy",
        function_name="train_at_scale",
        points=2,
        make_case=_experiment_case,
        public_params=[
            {"seed": 5, "global_batch": 256, "epochs": 4, "base_lr": 0.05, "base_batch": 32}
        ],
        nudge="train with the recipe unchanged at the large batch first and compare its "
        "validation accuracy and its number of steps with the recipe at batch 32",
        praise="your run reaches the target on unseen data within the workers' budget: 8 times "
        "fewer steps than the recipe, each made to count for more.",
        next_step="try global batches of 128 and 512 with your recipe and find where it stops "
        "reaching the target.",
        kind="experiment",
        minutes=12,
    ),
]
