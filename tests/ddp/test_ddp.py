"""Data-parallel training: real 2-process gloo runs under torchrun, and every way one can go wrong.

The runs are the chapter's (8 steps of 2 x 32 digits); each launch costs a few seconds, mostly
the workers importing torch.
"""

import os
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from course_lib.ddp import (
    FLOAT_TOLERANCE,
    SHARED_STORE_FIX,
    LaunchResult,
    PortInUse,
    TrainingConfig,
    WorkerFailed,
    committed_steps,
    largest_difference,
    launch,
    rank_batches,
    run_single,
    run_workers,
    torchrun_command,
    usable_cores,
)
from course_lib.ddp.costs import CostRow, compute_per_example, crossover_batch, speedup_bound
from course_lib.ddp.launcher import failed_rank
from course_lib.tools.cli import main

ROOT = Path(__file__).resolve().parents[2]
needs_two_cores = pytest.mark.skipif(usable_cores() < 2, reason="two workers need two cores")
linux_only = pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="reads /proc")


def processes_mentioning(text: str) -> list[int]:
    """Live (not zombie) processes whose command line contains ``text``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if text in command and state not in ("Z", "X"):
            found.append(int(entry.name))
    return found


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The single-process run of the chapter's config (in this process)."""
    folder = tmp_path_factory.mktemp("single")
    return run_single(TrainingConfig(out=str(folder)))


# --- the command: two workers equal one process ---------------------------------------------------


@needs_two_cores
def test_course_ddp_check_passes_and_prints_the_difference(capsys):
    assert main(["ddp", "--workers", "2", "--check"]) == 0
    out = capsys.readouterr().out
    assert "TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 torchrun --standalone --nproc-per-node=2" in out
    assert "2 workers x batch 32: 8 steps" in out
    assert "largest parameter difference to one process x batch 64" in out
    assert "within the float tolerance" in out


# --- faults: a dying worker, a restart, an interrupted run ------------------------------------------


@needs_two_cores
@linux_only
def test_a_dying_worker_is_named_and_no_process_survives(tmp_path):
    config = TrainingConfig(out=str(tmp_path / "run"))
    with pytest.raises(WorkerFailed, match="worker rank 1 failed with exit code 1") as failure:
        run_workers(config, 2, fail_at=(1, 1))
    assert (failure.value.rank, failure.value.exit_code) == (1, 1)
    assert processes_mentioning(str(tmp_path)) == []


@needs_two_cores
def test_a_restart_resumes_from_the_checkpoint_with_no_step_lost_or_repeated(tmp_path, reference):
    config = TrainingConfig(out=str(tmp_path / "run"))
    run = run_workers(config, 2, max_restarts=1, fail_at=(1, 5))
    assert committed_steps(run.history) == list(range(config.steps))
    attempts = {(r["attempt"], r["step"]) for r in run.log}
    assert (0, 4) in attempts and (1, 5) in attempts and (0, 5) not in attempts
    assert largest_difference(run.params, reference.params) <= FLOAT_TOLERANCE


@needs_two_cores
@linux_only
def test_an_interrupted_run_leaves_no_process(tmp_path):
    config = TrainingConfig(out=str(tmp_path / "run"))
    with pytest.raises(TimeoutError, match="all of its processes were stopped"):
        launch("course_lib.ddp.train", config.to_argv(), workers=2, timeout=2)
    assert processes_mentioning(str(tmp_path)) == []


def test_a_checkpoint_of_another_config_is_refused(tmp_path, reference):
    first = TrainingConfig(out=str(tmp_path / "run"), epochs=1)
    run_single(first)
    with pytest.raises(ValueError, match="differs in global_batch, lr"):
        run_single(replace(first, global_batch=32, lr=0.5))
    with pytest.raises(ValueError, match="checkpoint of another run"):
        run_workers(replace(first, lr=0.5), 1)


def test_course_ddp_refuses_a_non_empty_out_without_resume(tmp_path, capsys):
    (tmp_path / "old").write_text("x")
    assert main(["ddp", "--workers", "1", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--resume" in err and err.count("\n") == 1


def test_the_shown_command_carries_the_variable_restarts_need():
    result = LaunchResult(torchrun_command("m", workers=2, max_restarts=1), "", 0.0)
    shown = result.shown_command
    assert shown.startswith("TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 torchrun --standalone")
    assert SHARED_STORE_FIX == {"TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"}


# --- bad input: one sentence each, nothing started --------------------------------------------------


def test_more_workers_than_cores_is_refused_with_the_override(tmp_path):
    config = TrainingConfig(out=str(tmp_path))
    workers = 2 * usable_cores()
    with pytest.raises(ValueError, match="--allow-oversubscribe"):
        run_workers(config, workers)


def test_course_ddp_refuses_too_many_workers_in_one_sentence(capsys):
    assert main(["ddp", "--workers", str(64 * usable_cores())]) == 2
    err = capsys.readouterr().err
    assert err.startswith("course ddp: ") and err.count("\n") == 1


def test_a_port_in_use_is_refused(tmp_path):
    config = TrainingConfig(out=str(tmp_path))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(PortInUse, match=f"port {port} is already in use"):
            run_workers(config, 1, port=port)


def test_workers_that_do_not_divide_the_batch_are_refused(tmp_path):
    with pytest.raises(ValueError, match="does not split evenly over 3 workers"):
        run_workers(TrainingConfig(out=str(tmp_path)), 3, allow_oversubscribe=True)


def test_the_training_module_without_torchrun_says_what_to_run(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")}
    done = subprocess.run(
        [sys.executable, "-m", "course_lib.ddp.train", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )
    assert done.returncode == 2
    assert "course ddp" in done.stderr and "torchrun" in done.stderr
    assert done.stderr.strip().count("\n") == 0
    assert not any(tmp_path.iterdir())


# --- the pieces ------------------------------------------------------------------------------------


def test_config_round_trips_through_the_command_line_and_checks_its_values(tmp_path):
    config = TrainingConfig(out=str(tmp_path), epochs=3, lr=0.1, mistake="no-set-epoch")
    assert TrainingConfig.from_argv(config.to_argv()) == config
    assert config.steps == 12
    with pytest.raises(ValueError, match="multiple of global_batch"):
        TrainingConfig(out="x", examples=100)
    with pytest.raises(ValueError, match="mistake must be one of"):
        TrainingConfig(out="x", mistake="typo")


def test_torchrun_command_is_standalone_unless_a_port_is_given():
    standalone = torchrun_command("m", ["--a"], workers=2)
    assert "--standalone" in standalone and standalone[-3:] == ["-m", "m", "--a"]
    fixed = torchrun_command("m", workers=2, port=29555, max_restarts=1)
    assert "--rdzv-endpoint=127.0.0.1:29555" in fixed and "--max-restarts=1" in fixed


def test_the_failed_rank_is_read_from_torchruns_report():
    report = (
        "Failures:\n  rank      : 0 (local_rank: 0)\n  exitcode  : -15 (pid: 9)\n"
        "Root Cause (first observed failure):\n[0]:\n  rank      : 1 (local_rank: 1)\n"
        "  exitcode  : 1 (pid: 10)\n"
    )
    assert failed_rank(report) == (1, 1)
    assert failed_rank("no report") == (None, None)


def test_each_rank_reads_every_world_th_index_of_the_same_shuffle():
    single = rank_batches(256, 64, world=1, rank=0, epoch=1)
    halves = [rank_batches(256, 32, world=2, rank=r, epoch=1) for r in range(2)]
    for k, batch in enumerate(single):
        assert halves[0][k] == batch[0::2] and halves[1][k] == batch[1::2]
    assert rank_batches(256, 64, world=1, rank=0, epoch=0) != single  # set_epoch reshuffles


def test_largest_difference_needs_the_same_parameters():
    a = {"w": torch.zeros(3)}
    assert largest_difference(a, {"w": torch.tensor([0.0, -2.0, 1.0])}) == 2.0
    with pytest.raises(ValueError, match="different parameters"):
        largest_difference(a, {"v": torch.zeros(3)})


def test_crossover_and_speedup_use_compute_with_a_fixed_cost():
    # C(b) = c0 + c1 b with c0 = 0.01 s, c1 = 0.001 s per example; A = 0.016 s
    row = CostRow(8, 100, compute_s=0.042, allreduce_s=0.016, compute_wide_s=0.074, batch=32)
    assert row.ratio == pytest.approx(0.016 / 0.042)
    assert compute_per_example(row) == pytest.approx(0.001)
    assert crossover_batch(row) == pytest.approx(16)  # A / ((W - 1) c1), not b A / C
    assert speedup_bound(row) == pytest.approx(0.074 / 0.058)  # C(W b) / (C(b) + A)
    three = CostRow(8, 100, 0.042, 0.016, compute_wide_s=0.106, batch=32, workers=3)
    assert crossover_batch(three) == pytest.approx(8)
    flat = CostRow(8, 100, 0.042, 0.016, compute_wide_s=0.042, batch=32)
    assert crossover_batch(flat) == float("inf")  # compute does not grow: never pays
