"""Exercises of chapter 7: scaling out (solutions/07_scaling_out.ipynb)."""

from __future__ import annotations

import math

import torch
from torch.utils.data import DistributedSampler

from course_lib.grading.spec import (
    Case,
    Exercise,
    Mistake,
    Verdict,
    compare_with_reference,
    describe,
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


def _shard_case(params: dict) -> Case:
    length, rank, world, seed = params["length"], params["rank"], params["world"], params["seed"]
    order = torch.randperm(length, generator=torch.Generator().manual_seed(seed)).tolist()
    compare = compare_with_reference(
        (order, rank, world),
        _sampler_shard,
        [
            Mistake(
                _contiguous,
                "that is a contiguous block; DistributedSampler deals the order out like "
                "cards, so that each rank's k-th batch comes from the same part of the order",
            ),
            Mistake(
                _unpadded,
                f"{length} examples do not divide evenly over {world} ranks: every rank must "
                "get the same count (a rank with one batch fewer would leave the others "
                "waiting in the all-reduce), so the order is first padded with its own start",
            ),
        ],
    )

    def check(shard_indices) -> Verdict:
        got = shard_indices(list(order), rank, world)
        if isinstance(got, torch.Tensor):
            got = got.tolist()
        if not isinstance(got, list | tuple):
            return Verdict(False, "a list of indices", describe(got), "return a list")
        return compare(lambda *args: list(got))

    return Case(f"{length} examples, rank {rank} of {world}", check)


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


def _scale_case(params: dict) -> Case:
    inputs = (
        params["examples"],
        params["per_worker_batch"],
        params["workers"],
        params["base_lr"],
        params["base_batch"],
    )
    compare = compare_with_reference(
        inputs,
        _scaled,
        [
            Mistake(
                _lr_unscaled,
                "the steps are right, the learning rate is not: each step now averages the "
                "gradient over a larger global batch, and the linear scaling rule (Goyal et al., "
                "2017) grows the learning rate in proportion to the global batch",
            ),
            Mistake(
                _steps_per_worker_batch,
                "one step consumes a batch on every worker at once: count steps with the "
                "global batch, not the per-worker one",
            ),
            Mistake(
                _lr_by_workers,
                "the rule scales with the global batch relative to the batch the base learning "
                "rate was tuned for (base_batch), not with the number of workers",
            ),
            Mistake(
                _floor_steps,
                "the last, partial batch is a step too (drop_last=False): round up",
            ),
        ],
        shape_hint="return a pair: (steps per epoch, learning rate)",
    )
    examples, per_worker, workers, base_lr, base_batch = inputs
    return Case(
        f"{examples} examples, {workers} workers x batch {per_worker}, lr {base_lr:g} "
        f"tuned for batch {base_batch}",
        compare,
    )


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
        ],
        general_hint="every rank gets the same count, len(order) / world rounded up (pad the "
        "order with its own start); then deal the order out like cards",
    ),
    Exercise(
        id="ch7.scale_for_workers",
        title="Steps and learning rate when the world size doubles",
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
        general_hint="work out the global batch first; both answers follow from it",
    ),
]
