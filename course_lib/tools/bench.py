"""Benchmarks: ``course bench optim``. Ratios against a reference measured in the same run.

Absolute times drift on shared machines; ratios of interleaved measurements do not (much).
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass

import torch
from torch import nn

import course_lib.optim as scratch

# Hyper-parameters that exercise each optimizer's full update (momentum, weight decay, ...).
BENCH_SETTINGS: dict[str, dict] = {
    "SGD": {"lr": 0.01, "momentum": 0.9, "weight_decay": 1e-4},
    "Adagrad": {"lr": 0.01, "weight_decay": 1e-4},
    "RMSprop": {"lr": 0.01, "momentum": 0.9, "centered": True},
    "Adadelta": {"lr": 1.0, "weight_decay": 1e-4},
    "Adam": {"lr": 1e-3, "weight_decay": 1e-4},
    "AdamW": {"lr": 1e-3},
    "Adamax": {"lr": 2e-3},
    "NAdam": {"lr": 2e-3},
}


@dataclass(frozen=True)
class StepTimes:
    optimizer: str
    scratch_us: float
    torch_single_us: float  # torch.optim, foreach=False: the same per-tensor loop
    torch_foreach_us: float  # torch.optim, foreach=True: batched multi-tensor kernels

    @property
    def vs_single(self) -> float:
        return self.scratch_us / self.torch_single_us

    @property
    def vs_foreach(self) -> float:
        return self.scratch_us / self.torch_foreach_us


def bench_model() -> nn.Module:
    """An MLP with 99,978 parameters (256 -> 256 -> 128 -> 10), with fixed random gradients.

    Build one per optimizer: ``copy.deepcopy`` of a model does not copy ``.grad``.
    """
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 10)
    )
    for parameter in model.parameters():
        parameter.grad = torch.randn_like(parameter) * 1e-2
    return model


def make_contenders(name: str) -> dict[str, torch.optim.Optimizer]:
    """Ours, torch's per-tensor loop and torch's foreach version, each on its own model."""
    settings = BENCH_SETTINGS[name]
    return {
        "scratch": getattr(scratch, name)(bench_model().parameters(), **settings),
        "single": getattr(torch.optim, name)(bench_model().parameters(), foreach=False, **settings),
        "foreach": getattr(torch.optim, name)(bench_model().parameters(), foreach=True, **settings),
    }


def _seconds_per_step(optimizer: torch.optim.Optimizer, steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        optimizer.step()
    return (time.perf_counter() - start) / steps


def time_optimizer(name: str, *, rounds: int = 7, steps: int = 30) -> StepTimes:
    """Median per-step time of ours, torch foreach=False and foreach=True, interleaved by round."""
    contenders = make_contenders(name)
    for optimizer in contenders.values():  # warm-up: allocate state, fill caches
        _seconds_per_step(optimizer, 3)
    samples: dict[str, list[float]] = {key: [] for key in contenders}
    for _ in range(rounds):
        for key, optimizer in contenders.items():
            samples[key].append(_seconds_per_step(optimizer, steps))
    median_us = {key: statistics.median(values) * 1e6 for key, values in samples.items()}
    return StepTimes(name, median_us["scratch"], median_us["single"], median_us["foreach"])


def bench_optimizers(*, rounds: int = 7, steps: int = 30) -> list[StepTimes]:
    return [time_optimizer(name, rounds=rounds, steps=steps) for name in BENCH_SETTINGS]


def format_table(rows: list[StepTimes]) -> str:
    header = (
        f"{'optimizer':<10}{'scratch µs':>12}{'torch loop µs':>15}{'torch foreach µs':>18}"
        f"{'scratch/loop':>14}{'scratch/foreach':>17}"
    )
    lines = [header]
    for row in rows:
        lines.append(
            f"{row.optimizer:<10}{row.scratch_us:>12.1f}{row.torch_single_us:>15.1f}"
            f"{row.torch_foreach_us:>18.1f}{row.vs_single:>13.2f}x{row.vs_foreach:>16.2f}x"
        )
    worst = max(rows, key=lambda row: row.vs_single)
    lines.append(
        f"\nworst ratio to torch.optim foreach=False: {worst.vs_single:.2f}x ({worst.optimizer}); target <= 1.20x"
    )
    return "\n".join(lines)


# --- fit() against a minimal hand-written loop ---------------------------------------------


@dataclass(frozen=True)
class FitOverhead:
    variant: str
    fit_ms: float
    loop_ms: float
    steps: int

    @property
    def ratio(self) -> float:
        return self.fit_ms / self.loop_ms


def _fit_bench_setup(hidden):
    from course_lib.data import digits_split
    from course_lib.models import mlp

    train, _ = digits_split(seed=0)
    torch.manual_seed(0)
    return train, mlp(64, list(hidden), 10)


def _hand_loop(model, train, epochs: int, batch_size: int) -> list[float]:
    """The minimal loop: shuffle, forward, loss, backward, step, and record each step's loss."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    loss_fn = nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(epochs):
        for batch in torch.randperm(len(train), generator=generator).split(batch_size):
            optimizer.zero_grad()
            loss = loss_fn(model(train.inputs[batch]), train.targets[batch])
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    return losses


def _fit_run(model, train, epochs: int, batch_size: int, **options) -> None:
    import contextlib
    import io

    from course_lib.train import fit

    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    # the bar still draws, into a buffer, not the terminal
    with contextlib.redirect_stderr(io.StringIO()):
        fit(
            model,
            train,
            optimizer=optimizer,
            loss_fn=nn.CrossEntropyLoss(),
            epochs=epochs,
            batch_size=batch_size,
            **options,
        )


def bench_fit(
    *, rounds: int = 11, epochs: int = 20, batch_size: int = 64, hidden: tuple[int, ...] = (128,)
) -> list[FitOverhead]:
    """Milliseconds per run of fit() (three settings) and of the hand loop, interleaved by round.

    The model is a digits MLP, 64 -> ``hidden`` -> 10.
    """
    import copy

    train, model = _fit_bench_setup(hidden)
    variants = {
        "fit, defaults (progress bar, accuracy)": {"progress": True},
        "fit, no progress bar": {"progress": False},
        "fit, no progress bar, no accuracy": {"progress": False, "accuracy": False},
    }
    runs = {
        name: (lambda m, options=options: _fit_run(m, train, epochs, batch_size, **options))
        for name, options in variants.items()
    }
    runs["loop"] = lambda m: _hand_loop(m, train, epochs, batch_size)
    samples: dict[str, list[float]] = {name: [] for name in runs}
    names = list(runs)
    for round_number in range(rounds + 1):
        # rotate the order every round, so no contender always runs first or last
        for name in names[round_number % len(names) :] + names[: round_number % len(names)]:
            start = time.perf_counter()
            runs[name](copy.deepcopy(model))
            if round_number > 0:  # round 0 warms up allocators and caches
                samples[name].append(time.perf_counter() - start)
    loop_ms = statistics.median(samples["loop"]) * 1e3
    steps = epochs * math.ceil(len(train) / batch_size)
    return [
        FitOverhead(name, statistics.median(samples[name]) * 1e3, loop_ms, steps)
        for name in variants
    ]


def format_fit_table(rows: list[FitOverhead]) -> str:
    lines = [f"{'variant':<42}{'fit ms':>9}{'loop ms':>9}{'fit / loop':>12}"]
    lines += [f"{r.variant:<42}{r.fit_ms:>9.1f}{r.loop_ms:>9.1f}{r.ratio:>11.3f}x" for r in rows]
    lines.append(
        f"the loop takes {rows[0].loop_ms / rows[0].steps:.2f} ms a step; fit's bookkeeping adds "
        + ", ".join(f"{1e3 * (r.fit_ms - r.loop_ms) / r.steps:.0f}" for r in rows)
        + " µs a step"
    )
    return "\n".join(lines) + "\ntarget: fit / loop <= 1.05x"
