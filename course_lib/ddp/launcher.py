"""Starting torchrun from Python, and making sure that nothing it started outlives a run.

``launch("course_lib.ddp.train", args, workers=2)`` runs

    torchrun --standalone --nproc-per-node=2 -m course_lib.ddp.train ARGS

(as ``python -m torch.distributed.run``, the same program as the ``torchrun`` script) in its
own session and process group, waits for it, and returns its output. On a failure, a
timeout or Ctrl+C it stops torchrun's process group and every worker still alive (each
worker leaves its pid in a folder the launcher gives it: torchrun starts each worker in a
session of its own, out of reach of a signal to torchrun's group), then raises an error
that names what went wrong in one sentence.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from course_lib.ddp.train import PID_DIR_VARIABLE

__all__ = [
    "LaunchResult",
    "SHARED_STORE_FIX",
    "WorkerFailed",
    "PortInUse",
    "usable_cores",
    "torchrun_command",
    "launch",
    "check_launch",
    "failed_rank",
    "process_alive",
]

_STOP_GRACE_SECONDS = 5.0
# Workers build their own store for init_process_group instead of sharing the rendezvous
# store: with a shared one, a restarted attempt (--max-restarts) can be handed its peer's
# address from the failed attempt and dies with "Gloo connectFullMesh failed ... Connection
# refused" (pytorch/pytorch#135712). Every launch sets it, and the shown command prints it.
SHARED_STORE_FIX = {"TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"}


@dataclass(frozen=True)
class LaunchResult:
    """A finished run: the command, everything it printed (stdout and stderr), its duration."""

    command: list[str]
    output: str
    seconds: float

    @property
    def shown_command(self) -> str:
        """The command as one would type it: ``torchrun ...``."""
        words = self.command[3:] if self.command[1:3] == ["-m", "torch.distributed.run"] else []
        command = shlex.join(["torchrun", *words]) if words else shlex.join(self.command)
        return " ".join(f"{k}={v}" for k, v in SHARED_STORE_FIX.items()) + " " + command


class WorkerFailed(RuntimeError):
    """A worker exited with a non-zero status; every process of the run has been stopped."""

    def __init__(self, rank: int | None, exit_code: int | None, output: str):
        self.rank, self.exit_code, self.output = rank, exit_code, output
        who = f"worker rank {rank}" if rank is not None else "a worker"
        how = f"exit code {exit_code}" if exit_code is not None else "a non-zero exit code"
        super().__init__(
            f"{who} failed with {how}; the run was stopped and no process of it is left "
            "(its output is in .output)"
        )


class PortInUse(OSError):
    """The port asked for is taken by another program."""


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity), which can be fewer than the machine's."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def torchrun_command(
    module: str,
    args: Sequence[str] = (),
    *,
    workers: int,
    max_restarts: int = 0,
    port: int | None = None,
) -> list[str]:
    """The torchrun command line: ``--standalone`` (a free port) unless ``port`` is given."""
    command = [sys.executable, "-m", "torch.distributed.run"]
    if port is None:
        command.append("--standalone")
    else:
        command += ["--nnodes=1", "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}"]
    command += [f"--nproc-per-node={workers}", f"--max-restarts={max_restarts}"]
    return [*command, "-m", module, *args]


def launch(
    module: str,
    args: Sequence[str] = (),
    *,
    workers: int,
    max_restarts: int = 0,
    port: int | None = None,
    allow_oversubscribe: bool = False,
    env: Mapping[str, str] | None = None,
    timeout: float = 300,
) -> LaunchResult:
    """Run ``module`` under torchrun with ``workers`` processes; return when all have finished.

    Raises:
        ValueError: ``workers`` is not a positive whole number, or exceeds the usable cores
            (or GPUs) without ``allow_oversubscribe``.
        PortInUse: ``port`` is taken by another program.
        WorkerFailed: a worker exited with a non-zero status (and no restart was left).
        TimeoutError: the run took longer than ``timeout`` seconds.
    """
    check_launch(workers, allow_oversubscribe=allow_oversubscribe, port=port)
    command = torchrun_command(module, args, workers=workers, max_restarts=max_restarts, port=port)
    with tempfile.TemporaryDirectory(prefix="course-ddp-pids-") as pid_dir:
        environment = {
            **os.environ,
            **SHARED_STORE_FIX,  # restarts work only with it (pytorch/pytorch#135712)
            **(env or {}),
            PID_DIR_VARIABLE: pid_dir,
        }
        started = time.monotonic()
        process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=environment,
            start_new_session=True,  # its own process group: one signal reaches torchrun's group
        )
        try:
            output, _ = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _stop(process, Path(pid_dir))
            raise TimeoutError(
                f"the run took longer than {timeout:g} s; all of its processes were stopped"
            ) from None
        except BaseException:  # Ctrl+C in a notebook or a terminal
            _stop(process, Path(pid_dir))
            raise
        _stop(process, Path(pid_dir))  # a worker torchrun may have left behind
    if process.returncode != 0:
        rank, exit_code = failed_rank(output)
        raise WorkerFailed(rank, exit_code, output)
    return LaunchResult(command, output, time.monotonic() - started)


_FAILURE = re.compile(r"rank\s*:\s*(\d+).*?exitcode\s*:\s*(-?\d+)", flags=re.DOTALL)


def failed_rank(output: str) -> tuple[int | None, int | None]:
    """The rank and exit code of the worker that failed first, from torchrun's failure report.

    torchrun's "Root Cause" is the failure with the earliest timestamp, in whole seconds: a
    worker that exited because its peer died can tie with it. So a lone worker that exited
    by itself (a positive exit code; those torchrun stopped have -15, SIGTERM) is preferred.
    """
    report = output[output.rfind("Failures:") :] if "Failures:" in output else ""
    failures = [(int(rank), int(code)) for rank, code in _FAILURE.findall(report)]
    exited = sorted({failure for failure in failures if failure[1] > 0})
    if len(exited) == 1:
        return exited[0]
    root = _FAILURE.search(output.rsplit("Root Cause", 1)[-1]) if "Root Cause" in output else None
    return (int(root.group(1)), int(root.group(2))) if root else (None, None)


def check_launch(
    workers: int, *, allow_oversubscribe: bool = False, port: int | None = None
) -> None:
    """Refuse, with one sentence, what ``launch`` would refuse: too many workers, a taken port."""
    _check_workers(workers, allow_oversubscribe)
    if port is not None:
        _check_port_free(port)


def _check_workers(workers: int, allow_oversubscribe: bool) -> None:
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive whole number, got {workers!r}")
    if allow_oversubscribe:
        return
    from course_lib.ddp.train import backend_and_device

    if backend_and_device()[0] == "nccl":
        import torch

        gpus = torch.cuda.device_count()
        if workers > gpus:
            raise ValueError(
                f"{workers} workers but {gpus} GPU(s): nccl needs one GPU per worker; use "
                f"--workers {gpus}, or COURSE_DEVICE=cpu to run on the CPU with gloo"
            )
        return
    cores = usable_cores()
    if workers > cores:
        raise ValueError(
            f"{workers} workers but only {cores} CPU core(s): they would share cores and "
            "every step would wait for the slowest; use --workers "
            f"{cores} or fewer, or --allow-oversubscribe to run them anyway"
        )


def _check_port_free(port: int) -> None:
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ValueError(f"port must be a whole number from 1 to 65535, got {port!r}")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            raise PortInUse(
                f"port {port} is already in use by another program; pass another --port, or "
                "leave --port out and torchrun picks a free one (--standalone)"
            ) from None


def _stop(process: subprocess.Popen, pid_dir: Path) -> None:
    """End torchrun's process group (SIGTERM, then SIGKILL), then any worker still alive."""
    if process.poll() is None:
        _signal_group(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=_STOP_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            _signal_group(process.pid, signal.SIGKILL)
            process.wait()
    _signal_group(process.pid, signal.SIGKILL)  # helpers torchrun's group may still hold
    workers = [int(p.name) for p in pid_dir.iterdir() if p.name.isdigit()]
    for pid in workers:
        if process_alive(pid):
            _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + _STOP_GRACE_SECONDS
    while any(process_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in workers:
        if process_alive(pid):
            _signal(pid, signal.SIGKILL)


def process_alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie, finished but not yet reaped, counts as ended)."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    stat = Path(f"/proc/{pid}/stat")
    with contextlib.suppress(OSError):
        return stat.read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    return True


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def _signal(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signum)
