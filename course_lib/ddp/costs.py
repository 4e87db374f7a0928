"""What data parallelism costs: all-reduce time against compute time per step, as the model grows.

Run by torchrun (``-m course_lib.ddp.costs --out costs.json``): for each width w, an MLP
256 -> w -> w -> 10 (about w^2 + 266 w parameters); every rank times, in interleaved
repeats, a forward and backward pass on a per-worker batch b (C(b)), the same on W b
(C(W b), what one device would do), and an all-reduce of a tensor as large as the gradient
(A); rank 0 writes the medians and interquartile ranges. ``measure_costs`` launches it.

Compute is not proportional to the batch for small models (a fixed cost per call), so it
is modelled as C(b) = c0 + c1 b, c1 = (C(W b) - C(b)) / ((W - 1) b). With W workers on W
separate devices and no overlap of the all-reduce with backward, a step costs C(b) + A
instead of C(W b) on one device; the no-overlap speed-up estimate is

    S = C(W b) / (C(b) + A),

above 1 when c1 (W - 1) b > A, i.e. beyond the per-worker batch b* = A / ((W - 1) c1).
DDP overlaps the all-reduce of each gradient bucket with the rest of backward, so the
ceiling is W, not this estimate: a step costs about F + max(B, A) + (the last bucket's
all-reduce), F forward and B backward.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from course_lib.files import write_atomically

__all__ = [
    "CostRow",
    "measure_costs",
    "compute_per_example",
    "crossover_batch",
    "speedup_bound",
    "main",
]

INPUTS = 256  # a 16x16 digit, flattened


@dataclass(frozen=True)
class CostRow:
    """Median seconds per step of one model size, measured on rank 0."""

    width: int
    parameters: int
    compute_s: float
    allreduce_s: float
    compute_wide_s: float = float("nan")  # C(W b): one device on the whole global batch
    batch: int = 32  # the per-worker batch b
    workers: int = 2
    compute_iqr: tuple[float, float] = (float("nan"), float("nan"))
    allreduce_iqr: tuple[float, float] = (float("nan"), float("nan"))

    @property
    def ratio(self) -> float:
        """All-reduce time / compute time: the share of extra time data parallelism adds."""
        return self.allreduce_s / self.compute_s


def compute_per_example(row: CostRow) -> float:
    """c1 in C(b) = c0 + c1 b: (C(W b) - C(b)) / ((W - 1) b), seconds per extra example."""
    if row.workers < 2:
        raise ValueError(f"a slope needs at least 2 workers, got {row.workers}")
    return (row.compute_wide_s - row.compute_s) / ((row.workers - 1) * row.batch)


def crossover_batch(row: CostRow) -> float:
    """The per-worker batch above which W workers beat one device, no overlap:
    b* = A / ((W - 1) c1); infinite when compute does not grow with the batch (c1 <= 0)."""
    slope = compute_per_example(row)
    if slope <= 0:
        return float("inf")
    return row.allreduce_s / ((row.workers - 1) * slope)


def speedup_bound(row: CostRow) -> float:
    """No-overlap estimate of W separate devices' speed-up: C(W b) / (C(b) + A).

    Not a bound: DDP overlaps the all-reduce with backward, whose ceiling is W."""
    return row.compute_wide_s / (row.compute_s + row.allreduce_s)


def _mlp(width: int) -> nn.Module:
    return nn.Sequential(
        nn.Linear(INPUTS, width),
        nn.ReLU(),
        nn.Linear(width, width),
        nn.ReLU(),
        nn.Linear(width, 10),
    )


def _interleaved_seconds(actions, repeats: int) -> list[list[float]]:
    """Time each action ``repeats`` times, one after the other in every repeat (so that a
    slow moment of a shared machine hits all of them alike); a barrier before each."""
    for action in actions:
        action()  # warm-up: first calls allocate
    times = [[] for _ in actions]
    for _ in range(repeats):
        for action, seconds in zip(actions, times, strict=True):
            dist.barrier()
            started = time.perf_counter()
            action()
            seconds.append(time.perf_counter() - started)
    return times


def _quartiles(seconds: list[float]) -> tuple[float, float, float]:
    first, median, third = statistics.quantiles(seconds, n=4, method="inclusive")
    return first, median, third


def _measure(width: int, batch: int, repeats: int, workers: int) -> CostRow:
    torch.manual_seed(0)
    model = _mlp(width)
    loss_fn = nn.CrossEntropyLoss()

    def compute_on(examples: int):
        inputs, targets = torch.randn(examples, INPUTS), torch.randint(0, 10, (examples,))

        def compute() -> None:
            model.zero_grad()
            loss_fn(model(inputs), targets).backward()

        return compute

    parameters = sum(p.numel() for p in model.parameters())
    gradient = torch.zeros(parameters)
    shard, whole, reduce = _interleaved_seconds(
        [compute_on(batch), compute_on(workers * batch), lambda: dist.all_reduce(gradient)],
        repeats,
    )
    (c_lo, c_med, c_hi), (_, wide, _), (a_lo, a_med, a_hi) = map(_quartiles, (shard, whole, reduce))
    return CostRow(
        width, parameters, c_med, a_med, wide, batch, workers, (c_lo, c_hi), (a_lo, a_hi)
    )


def measure_costs(
    widths: Sequence[int] = (32, 128, 512, 1024),
    *,
    batch: int = 32,
    repeats: int = 30,
    workers: int = 2,
    timeout: float = 300,
) -> list[CostRow]:
    """Launch the measurement on ``workers`` processes (gloo on CPUs); one row per width."""
    from course_lib.ddp.launcher import launch

    with tempfile.TemporaryDirectory(prefix="course-ddp-costs-") as folder:
        out = Path(folder) / "costs.json"
        args = ["--out", str(out), "--batch", str(batch), "--repeats", str(repeats)]
        args += ["--widths", ",".join(str(w) for w in widths)]
        launch(
            "course_lib.ddp.costs",
            args,
            workers=workers,
            env={"OMP_NUM_THREADS": "1", "COURSE_DEVICE": "cpu"},
            timeout=timeout,
        )
        rows = json.loads(out.read_text())
        return [
            CostRow(
                **{
                    **row,
                    "compute_iqr": tuple(row["compute_iqr"]),
                    "allreduce_iqr": tuple(row["allreduce_iqr"]),
                }
            )
            for row in rows
        ]


def main(argv: Sequence[str] | None = None) -> int:
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        print(
            "course_lib.ddp.costs is started by torchrun: use measure_costs(), or `torchrun "
            "--standalone --nproc-per-node=2 -m course_lib.ddp.costs --out costs.json`.",
            file=sys.stderr,
        )
        return 2
    parser = argparse.ArgumentParser(prog="torchrun ... -m course_lib.ddp.costs")
    parser.add_argument("--out", required=True)
    parser.add_argument("--widths", default="32,128,512,1024")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args(argv)
    dist.init_process_group("gloo")
    try:
        world = dist.get_world_size()
        rows = [_measure(int(w), args.batch, args.repeats, world) for w in args.widths.split(",")]
        if dist.get_rank() == 0:
            write_atomically(args.out, json.dumps([asdict(row) for row in rows]))
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
