"""Chapter 7's demonstrations: data parallelism in one process, and the chapter's tables and figure.

The runs themselves (torchrun, the workers, the single-process reference) are the toolkit's,
in ``course_lib.ddp``; this module shows what they do and prints what they measured.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from matplotlib.figure import Figure
from torch import nn

from course_lib.ddp.costs import CostRow, crossover_batch, speedup_bound
from course_lib.ddp.runs import Run, rank_batches

__all__ = [
    "replica_gradients",
    "ranks_cover_single_batches",
    "batches_table",
    "loss_table",
    "attempts_table",
    "costs_table",
    "costs_figure",
    "accumulated_gradient",
]


def replica_gradients(
    world: int = 2, batch: int = 8, seed: int = 0
) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
    """Data parallelism by hand, in one process, on a linear model with 3 inputs and 1 output.

    Returns ``(full, shards, averaged)``: the gradient of the mean squared error on the whole
    batch, the gradient each of ``world`` replicas computes on its shard (every ``world``-th
    example, as DistributedSampler deals them), and their average, which is what the
    all-reduce gives every rank. Each is a (4,) tensor: 3 weights, then the bias.
    """
    if batch % world:
        raise ValueError(f"batch ({batch}) must divide evenly over {world} replicas")
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(batch, 3, generator=generator)
    targets = torch.randn(batch, 1, generator=generator)
    torch.manual_seed(seed)
    model = nn.Linear(3, 1)

    def gradient(rows: slice) -> torch.Tensor:
        model.zero_grad()
        nn.functional.mse_loss(model(inputs[rows]), targets[rows]).backward()
        return torch.cat([model.weight.grad.flatten(), model.bias.grad]).clone()

    full = gradient(slice(None))
    shards = [gradient(slice(rank, None, world)) for rank in range(world)]
    return full, shards, torch.stack(shards).mean(0)


def accumulated_gradient(micro_batches: int = 2, batch: int = 8, seed: int = 0) -> torch.Tensor:
    """Gradient accumulation, the one-process alternative: the same averaged gradient as
    ``replica_gradients`` gives, from ``micro_batches`` backward passes one after the other,
    each loss divided by ``micro_batches`` so that the summed gradient is their mean."""
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(batch, 3, generator=generator)
    targets = torch.randn(batch, 1, generator=generator)
    torch.manual_seed(seed)
    model = nn.Linear(3, 1)
    for part in range(micro_batches):
        rows = slice(part, None, micro_batches)
        loss = nn.functional.mse_loss(model(inputs[rows]), targets[rows]) / micro_batches
        loss.backward()  # gradients add up in .grad until zero_grad
    return torch.cat([model.weight.grad.flatten(), model.bias.grad])


def ranks_cover_single_batches(
    examples: int, global_batch: int, world: int, *, seed: int = 0, epochs: int = 2
) -> bool:
    """True when, in every epoch, the ranks' k-th batches together are one process's k-th batch."""
    for epoch in range(epochs):
        single = rank_batches(examples, global_batch, world=1, rank=0, seed=seed, epoch=epoch)
        per_rank = [
            rank_batches(
                examples, global_batch // world, world=world, rank=r, seed=seed, epoch=epoch
            )
            for r in range(world)
        ]
        for k, batch in enumerate(single):
            together = sorted(i for shards in per_rank for i in shards[k])
            if together != sorted(batch):
                return False
    return True


def batches_table(examples: int, global_batch: int, world: int, *, shown: int = 6) -> str:
    """The first batch of epoch 0 for one process and for each rank (the first indices)."""
    single = rank_batches(examples, global_batch, world=1, rank=0)[0]
    lines = [f"one process, batch {global_batch}: {_start(single, shown)}"]
    for rank in range(world):
        batch = rank_batches(examples, global_batch // world, world=world, rank=rank)[0]
        lines.append(f"rank {rank}, batch {global_batch // world}:   {_start(batch, shown)}")
    return "\n".join(lines)


def _start(indices: Sequence[int], shown: int) -> str:
    return "[" + ", ".join(str(i) for i in indices[:shown]) + ", ...]"


def loss_table(runs: dict[str, Run]) -> str:
    """The committed loss of each step, one column per run."""
    names = list(runs)
    lines = ["step " + "".join(f"{name:>14}" for name in names)]
    steps = len(next(iter(runs.values())).history)
    for step in range(steps):
        losses = "".join(f"{runs[name].history[step]['loss']:>14.4f}" for name in names)
        lines.append(f"{step:>4} {losses}")
    return "\n".join(lines)


def attempts_table(run: Run) -> str:
    """Which steps rank 0 computed in each attempt, and which the checkpoints committed."""
    attempts = sorted({record["attempt"] for record in run.log})
    lines = []
    for attempt in attempts:
        steps = [r["step"] for r in run.log if r["attempt"] == attempt]
        lines.append(f"attempt {attempt} computed steps {steps}")
    committed = [(r["step"], r["attempt"]) for r in run.history]
    lines.append("committed (step, attempt): " + ", ".join(f"({s}, {a})" for s, a in committed))
    return "\n".join(lines)


def costs_table(rows: Sequence[CostRow]) -> str:
    """Per model size: median compute on the per-worker batch b and on W b, the all-reduce with
    its interquartile range, A/C, the no-overlap crossover batch and speed-up estimate."""
    first = rows[0]
    b, w = first.batch, first.workers
    lines = [
        f"{'parameters':>11} {f'C({b}) ms':>9} {f'C({w * b}) ms':>10} {'A ms [IQR]':>19} "
        f"{'A/C':>6} {'crossover b*':>13} {'no-overlap speed-up':>20}"
    ]
    for row in rows:
        low, high = (1e3 * x for x in row.allreduce_iqr)
        spread = f"{1e3 * row.allreduce_s:.2f} [{low:.2f}-{high:.2f}]"
        lines.append(
            f"{row.parameters:>11,} {1e3 * row.compute_s:>9.2f} {1e3 * row.compute_wide_s:>10.2f} "
            f"{spread:>19} {row.ratio:>6.2f} {crossover_batch(row):>13.0f} "
            f"{speedup_bound(row):>20.2f}"
        )
    return "\n".join(lines)


def costs_figure(rows: Sequence[CostRow]) -> Figure:
    """Milliseconds per step against parameters (log-log), medians with interquartile bars:
    compute on the per-worker batch, and all-reduce."""
    figure = Figure(figsize=(6, 3.6))
    axes = figure.subplots()
    parameters = [row.parameters for row in rows]

    def bars(medians, ranges):
        low = [1e3 * (m - r[0]) for m, r in zip(medians, ranges, strict=True)]
        high = [1e3 * (r[1] - m) for m, r in zip(medians, ranges, strict=True)]
        return [1e3 * m for m in medians], [low, high]

    compute, compute_err = bars([r.compute_s for r in rows], [r.compute_iqr for r in rows])
    reduce, reduce_err = bars([r.allreduce_s for r in rows], [r.allreduce_iqr for r in rows])
    axes.errorbar(
        parameters,
        compute,
        yerr=compute_err,
        fmt="o-",
        capsize=3,
        label=f"compute, batch {rows[0].batch}",
    )
    axes.errorbar(
        parameters, reduce, yerr=reduce_err, fmt="s-", capsize=3, label="all-reduce (gloo)"
    )
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel("parameters of the model")
    axes.set_ylabel("ms per step (median, IQR bars)")
    axes.set_title("What one data-parallel step costs, per worker")
    axes.legend()
    axes.grid(True, which="major", alpha=0.3)
    figure.tight_layout()
    return figure
