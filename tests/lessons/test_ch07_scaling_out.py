"""Chapter 7's demonstrations: data parallelism by hand, and the tables the notebook prints."""

import torch
from matplotlib.figure import Figure

from course_lib.ddp import CostRow, Run
from course_lib.lessons.ch07_scaling_out import (
    accumulated_gradient,
    attempts_table,
    batches_table,
    costs_figure,
    costs_table,
    loss_table,
    ranks_cover_single_batches,
    replica_gradients,
)


def test_the_average_of_the_replicas_gradients_is_the_full_batch_gradient():
    full, shards, averaged = replica_gradients(world=2, batch=8)
    assert len(shards) == 2 and not torch.allclose(shards[0], shards[1])
    torch.testing.assert_close(averaged, full)
    full4, _, averaged4 = replica_gradients(world=4, batch=8, seed=3)
    torch.testing.assert_close(averaged4, full4)


def test_gradient_accumulation_gives_the_same_gradient_in_one_process():
    full, _, _ = replica_gradients(world=2, batch=8)
    torch.testing.assert_close(accumulated_gradient(micro_batches=2, batch=8), full)


def test_the_ranks_batches_together_are_the_single_process_batches():
    assert ranks_cover_single_batches(256, 64, 2)
    assert ranks_cover_single_batches(256, 64, 4, seed=5)
    text = batches_table(256, 64, 2)
    assert text.splitlines()[0].startswith("one process, batch 64: [")
    assert "rank 1, batch 32:" in text


def fake_run(log, steps=4):
    history = [
        {"step": s, "epoch": 0, "loss": 1.0 / (s + 1), "attempt": int(s >= 2)} for s in range(steps)
    ]
    return Run(params={}, history=history, log=log, world_size=2)


def test_attempts_and_losses_are_tabulated():
    log = [{"step": s, "attempt": 0} for s in (0, 1, 2)] + [
        {"step": s, "attempt": 1} for s in (2, 3)
    ]
    text = attempts_table(fake_run(log))
    assert "attempt 0 computed steps [0, 1, 2]" in text
    assert "attempt 1 computed steps [2, 3]" in text
    assert "(3, 1)" in text
    table = loss_table({"a": fake_run([]), "b": fake_run([])})
    assert len(table.splitlines()) == 5 and "0.2500" in table


def test_costs_are_tabulated_and_drawn():
    rows = [
        CostRow(32, 10_000, 0.002, 0.001, 0.003, 32, 2, (0.0019, 0.0021), (0.0009, 0.0012)),
        CostRow(512, 400_000, 0.02, 0.004, 0.038, 32, 2, (0.019, 0.021), (0.0035, 0.0045)),
    ]
    text = costs_table(rows)
    assert "A/C" in text and "400,000" in text and "C(64) ms" in text
    assert "4.00 [3.50-4.50]" in text and "no-overlap" in text
    assert isinstance(costs_figure(rows), Figure)
