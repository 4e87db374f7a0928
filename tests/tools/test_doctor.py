"""The doctor: a correct report here, and clear sentences (never a traceback) when broken."""

import os
import subprocess
import sys
import textwrap

import pytest

from course_lib import check_environment
from course_lib.tools import doctor
from course_lib.tools.doctor import Check, Report, Status


def test_this_environment_is_ready_and_every_check_is_reported():
    report = check_environment()
    assert report.ok, str(report)
    text = str(report)
    for name in (
        "python",
        "torch",
        "torchvision",
        "jupyterlab",
        "ipywidgets",
        "widgets in JupyterLab",
        "notebook kernel",
        "device",
    ):
        assert report[name].status in (Status.OK, "warn"), report[name]
        assert name in text
    assert "Environment ready for the course." in text


def test_a_failed_check_makes_the_report_not_ok_and_lists_the_fix():
    report = Report(
        [Check("torch", Status.OK, "2.14.1"), Check("thing", Status.FAIL, "broken", "do this")]
    )
    assert not report.ok
    assert "  - thing: do this" in str(report)
    assert "NOT ready" in str(report)


def test_a_check_that_crashes_becomes_a_failed_line():
    def explode():
        raise OSError("disk on fire")

    check = doctor._run_safely("explosive", explode)
    assert check.status == Status.FAIL
    assert "OSError: disk on fire" in check.detail


def test_a_frontend_extension_of_the_wrong_major_version_is_reported(monkeypatch):
    real = doctor._installed_version
    monkeypatch.setattr(
        doctor,
        "_installed_version",
        lambda name: "1.1.7" if name == "jupyterlab_widgets" else real(name),
    )
    check = doctor._widgets_render()
    assert check.status == Status.FAIL
    assert "Error displaying widget" in check.detail


def test_a_bad_device_variable_fails_with_a_fix(monkeypatch):
    monkeypatch.setenv("COURSE_DEVICE", "tpu")
    check = doctor._device()
    assert check.status == Status.FAIL
    assert "COURSE_DEVICE" in check.fix


def run_doctor_with_fake_modules(tmp_path, modules: dict[str, str]):
    """Run `course doctor` in a subprocess where `modules` shadow the installed packages."""
    for name, source in modules.items():
        package = tmp_path / name
        package.mkdir()
        (package / "__init__.py").write_text(textwrap.dedent(source))
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    return subprocess.run(
        [sys.executable, "-m", "course_lib.tools.cli", "doctor"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_torchvision_built_for_another_torch_gets_a_sentence_not_a_traceback(tmp_path):
    result = run_doctor_with_fake_modules(
        tmp_path,
        {
            "torchvision": 'raise RuntimeError("operator torchvision::nms does not exist")',
        },
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "cannot load its C++ operators" in output
    assert "install the matching pair from requirements.lock" in output
    assert "Traceback" not in output


def test_a_torch_that_cannot_load_is_reported_and_the_other_checks_still_run(tmp_path):
    result = run_doctor_with_fake_modules(
        tmp_path,
        {
            "torch": 'raise OSError("libtorch_cpu.so: cannot open shared object file")',
        },
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "FAIL  torch" in output and "libtorch_cpu.so" in output
    assert "ok  jupyterlab" in output  # one broken package does not hide the rest
    assert "Traceback" not in output


@pytest.mark.parametrize("args, code", [(["doctor"], 0), ([], 2)])
def test_course_command_exit_codes(args, code):
    result = subprocess.run(
        [sys.executable, "-m", "course_lib.tools.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == code, result.stdout + result.stderr
