"""The benchmark measures real work: every contender updates every parameter it times."""

import pytest
import torch

from course_lib.tools.bench import BENCH_SETTINGS, format_table, make_contenders, time_optimizer


@pytest.mark.parametrize("name", BENCH_SETTINGS)
def test_every_contender_updates_every_parameter(name):
    for label, optimizer in make_contenders(name).items():
        params = [p for group in optimizer.param_groups for p in group["params"]]
        assert sum(p.numel() for p in params) == 99_978
        before = [p.detach().clone() for p in params]
        optimizer.step()
        assert all(not torch.equal(a, p) for a, p in zip(before, params, strict=True)), label


def test_table_reports_ratios_from_one_run():
    row = time_optimizer("SGD", rounds=1, steps=2)
    assert row.scratch_us > 0 and row.vs_single == row.scratch_us / row.torch_single_us
    assert "target <= 1.20x" in format_table([row])


def test_fit_bench_times_every_variant_against_the_loop(capsys):
    from course_lib.tools.bench import bench_fit, format_fit_table

    rows = bench_fit(rounds=1, epochs=1, batch_size=256, hidden=(8,))
    assert len(rows) == 3 and all(r.fit_ms > 0 and r.loop_ms > 0 and r.steps == 6 for r in rows)
    table = format_fit_table(rows)
    assert "fit / loop" in table and "µs a step" in table and "1.05x" in table
    assert capsys.readouterr().err == ""  # the progress bar of the defaults variant stays quiet
