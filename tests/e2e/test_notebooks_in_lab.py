"""Every chapter notebook, run in JupyterLab in a real browser, as a learner sees it.

Strict nbval proves that each notebook executes; these tests prove that JupyterLab shows it:
no cell errors, every widget rendered (no "Error displaying widget"), every plot present, and
a slider that redraws its output. Screenshots land in test-artifacts/e2e/.

Needs Debian's Chromium at /usr/bin/chromium (never `playwright install`, which downloads a
browser). Without it the tests are skipped with a message, unless COURSE_E2E=required (CI),
which turns the skip into a failure.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import nbformat
import pytest
from lab_driver import (
    CHROMIUM,
    CHROMIUM_FLAGS,
    expected_outputs,
    run_notebook,
    shut_down_kernels,
    start_lab,
)

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
ARTIFACTS = ROOT / "test-artifacts" / "e2e"
BROKEN = "zz_broken_widget.ipynb"


def _require_chromium() -> None:
    if CHROMIUM.is_file():
        return
    message = (
        f"e2e tests need Chromium at {CHROMIUM} (Debian: apt-get install chromium); "
        "they were NOT run"
    )
    if os.environ.get("COURSE_E2E") == "required":
        pytest.fail(message + " and COURSE_E2E=required", pytrace=False)
    pytest.skip(message)


def _broken_widget_notebook() -> nbformat.NotebookNode:
    """A widget whose front-end code does not exist: JupyterLab cannot render it."""
    source = (
        "import ipywidgets as widgets\n"
        "from traitlets import Unicode\n\n\n"
        "class Missing(widgets.DOMWidget):\n"
        '    _view_module = Unicode("course-no-such-widget-module").tag(sync=True)\n'
        '    _view_name = Unicode("MissingView").tag(sync=True)\n\n\n'
        "Missing()"
    )
    return nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell(source)],
        metadata={
            "kernelspec": {
                "name": "python3",
                "display_name": "Python 3 (ipykernel)",
                "language": "python",
            }
        },
    )


@pytest.fixture(scope="module")
def lab():
    _require_chromium()
    workspace = Path(tempfile.mkdtemp(prefix="course-e2e-"))
    root = workspace / "notebooks"
    shutil.copytree(ROOT / "notebooks", root)
    nbformat.write(_broken_widget_notebook(), root / BROKEN)
    server = start_lab(root, workspace / "jupyter-config")
    yield server
    server.stop()
    shutil.rmtree(workspace, ignore_errors=True)


@pytest.fixture(scope="module")
def browser(lab):
    from playwright.sync_api import sync_playwright

    profile = tempfile.mkdtemp(prefix="course-e2e-chromium-")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            profile,
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": 1400, "height": 1000},
        )
        yield context
        context.close()
    shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def page(browser, lab):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    tab = browser.new_page()
    yield tab
    tab.close()
    shut_down_kernels(lab)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_the_notebook_runs_in_jupyterlab_with_its_widgets_and_plots(page, lab, path):
    report = run_notebook(
        page, lab, path.name, ARTIFACTS / f"{path.stem}.png", expected=expected_outputs(path)
    )
    print(
        f"{path.name}: Run All {report.seconds:.1f} s, {report.widgets} widget views, "
        f"{report.images} plots, slider moved: {report.slider_moved}"
    )
    assert not report.problems, f"{path.name} in JupyterLab:\n- " + "\n- ".join(report.problems)


def test_a_widget_that_cannot_render_is_reported(page, lab):
    report = run_notebook(page, lab, BROKEN, ARTIFACTS / "broken_widget.png", expected=(1, 0))
    print("broken widget:", report.problems)
    assert any(
        "a widget did not render" in problem and "course-no-such-widget-module" in problem
        for problem in report.problems
    ), report.problems
