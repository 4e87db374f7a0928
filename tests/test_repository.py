"""The repository's own promises: pinned environment, CI wired to the README's command."""

import os
import re
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements.lock"


def lock_pins() -> dict[str, str]:
    """Package name -> pinned version, for the lines that apply to this interpreter."""
    pins = {}
    for line in LOCK.read_text().splitlines():
        if not line or line[0] in "# ":
            continue
        requirement, _, marker = line.partition(" ; ")
        if marker and not Marker(marker).evaluate():
            continue
        name, version = requirement.split("==")
        pins[name.lower().replace("_", "-")] = version
    return pins


def test_lock_pins_the_tested_torch_and_torchvision_pair():
    pins = lock_pins()
    assert pins["torch"] == "2.14.1"
    assert pins["torchvision"] == "0.29.1"


def test_every_declared_dependency_is_satisfied_by_the_lock():
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = project["dependencies"] + project["optional-dependencies"]["dev"]
    pins = lock_pins()
    for line in declared:
        requirement = Requirement(line)
        name = requirement.name.lower().replace("_", "-")
        assert name in pins, f"{name} is declared but not locked: run `make lock`"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"lock pins {name}=={pins[name]}, outside {requirement.specifier}: run `make lock`"
        )


def test_ci_runs_the_readme_test_command_and_hides_no_failure():
    ci = ROOT / ".ci" / "run"
    assert os.access(ci, os.X_OK)
    script = ci.read_text()
    assert "set -euo pipefail" in script
    assert re.search(r"^\s*make test\b", script, re.MULTILINE)
    assert "make test" in (ROOT / "README.md").read_text()
    assert "make lab" in (ROOT / "README.md").read_text()


def test_top_level_layout():
    for name in (
        "README.md",
        "CONTRIBUTING.md",
        "pyproject.toml",
        "Makefile",
        "requirements.lock",
        "nbval_sanitize.cfg",
        "notebooks",
        "course_lib",
        "exercises",
        "solutions",
        "tests",
    ):
        assert (ROOT / name).exists(), name


def _pinned_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line[:1].isalpha()]


def test_binder_installs_the_lock_with_cpu_torch_and_no_cuda_packages():
    requirements = (ROOT / "binder" / "requirements.txt").read_text()
    cuda_only = ("nvidia-", "cuda-", "triton==")
    expected = [line for line in _pinned_lines(LOCK.read_text()) if not line.startswith(cuda_only)]
    assert _pinned_lines(requirements) == expected, "binder/ is out of date: run `make lock`"
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in requirements.splitlines()
    assert any(line.startswith("torch==2.14.1") for line in expected)


def test_binder_installs_the_course():
    post_build = ROOT / "binder" / "postBuild"
    assert (
        os.access(post_build, os.X_OK)
        and "pip install --no-deps --editable ." in post_build.read_text()
    )
    assert "mybinder.org/v2/gh/" in (ROOT / "README.md").read_text()
