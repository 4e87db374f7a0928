import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch

# Under pytest-xdist two workers share the cores: one torch thread each avoids oversubscription,
# which made small-tensor tests 2-3x slower. Notebook kernels are separate processes, unaffected.
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)


_KILLED_WHILE_WRITING = """
import os, time
import course_lib.hardening.secure as secure
real_fsync = os.fsync
def slow_fsync(fd):
    real_fsync(fd)
    print("writing", flush=True)
    time.sleep(60)  # SIGKILLed here, with the first file of a new model half-way to disk
secure.os.fsync = slow_fsync
"""


@pytest.fixture
def kill_while_writing():
    """Run Python ``code`` in a subprocess and SIGKILL it once save_secure starts writing files."""

    def run(code: str) -> None:
        script = _KILLED_WHILE_WRITING + textwrap.dedent(code)
        process = subprocess.Popen(
            [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True
        )
        assert process.stdout.readline().strip() == "writing"
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)

    return run
