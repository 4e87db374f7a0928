"""The "Open in Colab" route: each notebook's first code cell installs the course on Colab only.

Colab itself cannot be reached from the test machine, so these tests run that first cell here
twice: as it is (it must do nothing), and with a stand-in `google.colab` module in
`sys.modules` (it must pip-install this repository and turn on Colab's widget manager).
"""

import re
import subprocess
import sys
import types
from importlib.metadata import metadata
from pathlib import Path

import nbformat
import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
LEARNER_NOTEBOOKS = sorted(
    [
        *ROOT.glob("notebooks/*.ipynb"),
        *ROOT.glob("solutions/*.ipynb"),
        *ROOT.glob("exercises/*.ipynb"),
    ]
)
PROJECT = metadata("finetune-course")
REPOSITORY = dict(url.split(", ") for url in PROJECT.get_all("Project-URL"))["Homepage"]
COLAB_BADGE = re.compile(
    r"\[!\[Open in Colab\]\(https://colab\.research\.google\.com/assets/colab-badge\.svg\)\]"
    r"\(https://colab\.research\.google\.com/github/(?P<repo>[\w.-]+/[\w.-]+)/blob/main/(?P<path>[\w./-]+)\)"
)


def first_code_cell(path: Path) -> str:
    notebook = nbformat.read(path, as_version=4)
    return next(cell.source for cell in notebook.cells if cell.cell_type == "code")


COLAB_CELL = first_code_cell(ROOT / "notebooks" / "00_start_here.ipynb")


def test_the_first_cell_is_the_colab_install_cell():
    assert COLAB_CELL.startswith("# On Google Colab, install the course first")


@pytest.mark.parametrize("path", LEARNER_NOTEBOOKS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_learner_notebook_starts_with_the_same_colab_cell(path):
    assert first_code_cell(path) == COLAB_CELL


def test_outside_colab_the_cell_does_nothing(monkeypatch, capsys):
    def no_subprocess(*args, **kwargs):
        raise AssertionError(f"the Colab cell ran a command outside Colab: {args}")

    monkeypatch.setattr(subprocess, "run", no_subprocess)
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    exec(COLAB_CELL, {})
    assert capsys.readouterr().out == ""


def test_on_colab_the_cell_installs_this_repository_and_enables_widgets(monkeypatch, capsys):
    commands, widget_managers = [], []
    colab = types.ModuleType("google.colab")
    colab.output = types.SimpleNamespace(
        enable_custom_widget_manager=lambda: widget_managers.append("enabled")
    )
    monkeypatch.setitem(sys.modules, "google", types.ModuleType("google"))
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    monkeypatch.setattr(subprocess, "run", lambda command, **kwargs: commands.append(command))

    exec(COLAB_CELL, {})

    [command] = commands
    assert command[:5] == [sys.executable, "-m", "pip", "install", "--quiet"]
    requirement = Requirement(command[5])
    assert requirement.name == PROJECT["Name"]
    assert requirement.url == f"git+{REPOSITORY}"
    assert widget_managers == ["enabled"]
    assert "Restart session" in capsys.readouterr().out


def test_the_readme_has_an_open_in_colab_badge_per_notebook():
    badges = list(COLAB_BADGE.finditer((ROOT / "README.md").read_text()))
    assert {f"https://github.com/{b['repo']}" for b in badges} == {REPOSITORY}
    linked = {b["path"] for b in badges}
    for path in linked:
        assert (ROOT / path).is_file(), f"the README's Colab badge points at a missing {path}"
    wanted = [*ROOT.glob("notebooks/*.ipynb"), *ROOT.glob("exercises/*.ipynb")]
    missing = sorted(
        str(p.relative_to(ROOT)) for p in wanted if str(p.relative_to(ROOT)) not in linked
    )
    assert missing == [], f"no Open in Colab badge in the README for {missing}"
