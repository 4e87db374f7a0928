"""What the e2e tests drive: a private JupyterLab server, and one notebook run in it by a browser.

The server runs from the course's venv on a free loopback port with a random token, in a
test-only JUPYTER_CONFIG_DIR whose settings turn off the news/update toast, start the
preferred kernel without asking, and keep every cell in the DOM (no windowing), so that
outputs below the fold can be counted.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

CHROMIUM = Path(os.environ.get("COURSE_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false",
        "checkForUpdates": False,
    },
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {
        "autoStartDefaultKernel": True,
        "windowingMode": "none",
    },
}
WIDGET = "application/vnd.jupyter.widget-view+json"
IDLE = re.compile(r"\(ipykernel\) \| Idle")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Lab:
    """A running JupyterLab: its URL, token, the folder it serves, and its process."""

    url: str
    token: str
    root: Path
    process: subprocess.Popen
    log: Path

    def stop(self) -> None:
        """Stop the server by its PID: SIGTERM, then SIGKILL if it has not exited in 15 s."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait()


def write_settings(config_dir: Path) -> None:
    """The test-only user settings, under JUPYTER_CONFIG_DIR/lab/user-settings."""
    for name, values in SETTINGS.items():
        path = config_dir / "lab" / "user-settings" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values, indent=2))


def start_lab(root: Path, config_dir: Path, timeout: float = 90) -> Lab:
    """JupyterLab serving ``root``, configured only by ``config_dir``; waits until it answers."""
    write_settings(config_dir)
    port, token = _free_port(), secrets.token_hex(16)
    env = {
        **os.environ,
        "JUPYTER_CONFIG_DIR": str(config_dir),
        "JUPYTER_DATA_DIR": str(config_dir / "data"),
        "JUPYTER_RUNTIME_DIR": str(config_dir / "runtime"),
        "JUPYTERLAB_WORKSPACES_DIR": str(config_dir / "workspaces"),
        "JUPYTERLAB_SETTINGS_DIR": str(config_dir / "lab" / "user-settings"),
        "PYDEVD_DISABLE_FILE_VALIDATION": "1",
    }
    command = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
    ]
    if os.geteuid() == 0:
        command.append("--allow-root")  # CI containers run as root
    log = config_dir / "jupyterlab.log"
    with open(log, "wb") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=env)
    lab = Lab(f"http://127.0.0.1:{port}", token, root, process, log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"JupyterLab exited with {process.returncode}:\n{log.read_text()[-3000:]}"
            )
        try:
            with urllib.request.urlopen(f"{lab.url}/api/status?token={token}", timeout=2) as answer:
                if answer.status == 200:
                    return lab
        except OSError:
            time.sleep(0.5)
    lab.stop()
    raise RuntimeError(
        f"JupyterLab did not answer within {timeout:.0f} s:\n{log.read_text()[-3000:]}"
    )


@dataclass
class RunReport:
    """What a learner would have seen after Run All, and what went wrong."""

    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)
    widgets: int = 0
    images: int = 0
    slider_moved: bool | None = None  # None: the notebook has no slider


def expected_outputs(path: Path) -> tuple[int, int]:
    """(widget views, images) among the top-level outputs of a notebook.

    Widgets in cells tagged nbval-ignore-output are progress bars (a course convention); tqdm
    closes some of them when done, and a closed widget rightly shows nothing: not counted.
    """
    widgets = images = 0
    for cell in nbformat.read(path, as_version=4).cells:
        progress = "nbval-ignore-output" in cell.metadata.get("tags", [])
        for output in cell.get("outputs", []):
            widgets += WIDGET in output.get("data", {}) and not progress
            images += "image/png" in output.get("data", {})
    return widgets, images


def cell_errors(path: Path) -> list[str]:
    """Errors in the saved notebook, apart from cells tagged to raise or to be skipped by tests."""
    problems = []
    for index, cell in enumerate(nbformat.read(path, as_version=4).cells):
        tags = set(cell.metadata.get("tags", []))
        if cell.cell_type != "code" or tags & {"raises-exception", "nbval-skip"}:
            continue
        if cell.get("execution_count") is None:
            problems.append(f"cell {index} did not run")
        for output in cell.get("outputs", []):
            if output.output_type == "error":
                problems.append(f"cell {index} raised {output.ename}: {output.evalue}")
    return problems


# --- the browser's part --------------------------------------------------------------------------

_PROMPTS = ".jp-CodeCell .jp-InputArea-prompt"
_TOP_LEVEL = ".jp-Cell-outputArea > .jp-OutputArea-child > .jp-OutputArea-output"
_WIDGET_VIEWS = f"{_TOP_LEVEL}:has(.jupyter-widgets)"
# how ipywidgets says it could not render a widget: the error view (8.x, "Click to show
# javascript error.") and the text of a missing model or front-end ("Error displaying widget"),
# looked for in outputs only: a markdown cell may quote that text
_ERROR_VIEW = ".jupyter-widgets-error-widget"
_WIDGET_ERRORS = (
    f"{_ERROR_VIEW}, .widget-error, .jp-OutputArea-output :text('Error displaying widget')"
)


def open_notebook(page, lab: Lab, name: str, timeout_ms: int = 120_000) -> None:
    """Open ``name`` and wait until its kernel is idle: "(ipykernel) | Idle" in the status bar.

    The execution indicator says idle before any kernel exists; Run All clicked then does nothing.
    """
    page.goto(f"{lab.url}/lab/tree/{name}?reset&token={lab.token}")  # reset: no tabs from before
    notebook(page).locator(".jp-Notebook").wait_for(timeout=timeout_ms)
    page.get_by_text(IDLE).first.wait_for(timeout=timeout_ms)


def notebook(page):
    """The notebook panel on screen (other tabs' panels stay in the DOM, hidden)."""
    return page.locator(".jp-NotebookPanel").filter(visible=True)


def _menu(page, menu: str, item: str) -> None:
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(f"^{menu}$")).click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(f"^{item}$")).click()


def _busy(page) -> bool:
    """A cell of the notebook on screen is queued or running: its prompt shows "[*]"."""
    return any("*" in text for text in notebook(page).locator(_PROMPTS).all_text_contents())


def _settled(page) -> bool:
    """No cell is queued or running, and the status bar says the kernel is idle."""
    return not _busy(page) and page.get_by_text(IDLE).count() > 0


def run_all(page, timeout_s: float) -> float:
    """Run > Run All Cells; seconds until no cell is queued or running and the kernel is idle (2 s)."""
    started = time.monotonic()
    _menu(page, "Run", "Run All Cells")
    deadline, quiet_since = started + timeout_s, None
    while time.monotonic() < deadline:
        if _settled(page):
            quiet_since = quiet_since or time.monotonic()
            if time.monotonic() - quiet_since > 2:
                return time.monotonic() - started
        else:
            quiet_since = None
        time.sleep(0.5)
    raise TimeoutError(f"Run All did not finish within {timeout_s:.0f} s")


def save(page, path: Path, timeout_s: float = 30) -> None:
    """File > Save Notebook, and wait until the new file on disk is complete.

    Jupyter server writes the notebook in place, keeping a `.~name` backup until the write
    has finished, so a newer mtime alone can mean a file that is still empty.
    """
    before = path.stat().st_mtime_ns
    backup = path.with_name(".~" + path.name)
    _menu(page, "File", "Save Notebook")
    deadline = time.monotonic() + timeout_s
    while path.stat().st_mtime_ns == before or backup.exists() or not _is_json(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path.name} was not saved within {timeout_s:.0f} s")
        time.sleep(0.2)


def _is_json(path: Path) -> bool:
    try:
        json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        return False
    return True


def _widget_error(panel, timeout_s: float = 5) -> str:
    """The message of the first widget that did not render, without the JavaScript stack.

    ipywidgets 8's error view says "Click to show javascript error."; a click shows
    "[Open Browser Console ...] Failed to load view class ... Error: ... at ...".
    """
    views = panel.locator(_ERROR_VIEW)
    if views.count() == 0:
        return " ".join(panel.locator(_WIDGET_ERRORS).first.inner_text().split())
    view = views.first
    view.click()
    deadline = time.monotonic() + timeout_s
    text = " ".join(view.inner_text().split())
    while text.startswith("Click to show") and time.monotonic() < deadline:
        time.sleep(0.2)
        text = " ".join(view.inner_text().split())
    return text.split("] ", 1)[-1].split(" at ", 1)[0]


def _undecoded_images(page) -> int:
    return (
        notebook(page)
        .locator(".jp-OutputArea-output img")
        .evaluate_all("images => images.filter(i => !i.complete || i.naturalWidth === 0).length")
    )


def _linked_output(view) -> str:
    return "".join(
        view.locator(".widget-output").evaluate_all("outputs => outputs.map(o => o.innerHTML)")
    )


def move_a_slider(page, timeout_s: float = 90) -> bool | None:
    """Drag the first slider of the last widget view that has one; True if its linked output changed.

    A drag sends several values, each redrawn by the kernel: wait until the output has stopped
    changing and the kernel is idle, so that the screenshot shows the final redraw.
    """
    views = notebook(page).locator(_WIDGET_VIEWS)
    for index in reversed(range(views.count())):
        view = views.nth(index)
        handles = view.locator(".noUi-handle")
        if handles.count() == 0 or view.locator(".widget-output").count() == 0:
            continue
        handle = handles.first
        handle.scroll_into_view_if_needed()
        before = _linked_output(view)
        box = handle.bounding_box()
        x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        page.mouse.move(x, y)
        page.mouse.down()
        page.mouse.move(x + 60, y, steps=6)
        page.mouse.up()
        deadline, previous = time.monotonic() + timeout_s, before
        while time.monotonic() < deadline:
            time.sleep(0.5)
            after = _linked_output(view)
            if after != before and after == previous and _settled(page):
                view.scroll_into_view_if_needed()
                return True
            previous = after
        return False
    return None


def run_notebook(
    page,
    lab: Lab,
    name: str,
    screenshot: Path,
    *,
    expected: tuple[int, int],
    timeout_s: float = 300,
) -> RunReport:
    """Open, Run All, save, and check what a learner would see; screenshot at the slider (or the end)."""
    report = RunReport()
    open_notebook(page, lab, name)
    report.seconds = run_all(page, timeout_s)
    path = lab.root / name
    save(page, path)
    report.problems += cell_errors(path)
    saved_widgets, saved_images = expected_outputs(path)
    panel = notebook(page)
    report.widgets = panel.locator(_WIDGET_VIEWS).count()
    top_level_images = panel.locator(f'{_TOP_LEVEL}[data-mime-type="image/png"] img').count()
    report.images = panel.locator('.jp-OutputArea-output[data-mime-type="image/png"] img').count()
    broken = panel.locator(_WIDGET_ERRORS).count()
    if broken:
        report.problems.append(
            f"a widget did not render ({broken} error views): {_widget_error(panel)!r}"
        )
    if report.widgets < saved_widgets or saved_widgets != expected[0]:
        report.problems.append(
            f"widget views rendered: {report.widgets}, in the saved notebook: "
            f"{saved_widgets}, in the stored one: {expected[0]}"
        )
    # a plot drawn into an Output widget is nested in the widget in JupyterLab, but a top-level
    # output when nbclient (no front end) stored the notebook: compare totals with the stored one
    if top_level_images != saved_images or report.images < expected[1]:
        report.problems.append(
            f"plots shown: {report.images} ({top_level_images} outside widgets), in the "
            f"saved notebook: {saved_images}, in the stored one: {expected[1]}"
        )
    undecoded = _undecoded_images(page)
    if undecoded:
        report.problems.append(f"{undecoded} images are broken (not decoded)")
    report.slider_moved = move_a_slider(page)
    if report.slider_moved is False:
        report.problems.append("moving a slider did not change its linked output")
    page.screenshot(path=str(screenshot))
    return report


def shut_down_kernels(lab: Lab) -> None:
    """Delete every session (and so its kernel) through the REST API."""

    def call(method: str, path: str):
        request = urllib.request.Request(f"{lab.url}{path}?token={lab.token}", method=method)
        with urllib.request.urlopen(request, timeout=10) as answer:
            return json.loads(answer.read() or b"null")

    for session in call("GET", "/api/sessions"):
        call("DELETE", f"/api/sessions/{session['id']}")
