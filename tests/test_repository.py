"""The repository's own promises: pinned environment, CI wired to the README's command."""

import ast
import os
import re
import subprocess
import sys
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


TOOLKIT_ROOMS_APART = ("course_lib.lessons", "course_lib.grading", "course_lib.tools")


def test_the_toolkit_imports_no_lesson_grading_or_tool_module():
    library = ROOT / "course_lib"
    rooms = {library / "lessons", library / "grading", library / "tools"}
    for path in sorted(library.rglob("*.py")):
        if path.name == "__init__.py" and path.parent == library:
            continue  # course_lib's own names point at chapter 0's lesson and tools, lazily
        if any(room in path.parents for room in rooms):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert not node.module.startswith(TOOLKIT_ROOMS_APART), (
                    f"{path.relative_to(ROOT)} imports {node.module}: the toolkit stands alone"
                )


def test_the_training_loop_imports_no_widgets():
    code = (
        "import sys, course_lib.train; "
        "print(sorted(m for m in sys.modules if m.startswith(('ipywidgets', 'course_lib.widgets'))))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
