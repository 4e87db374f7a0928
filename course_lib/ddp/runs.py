"""A data-parallel run and its single-process reference, side by side, and how far apart they end.

    config = TrainingConfig(out="runs/two")
    two = run_workers(config, workers=2)                  # torchrun, 2 x batch 32
    one = run_single(replace(config, out="runs/one"))     # this process, 1 x batch 64
    largest_difference(two.params, one.params)            # ~1e-7: the same training

The difference is not exactly zero: the all-reduce adds the ranks' gradients in another order
than one process sums its batch, and float addition is not associative; SGD then carries
those last-digit differences along. ``FLOAT_TOLERANCE`` is far above what that produces here
and far below what a real mistake (a wrong data order) does.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DistributedSampler

from course_lib.ddp.launcher import LaunchResult, check_launch, launch
from course_lib.ddp.train import (
    DATA_FILE,
    FAIL_AT_VARIABLE,
    LOG_FILE,
    RESULT_FILE,
    TrainingConfig,
    backend_and_device,
    check_resumable,
    train,
    training_data,
)
from course_lib.files import write_atomically

__all__ = [
    "FLOAT_TOLERANCE",
    "Run",
    "run_workers",
    "run_single",
    "largest_difference",
    "rank_batches",
    "committed_steps",
]

# Largest parameter difference accepted as "the same training" after the chapter's few steps.
FLOAT_TOLERANCE = 1e-5


@dataclass(frozen=True)
class Run:
    """A finished training: its parameters, committed history, rank 0's log, and the launch."""

    params: dict[str, torch.Tensor]
    history: list[dict]
    log: list[dict]
    world_size: int
    launch: LaunchResult | None = None

    @property
    def losses(self) -> list[float]:
        return [record["loss"] for record in self.history]


def run_workers(
    config: TrainingConfig,
    workers: int,
    *,
    max_restarts: int = 0,
    fail_at: tuple[int, int] | None = None,
    port: int | None = None,
    allow_oversubscribe: bool = False,
    timeout: float = 300,
) -> Run:
    """Train with ``workers`` processes under torchrun; ``fail_at=(rank, step)`` plants a crash.

    ``config.out`` should be a new folder: a checkpoint already there is resumed from, and
    refused (ValueError) when another config wrote it.
    """
    env = {FAIL_AT_VARIABLE: f"{fail_at[0]}:{fail_at[1]}"} if fail_at else {}
    env.setdefault("OMP_NUM_THREADS", "1")  # one thread per worker: the workers are the parallelism
    check_launch(workers, allow_oversubscribe=allow_oversubscribe, port=port)
    if config.global_batch % workers:
        raise ValueError(
            f"the global batch of {config.global_batch} does not split evenly over {workers} "
            "workers; use a number of workers that divides it (1, 2, 4, ...)"
        )
    check_resumable(config)
    _leave_training_data(config)
    result = launch(
        "course_lib.ddp.train",
        config.to_argv(),
        workers=workers,
        max_restarts=max_restarts,
        port=port,
        allow_oversubscribe=allow_oversubscribe,
        env=env,
        timeout=timeout,
    )
    return _read_run(Path(config.out), result)


def _leave_training_data(config: TrainingConfig) -> None:
    """Save the training digits where the workers look first (building them costs each a second)."""
    data = training_data(config.examples)
    path = Path(config.out) / DATA_FILE
    write_atomically(path, lambda file: torch.save((data.inputs, data.targets), file))


def run_single(config: TrainingConfig) -> Run:
    """The reference: the same training in this process, world size 1, the whole batch per step.

    It runs on the device the workers use (the first GPU when they use nccl, else the CPU).
    """
    if os.environ.get("RANK") is not None:
        raise RuntimeError("run_single is the one-process reference; call it outside torchrun")
    check_resumable(config)
    train(config, device=backend_and_device(0)[1])
    return _read_run(Path(config.out), None)


def _read_run(out: Path, launched: LaunchResult | None) -> Run:
    result = torch.load(out / RESULT_FILE, weights_only=True)
    log_path = out / LOG_FILE
    log = (
        [json.loads(line) for line in log_path.read_text().splitlines()]
        if log_path.exists()
        else []
    )
    return Run(result["params"], result["history"], log, result["world_size"], launched)


def largest_difference(
    params: Mapping[str, torch.Tensor], reference: Mapping[str, torch.Tensor]
) -> float:
    """max |a - b| over every element of every parameter; the names must match."""
    if set(params) != set(reference):
        raise ValueError(
            f"the runs trained different parameters: {sorted(set(params) ^ set(reference))[:4]}"
        )
    return max(float((params[n] - reference[n]).abs().max()) for n in params)


def rank_batches(
    examples: int, batch: int, *, world: int, rank: int, seed: int = 0, epoch: int = 0
) -> list[list[int]]:
    """The example indices of each batch that ``rank`` of ``world`` reads in ``epoch``.

    Asked of a real ``DistributedSampler`` (shuffled with ``seed + epoch``): rank r gets
    positions r, r + world, r + 2 world, ... of the shuffled order, ``batch`` at a time.
    """
    sampler = DistributedSampler(
        range(examples), num_replicas=world, rank=rank, shuffle=True, seed=seed
    )
    sampler.set_epoch(epoch)
    order = list(sampler)
    return [order[start : start + batch] for start in range(0, len(order), batch)]


def committed_steps(history: list[dict]) -> list[int]:
    """The step numbers of a run's committed history, in order."""
    return [record["step"] for record in history]
