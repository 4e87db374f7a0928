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
from torch.optim.optimizer import register_optimizer_step_pre_hook
from torch.overrides import TorchFunctionMode
from torch.utils.data import DistributedSampler

from course_lib.grading.probing import call
from course_lib.grading.spec import (
    Case,
    Exercise,
    Mistake,
    Probe,
    Verdict,
    close,
    compare_with_reference,
    describe,
)

# --- Exercise 1: shard indices like DistributedSampler ---------------------------------------------


def _sampler_shard(order: list[int], rank: int, world: int) -> list[int]:
    """The oracle: a real DistributedSampler (no shuffle) over positions, mapped to ``order``."""
    sampler = DistributedSampler(range(len(order)), num_replicas=world, rank=rank, shuffle=False)
    return [order[i] for i in sampler]


def _missing(order: list[int], world: int) -> int:
    """How many indices the sampler adds so that the order divides evenly over ``world``."""
    return math.ceil(len(order) / world) * world - len(order)


def _unpadded(order: list[int], rank: int, world: int) -> list[int]:
    return order[rank::world]


def _truncated(order: list[int], rank: int, world: int) -> list[int]:
    return order[: len(order) // world * world][rank::world]


def _contiguous(order: list[int], rank: int, world: int) -> list[int]:
    size = math.ceil(len(order) / world)
    return order[rank * size : (rank + 1) * size]


def _contiguous_after_filling_up(order: list[int], rank: int, world: int) -> list[int]:
    size = math.ceil(len(order) / world)
    padded = (order * (size * world // max(len(order), 1) + 1))[: size * world]
    return padded[rank * size : (rank + 1) * size]


def _padded_with_the_last(order: list[int], rank: int, world: int) -> list[int]:
    return (order + [order[-1]] * _missing(order, world))[rank::world]


def _padded_with_the_tail(order: list[int], rank: int, world: int) -> list[int]:
    missing = _missing(order, world)
    return (order + (order[-missing:] if missing else []))[rank::world]


_NOT_FROM_THE_END = (
    "the count is right, but the sampler does not fill up from the end of the order (neither "
    "with the last index nor with the last few): see which positions it repeats on a short range"
)
_COUNT_MISTAKES = [  # the ones that get the count wrong
    Mistake(
        _unpadded,
        "every rank must get the same count (a rank with a batch fewer would leave the others "
        "waiting in the all-reduce), so the sampler first fills the order up to a multiple of "
        "the world size; find out with which indices",
        "count the indices each rank gets when the length is not a multiple of the world size",
    ),
    Mistake(
        _truncated,
        "you dropped the tail so that the order divides evenly: that is what drop_last=True "
        "does; by default the sampler keeps every example and fills up instead",
        "does every example of the order reach some rank?",
    ),
]
_LAYOUT_MISTAKES = [  # the ones with the right count, dealt out or filled up otherwise
    Mistake(
        _contiguous,
        "that is a contiguous block; DistributedSampler deals the order out like cards, so "
        "that each rank's k-th batch comes from the same part of the order",
        "which positions of the order does rank r read? Section 3 of chapter 7 says",
    ),
    Mistake(
        _contiguous_after_filling_up,
        "you filled up the right way, then gave each rank a contiguous block of the filled-up "
        "order; the sampler deals it out like cards instead, so that each rank's k-th batch "
        "comes from the same part of the order",
        "which positions of the filled-up order does rank r read? Section 3 of chapter 7 says",
    ),
    Mistake(
        _padded_with_the_last,
        _NOT_FROM_THE_END,
        "which indices does the sampler repeat to fill up? Try it on range(10)",
    ),
    Mistake(
        _padded_with_the_tail,
        _NOT_FROM_THE_END,
        "which indices does the sampler repeat to fill up? Try it on range(10)",
    ),
]


def _as_list(value):
    """A tensor of indices reads as the list it holds; a tuple as a list."""
    if isinstance(value, torch.Tensor):
        return value.tolist()
    return list(value) if isinstance(value, tuple) else value


def _shown(value) -> str:
    """A list of indices as a list, with brackets (an empty one reads [], not as the number 0)."""
    if isinstance(value, list):
        return (
            "["
            + ", ".join(str(item) for item in value[:12])
            + (", ..." if len(value) > 12 else "")
            + "]"
        )
    return describe(value)


def _count(number: int) -> str:
    return f"{number} index" if number == 1 else f"{number} indices"


def _judge_shard(order: list[int], rank: int, world: int, value) -> Verdict:
    got = _as_list(value)
    expected = _sampler_shard(order, rank, world)
    if got == expected:
        return Verdict(True)
    shown = (_shown(expected), _shown(got))
    for mistake in _COUNT_MISTAKES if got else []:  # an empty answer matches several mistakes
        if got == mistake.wrong(list(order), rank, world):
            return Verdict(False, *shown, mistake.hint, mistake.nudge)
    if not isinstance(got, list) or len(got) != len(expected):  # the count before the layout
        count = _count(len(got)) if isinstance(got, list) else "no list of indices"
        short = (
            f"; {_missing(order, world)} indices are missing and the order has only {len(order)}"
            ": the sampler repeats it as often as it takes"
            if _missing(order, world) > len(order)
            else ""
        )
        return Verdict(
            False,
            *shown,
            f"rank {rank} must read {_count(len(expected))} ({len(order)} examples over {world} "
            f"ranks, rounded up, so that every rank gets as many); you returned {count}{short}",
            "count the indices each rank gets, also when the order is shorter than the world",
        )
    for mistake in _LAYOUT_MISTAKES:
        if got == mistake.wrong(list(order), rank, world):
            return Verdict(False, *shown, mistake.hint, mistake.nudge)
    if sorted(got) == sorted(expected):
        return Verdict(
            False,
            *shown,
            "the right indices in another order: a rank reads its indices in the order they "
            "come in the (filled-up) epoch order",
            "in which order does the sampler hand a rank its indices?",
        )
    return Verdict(
        False,
        *shown,
        "the count is right, the indices are not the sampler's: list, for a short range, which "
        "positions each rank reads, and which positions the sampler repeats to fill up",
        "compare your function with the sampler on range(10) for 3 and 4 ranks",
    )


def _shard_case(params: dict) -> Case:
    length, rank, world, seed = params["length"], params["rank"], params["world"], params["seed"]
    order = torch.randperm(length, generator=torch.Generator().manual_seed(seed)).tolist()
    return Case(
        f"{length} examples, rank {rank} of {world}",
        Probe(call, (order, rank, world)),
        lambda report: _judge_shard(order, rank, world, report["value"]),
    )


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


def _lr_square_root(examples, per_worker_batch, workers, base_lr, base_batch):
    steps, _ = _scaled(examples, per_worker_batch, workers, base_lr, base_batch)
    return steps, base_lr * math.sqrt(per_worker_batch * workers / base_batch)


def _scale_fallback(inputs: tuple, got) -> Verdict:
    """A pointed hint when no planted mistake matches: which half is off, and by how much."""
    expected = _scaled(*inputs)
    shown = (describe(expected), describe(got))
    if not (isinstance(got, tuple | list) and len(got) == 2):
        return Verdict(False, *shown, "return a pair: (steps per epoch, learning rate)")
    steps, lr = got
    steps_right = close(steps, expected[0])
    lr_right = close(lr, expected[1])
    if steps_right and not lr_right:
        factor = float(lr) / expected[1] if expected[1] else float("nan")
        return Verdict(
            False,
            *shown,
            f"the steps are right; your learning rate is {factor:.3g} times the rule's: which "
            "batch was base_lr tuned for, and over how many examples does one step of the new "
            "run average? The linear rule relates the learning rate to those two batches alone",
        )
    if lr_right and not steps_right:
        return Verdict(
            False,
            *shown,
            f"the learning rate is right; the steps are not: {inputs[0]} examples in global "
            "batches, the last one possibly partial, make how many steps?",
        )
    return Verdict(
        False,
        *shown,
        "both numbers are off: first work out the global batch (all workers' examples of one "
        "step together); the steps and the learning rate both follow from it",
    )


def _scale_case(params: dict) -> Case:
    inputs = (
        params["examples"],
        params["per_worker_batch"],
        params["workers"],
        params["base_lr"],
        params["base_batch"],
    )
    examples, per_worker, workers, base_lr, base_batch = inputs
    case = compare_with_reference(
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
            Mistake(
                _lr_square_root,
                "that is square-root scaling (a rule some use with Adam); the linear scaling rule "
                "of chapter 7, section 6, grows the learning rate in proportion to the global "
                "batch, not to its square root",
                "the steps are right; which scaling rule does section 6 of chapter 7 use?",
            ),
        ],
        shape_hint="return a pair: (steps per epoch, learning rate)",
    )

    def judge(report: dict) -> Verdict:
        verdict = case.judge(report)
        if verdict.passed or verdict.hint:
            return verdict
        return _scale_fallback(inputs, report["value"])

    return Case(case.description, case.probe, judge)


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
    messages="ring",
    bytes_per_gb=1e9,
):
    """Chapter 7's cost model of one step without overlap: compute on the worker's shard, then a
    ring all-reduce of the float32 gradients. The keywords plant the mistakes."""
    batch = global_batch / workers if sharded else global_batch
    compute = fixed_ms + per_example_ms * batch
    part = (workers - 1) / workers if share else workers - 1
    seconds = passes * part * bytes_per_gradient * parameters / (bandwidth_gb_s * bytes_per_gb)
    count = {"ring": 2 * (workers - 1), "hops": workers - 1, "tree": math.log2(workers)}[messages]
    return compute + 1e3 * seconds + (count * latency_ms if latency else 0.0)


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


def _fastest_fallback(inputs: tuple, got) -> Verdict:
    """A pointed hint when no planted mistake matches: the learner's time against the model's."""
    expected = _fastest(*inputs)
    shown = (describe(expected), describe(got))
    if not (isinstance(got, tuple | list) and len(got) == 2):
        return Verdict(False, *shown, "return a pair: (number of workers, step time in ms)")
    workers, their_ms = got
    if not close(workers, round(float(workers))) or not 1 <= round(float(workers)) <= inputs[-1]:
        return Verdict(
            False, *shown, f"the number of workers is a whole number from 1 to {inputs[-1]}"
        )
    workers = round(float(workers))
    if inputs[1] % workers:
        return Verdict(
            False,
            *shown,
            f"{workers} workers cannot split a global batch of {inputs[1]} evenly: leave such "
            "worker counts out",
        )
    model_ms = _step_ms(workers, *inputs[:-1])
    if close(their_ms, model_ms, 1e-4):
        return Verdict(
            False,
            *shown,
            f"your time for {workers} workers is the cost model's, but {expected[0]} workers are "
            "faster: compare every admissible number of workers and keep the fastest (the smaller "
            "on a tie)",
        )
    direction = "short" if float(their_ms) < model_ms else "long"
    where = "a term is missing or too small" if direction == "short" else "a term is too large"
    return Verdict(
        False,
        *shown,
        f"for {workers} workers the cost model gives {model_ms:.4g} ms, you {float(their_ms):.4g} "
        f"ms, {abs(float(their_ms) - model_ms):.3g} ms too {direction}: {where}. Work out the "
        "compute, the bandwidth term and the latency term apart for that W, each in ms",
    )


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
    case = compare_with_reference(
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
                _planted(messages="hops"),
                "you counted W - 1 latencies: a ring all-reduce is two passes around the ring (a "
                "reduce-scatter, then an all-gather), each of W - 1 rounds of messages: count "
                "the messages as section 4 does",
                "how many rounds of messages does a ring all-reduce take, in both of its passes?",
            ),
            Mistake(
                _planted(messages="tree"),
                "you counted log2(W) latencies, as a tree all-reduce would pay; chapter 7's ring "
                "sends its messages around the ring, twice W - 1 rounds: count the messages as "
                "section 4 does",
                "is chapter 7's all-reduce a tree or a ring? Count its rounds of messages",
            ),
            Mistake(
                _planted(bytes_per_gb=2**30),
                "you took a GB as 2^30 bytes (a GiB); the bandwidth here is in GB of 10^9 bytes",
                "how many bytes is one GB of the bandwidth, as the exercise defines it?",
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

    def judge(report: dict) -> Verdict:
        verdict = case.judge(report)
        if verdict.passed or verdict.hint:
            return verdict
        return _fastest_fallback(inputs, report["value"])

    return Case(case.description, case.probe, judge)


# --- Exercise 4 (debug): a simulated data-parallel run with planted bugs ------------------------------

_FEATURES, _HIDDEN, _CLASSES = 6, 8, 3
_DEBUG_LR = 0.5


def prepare_optimizers(*arguments) -> None:
    """Build one optimizer before the learner's time starts: the first one built in a process
    imports a good part of torch (seconds), which is not the learner's time."""
    torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)


class SharedRegistry(list):
    """The replicas that ran a forward pass, shared by every copy (deepcopy keeps this one)."""

    def __deepcopy__(self, memo):
        return self


class RecordingReplica(nn.Module):
    """A network that writes down, at every forward pass, which examples it saw (their indices in
    the probe's data set) and whether any of its BatchNorm layers was in training mode. A copy
    (copy.deepcopy, one per replica) keeps its own records; every copy that ran a forward pass is
    in the shared registry, so that the first optimizer step can record every replica's .grad."""

    def __init__(self, network: nn.Module, index_of_row: dict):
        super().__init__()
        self.network = network
        self.index_of_row = index_of_row
        self.registry = SharedRegistry()
        self.seen: list[list[int]] = []
        self.batch_norm_training: list[bool] = []
        self.gradients_at_first_step = None

    def record_gradients(self) -> None:
        self.gradients_at_first_step = [
            None if p.grad is None else p.grad.detach().clone() for p in self.network.parameters()
        ]

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        if not any(replica is self for replica in self.registry):
            self.registry.append(self)
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

    def before_the_first_step(optimizer, args, kwargs):
        if not any(replica.gradients_at_first_step is not None for replica in model.registry):
            for replica in model.registry:
                replica.record_gradients()

    hook = register_optimizer_step_pre_hook(before_the_first_step)
    try:
        replicas = train_data_parallel(
            model, inputs, targets, world, global_batch, epochs, _DEBUG_LR, seed
        )
    finally:
        hook.remove()
    if not isinstance(replicas, list | tuple) or not all(
        isinstance(replica, RecordingReplica) for replica in replicas
    ):
        return {"returned": f"a {type(replicas).__name__}"}
    for replica in replicas:  # no torch optimizer stepped: the .grad left at the end
        if replica.gradients_at_first_step is None:
            replica.record_gradients()
    return {
        "seen": [replica.seen for replica in replicas],
        "batch_norm_training": [replica.batch_norm_training for replica in replicas],
        "parameters": [
            [parameter.detach().clone() for parameter in replica.network.parameters()]
            for replica in replicas
        ],
        "gradients": [replica.gradients_at_first_step for replica in replicas],
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


def _averaged_gradient(params: dict, shards: list[list[int]]) -> list[torch.Tensor]:
    """The average of the replicas' gradients at the initial weights, each replica's gradient
    taken on the examples it actually read (whatever they were): what DDP leaves in .grad."""
    inputs, targets = debug_data(params["seed"], params["global_batch"] * params["steps_per_epoch"])
    network = debug_network(params["seed"], params["batch_norm"]).eval()
    gradients = []
    for rows in shards:
        loss = nn.functional.cross_entropy(network(inputs[rows]), targets[rows])
        gradients.append(torch.autograd.grad(loss, list(network.parameters())))
    return [torch.stack(parts).mean(0) for parts in zip(*gradients, strict=True)]


def _averaged_step(params: dict, average: list[torch.Tensor]) -> list[torch.Tensor]:
    """One SGD step from the initial weights with the averaged gradient."""
    initial = debug_network(params["seed"], params["batch_norm"]).parameters()
    return [p.detach() - _DEBUG_LR * g for p, g in zip(initial, average, strict=True)]


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
                            "the ranks' shards overlap, and some examples are never read: each "
                            "rank draws a permutation of its own, so the positions it takes no "
                            "longer split one shuffle among the ranks (section 3: what does the "
                            "sampler seed its shuffle with, and what does it not depend on?)",
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
            "BatchNorm normalising with its stored statistics at every forward pass",
            f"BatchNorm normalising with its shard's statistics on replica(s) {training}",
            "a replica's BatchNorm runs in training mode, so it normalises with the statistics "
            "of its own shard, which one process on the whole batch never computes; switching a "
            "whole replica to training switches its BatchNorm layers too (chapter 7, section 3, "
            "'One more condition')",
            "which layer computes something from the batch itself? Section 3, 'One more condition'",
        )
    return Verdict(True)


def _judge_averaging(params: dict, report: dict) -> Verdict:
    shards = [seen[0] for seen in report["seen"]]
    initial = [p.detach() for p in debug_network(params["seed"], False).parameters()]
    average = _averaged_gradient(params, shards)
    expected = _averaged_step(params, average)
    got = report["parameters"][0]
    if _largest_difference(got, expected) > 1e-5:
        return _wrong_step(params, got, expected, initial)
    return _wrong_gradients(params, report["gradients"], average) or Verdict(True)


def _wrong_step(params: dict, got: list, expected: list, initial: list) -> Verdict:
    ratio = _distance(got, initial) / _distance(expected, initial)
    summary = f"replica 0's first step {ratio:.3g} times the size of the averaged-gradient step"
    world = params["world"]
    if abs(ratio - world) < 0.05 * world:
        return Verdict(
            False,
            "the step of the average of the replicas' gradients",
            summary,
            f"your step is {world} times too large: the replicas' gradients were added up where "
            "the all-reduce of DDP leaves their average (section 1)",
            "compare the size of one step with what one process on the whole batch would take "
            "(section 1)",
        )
    return Verdict(
        False,
        "the step of the average of the replicas' gradients",
        summary,
        "one step must move the weights by the learning rate times the average of the replicas' "
        "gradients (section 1): print replica 0's weights before and after the first step and "
        "compare with one process's step on the global batch",
        "compare the size of one step with what one process on the whole batch would take "
        "(section 1)",
    )


def _wrong_gradients(params: dict, gradients: list, average: list) -> Verdict | None:
    """Each replica's .grad at the first step (or at the end) must hold the averaged gradient."""
    for rank, held in enumerate(gradients):
        if held is None or any(g is None for g in held):
            continue  # nothing left to look at (set to None after the step): the step decides
        if _largest_difference(held, average) <= 1e-5:
            continue
        scale = _distance(held, [0 * g for g in average]) / _distance(
            average, [0 * g for g in average]
        )
        times = f"{scale:.3g} times the size of the average"
        return Verdict(
            False,
            "every replica's .grad holding the average of the replicas' gradients, as DDP leaves it",
            f"replica {rank}'s .grad at the first step is {times}",
            (
                f"the step is right, but .grad holds {params['world']} times the average, the "
                "sum: scaling the learning rate down makes plain SGD agree, not momentum, weight "
                "decay, gradient clipping or anything else that reads .grad (section 1)"
                if abs(scale - params["world"]) < 0.05 * params["world"]
                else "the step is right, but .grad does not hold the averaged gradient: anything "
                "that reads .grad after the all-reduce (momentum, clipping, logging) sees "
                "something else than with DDP (section 1)"
            ),
            "print a replica's .grad after the all-reduce and compare with one process's "
            "gradient on the global batch",
        )
    return None


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
        "some replicas never step, so their weights stay where they started and drift apart "
        "from the others: with DDP every rank steps with the averaged gradient; only logging and "
        "checkpoints are rank 0's alone",
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
    "shards": ("in every step, no example is read by two ranks", _judge_shards),
    "epochs": ("epoch 1 reads the examples in another order than epoch 0", _judge_epochs),
    "batch_norm": (
        "the network's outputs during training do not depend on which examples share a shard",
        _judge_batch_norm,
    ),
    "averaging": (
        "the first step, and .grad, are one process's on the global batch",
        _judge_averaging,
    ),
    "replicas": (
        "after training, every replica's weights have moved, and all agree",
        _judge_replicas,
    ),
    "outcome": ("the final weights are one process's training on the global batch", _judge_outcome),
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
TARGET_ACCURACY = 0.72  # the recipe at its batch ~75%; unchanged at 256 ~62-68%; lr x2 ~70%


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


_LINEAR_OPS = {  # the operations a forward pass through a linear layer goes through, however written
    "linear": 0,
    "matmul": 0,
    "mm": 0,
    "__matmul__": 0,
    "__rmatmul__": 1,
    "addmm": 1,
    "bmm": 0,
}
_BACKWARD_OPS = {"backward", "grad"}  # Tensor.backward, torch.autograd.backward and .grad


class TrainingCounter(TorchFunctionMode):
    """Counts, while the learner's function runs, every backward pass, and every product with
    the inputs' width (a first layer's forward pass, however written) computed with gradients
    on: whatever model it goes through, a copy, a fresh network or a hand-written forward."""

    def __init__(self, width: int):
        super().__init__()
        self.width = width
        self.counts = {"passes": 0, "examples": 0, "largest_batch": 0, "backward": 0}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in _BACKWARD_OPS:
            self.counts["backward"] += 1
        elif name in _LINEAR_OPS and torch.is_grad_enabled():
            self._count_forward(
                args[_LINEAR_OPS[name]] if len(args) > _LINEAR_OPS[name] else None, args
            )
        return func(*args, **(kwargs or {}))

    def _count_forward(self, data, args) -> None:
        tensors = [a for a in args if isinstance(a, torch.Tensor)]
        if not isinstance(data, torch.Tensor) or data.dim() < 2 or data.shape[-1] != self.width:
            return
        if not any(t.requires_grad for t in tensors):
            return
        rows = data[..., 0].numel()
        self.counts["passes"] += 1
        self.counts["examples"] += rows
        self.counts["largest_batch"] = max(self.counts["largest_batch"], rows)


def probe_train_at_scale(train_at_scale, seed, global_batch, epochs, base_lr, base_batch):
    """Hand the learner the training split and a fresh network; count the training passes and
    the examples through them (with gradients), three ways; report its predictions on the
    validation inputs."""
    train_inputs, train_labels, validation_inputs, _ = scaling_task(seed)
    network = scaling_network(seed)
    # hooks on the network and on its first layer (copies of the network count too) ...
    counters = [{"passes": 0, "examples": 0, "largest_batch": 0} for _ in range(2)]
    hooks = [
        module.register_forward_pre_hook(_counter(counter))
        for module, counter in zip((network, network[0]), counters, strict=True)
    ]
    # ... and every linear product and backward pass while the learner's function runs
    counter = TrainingCounter(_INPUTS)
    try:
        with counter:
            train_at_scale(
                network, train_inputs, train_labels, global_batch, epochs, base_lr, base_batch
            )
    finally:
        for hook in hooks:
            hook.remove()
    counts = {key: max(c[key] for c in [*counters, counter.counts]) for key in counters[0]}
    counts["backward"] = counter.counts["backward"]
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
        steps = max(report["passes"], report["backward"])
        if steps > steps_allowed or report["examples"] > examples_allowed:
            return Verdict(
                False,
                budget,
                f"{report['passes']} forward passes with gradients over {report['examples']} "
                f"examples (largest batch {report['largest_batch']}), {report['backward']} "
                "backward passes",
                f"the run went over its budget: with {global_batch // base_batch} workers of "
                f"{base_batch}, an epoch is {steps_allowed // epochs} steps of the global batch, "
                "counted on every network your function trains (copies, fresh networks, "
                "hand-written forward passes included); more or smaller steps are not what the "
                "workers give you, so make each of those steps count",
                "count your training passes and the examples they read against the budget",
            )
        labels = scaling_task(seed)[3]
        predictions = report["predictions"]
        accuracy = (predictions.long() == labels).float().mean().item()
        got = f"{accuracy:.1%} on the check's validation split ({steps} steps)"
        if accuracy >= TARGET_ACCURACY:
            return Verdict(
                True,
                f">= {TARGET_ACCURACY:.0%} within {steps_allowed} steps of {global_batch}",
                got,
            )
        recipe_steps = epochs * math.ceil(_TRAIN_EXAMPLES / base_batch)
        return Verdict(
            False,
            f"validation accuracy of at least {TARGET_ACCURACY:.0%}, with {budget}",
            got,
            f"your run takes {steps_allowed} steps where the recipe took {recipe_steps}: how far "
            f"do the weights travel in your {steps_allowed} steps, compared with the recipe's "
            f"{recipe_steps}? Measure both on a seed of your own (chapter 7, section 6, on a "
            "larger global batch), and watch the first steps of whatever you change",
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
            {"length": 2, "rank": 4, "world": 5, "seed": 3},
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
