"""What data parallelism costs: all-reduce time against compute time per step, as the model grows.

Run by torchrun (``-m course_lib.ddp.costs --out costs.json``): for each width w, an MLP
256 -> w -> w -> 10 (about w^2 + 266 w parameters); every rank times a forward and backward
pass on its batch (compute) and an all-reduce of a tensor as large as the gradient; rank 0
writes the medians. ``measure_costs`` launches it and reads the file.

With W workers on W separate devices, a step costs C + A (compute on the per-worker batch,
then the all-reduce, when they do not overlap) instead of W * C for one device doing the
whole batch, so the speed-up is at most

    W * C / (C + A) = W / (1 + A / C)

which is above 1 when A < (W - 1) C. Compute grows with the per-worker batch b and A does
not, so the crossover is the batch b* = b * A / ((W - 1) C).
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

__all__ = ["CostRow", "measure_costs", "crossover_batch", "speedup_bound", "main"]

INPUTS = 256  # a 16x16 digit, flattened


@dataclass(frozen=True)
class CostRow:
    """Median seconds per step of one model size, measured on rank 0."""

    width: int
    parameters: int
    compute_s: float
    allreduce_s: float

    @property
    def ratio(self) -> float:
        """All-reduce time / compute time: the share of extra time data parallelism adds."""
        return self.allreduce_s / self.compute_s


def crossover_batch(row: CostRow, batch: int, workers: int = 2) -> float:
    """The per-worker batch above which W workers beat one device: b * A / ((W - 1) C)."""
    if workers < 2:
        raise ValueError(f"a crossover needs at least 2 workers, got {workers}")
    return batch * row.allreduce_s / ((workers - 1) * row.compute_s)


def speedup_bound(row: CostRow, workers: int = 2) -> float:
    """W / (1 + A/C): the speed-up of W separate devices, all-reduce not overlapped."""
    return workers / (1 + row.ratio)


def _mlp(width: int) -> nn.Module:
    return nn.Sequential(
        nn.Linear(INPUTS, width),
        nn.ReLU(),
        nn.Linear(width, width),
        nn.ReLU(),
        nn.Linear(width, 10),
    )


def _median_seconds(action, repeats: int) -> float:
    action()  # warm-up: first calls allocate
    times = []
    for _ in range(repeats):
        dist.barrier()
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _measure(width: int, batch: int, repeats: int) -> CostRow:
    torch.manual_seed(0)
    model = _mlp(width)
    inputs, targets = torch.randn(batch, INPUTS), torch.randint(0, 10, (batch,))
    loss_fn = nn.CrossEntropyLoss()

    def compute() -> None:
        model.zero_grad()
        loss_fn(model(inputs), targets).backward()

    parameters = sum(p.numel() for p in model.parameters())
    gradient = torch.zeros(parameters)
    compute_s = _median_seconds(compute, repeats)
    allreduce_s = _median_seconds(lambda: dist.all_reduce(gradient), repeats)
    return CostRow(width, parameters, compute_s, allreduce_s)


def measure_costs(
    widths: Sequence[int] = (32, 128, 512, 1024),
    *,
    batch: int = 32,
    repeats: int = 5,
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
        return [CostRow(**row) for row in json.loads(out.read_text())]


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
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    dist.init_process_group("gloo")
    try:
        rows = [_measure(int(w), args.batch, args.repeats) for w in args.widths.split(",")]
        if dist.get_rank() == 0:
            write_atomically(args.out, json.dumps([asdict(row) for row in rows]))
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
