"""Benchmarks: ``course bench optim``. Ratios against a reference measured in the same run.

Absolute times drift on shared machines; ratios of interleaved measurements do not (much).
"""

from __future__ import annotations

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
