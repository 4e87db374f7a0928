"""Nothing a submission starts may outlive its grading.

A submission's code runs in a Jupyter kernel, a child of the grader. It can start processes of
its own, and a process started in a new session (``start_new_session=True``, ``setsid``) leaves
the kernel's process group: shutting the kernel down does not stop it. If its parent exits, Unix
hands it to init, and nobody remembers it came from a submission. Left running, it could tamper
with the submissions graded after it.

On Linux the grader therefore becomes a *child subreaper* (``prctl(PR_SET_CHILD_SUBREAPER)``):
every orphan among its descendants is re-parented to the grader instead of to init. After each
kernel shuts down, :func:`no_leftovers` kills every process that was re-parented to the grader
during grading, with all its descendants, and reaps them.

Elsewhere (macOS, the BSDs) there is no subreaper. There the grader still kills the kernel's
descendants while they are attached to it (:func:`kill_descendants`, before the kernel shuts
down), but a process whose parent has already exited escapes. Grade untrusted work on Linux, in
a container (docs/instructors.md).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

_PR_SET_CHILD_SUBREAPER = 36  # from <linux/prctl.h>
_PROC = Path("/proc")


def become_subreaper() -> bool:
    """Make this process the subreaper of its descendants. True when it worked (Linux only)."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    return libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0


def children_of(pid: int) -> set[int]:
    """The process ids whose parent is ``pid`` (zombies included)."""
    return {child for child, parent in _parents().items() if parent == pid}


def descendants_of(pid: int) -> list[int]:
    """Every process below ``pid``: children, their children, and so on (parents first)."""
    parents = _parents()
    found, frontier = [], [pid]
    while frontier:
        below = [child for child, parent in parents.items() if parent in frontier]
        found += below
        frontier = below
    return found


def kill_descendants(pid: int) -> list[int]:
    """SIGKILL every descendant of ``pid`` (not ``pid`` itself); return the ids killed."""
    return _kill(descendants_of(pid))


def kill_leftovers(known_children: set[int]) -> list[int]:
    """Kill this process's children that are not in ``known_children``, with their descendants.

    Repeats until none is left, since a process may fork while its siblings are being killed.
    The killed children are reaped, so no zombie remains either. Returns the ids killed.
    """
    me, killed = os.getpid(), []
    for _ in range(10):
        leftovers = children_of(me) - known_children
        if not leftovers:
            break
        for child in leftovers:
            killed += _kill([*descendants_of(child), child])
        _reap(leftovers)
    return killed


@contextlib.contextmanager
def no_leftovers() -> Iterator[None]:
    """Kill, on exit, whatever was re-parented to this process inside the block (Linux)."""
    become_subreaper()
    known = children_of(os.getpid())
    try:
        yield
    finally:
        kill_leftovers(known)


def _kill(pids: list[int]) -> list[int]:
    killed = []
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
    return killed


def _reap(pids: set[int], patience: float = 2.0) -> None:
    """Collect the exit status of killed children, waiting at most ``patience`` seconds."""
    waiting, deadline = set(pids), time.monotonic() + patience
    while waiting and time.monotonic() < deadline:
        for pid in list(waiting):
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:  # not ours, or reaped already
                done = pid
            if done:
                waiting.discard(pid)
        if waiting:
            time.sleep(0.01)


def _parents() -> dict[int, int]:
    """Every visible process id and its parent's id."""
    if _PROC.is_dir():
        return _parents_from_proc()
    listing = subprocess.run(
        ["ps", "-A", "-o", "pid=", "-o", "ppid="], capture_output=True, text=True, check=False
    ).stdout
    pairs = (line.split() for line in listing.splitlines())
    return {int(pid): int(parent) for pid, parent in pairs}


def _parents_from_proc() -> dict[int, int]:
    parents = {}
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # it exited while we looked
            continue
        # "pid (command) state ppid ...": the command may hold spaces and parentheses
        parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    return parents
