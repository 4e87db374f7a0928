"""``course grade``: execute submitted notebooks and grade them, whatever they do.

Every submission gets a row in the gradebook and a feedback file; one bad submission never
stops the batch. Each runs in its own kernel, in a fresh working directory of its own, with
a per-cell timeout, a wall limit per notebook and a cap on the output it may produce. This is
isolation against accidents, not a sandbox: see docs/instructors.md before grading code you
do not trust.
"""

from __future__ import annotations

import csv
import inspect
import json
import logging
import os
import secrets
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from enum import Enum
from multiprocessing import get_context
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellTimeoutError, DeadKernelError

from course_lib.grading import probing, reaper
from course_lib.grading.runner import CASE_TIME_LIMIT_SECONDS, judge_exercise
from course_lib.grading.spec import Case, Exercise, Probe
from course_lib.tools.assign import METADATA_KEY


class RowStatus(str, Enum):
    """How grading one submission went: the gradebook's status column."""

    OK = "ok"
    TIMEOUT = "timeout"
    CRASHED = "crashed"  # the kernel died
    INVALID = "invalid"  # not a readable notebook
    WRONG_NOTEBOOK = "wrong-notebook"
    OUTPUT_LIMIT = "output-limit"
    CELL_ERRORS = "cell-errors"  # ran to the end, some cells raised
    GRADER_ERROR = "grader-error"

    def __str__(self) -> str:
        return self.value


HIDDEN_TESTS_ENV = "COURSE_HIDDEN_TESTS"
SETUP_TIMEOUT_SECONDS = 120  # for importing the grading code (and torch) into a kernel
_DEFAULT_HIDDEN = Path(__file__).with_name("data") / "hidden_cases.json"
_MAX_OUTCOME_BYTES = 50_000_000  # what the kernel's answers may weigh in all


@dataclass(frozen=True)
class Limits:
    cell_timeout: float = 60.0  # seconds for one cell
    wall_limit: float = 300.0  # seconds for the whole notebook, grading included
    output_bytes: int = 5_000_000  # what the notebook may print in all


@dataclass
class Grade:
    """One gradebook row (and what its feedback file says)."""

    submission: str
    student: str
    status: RowStatus
    points: dict[str, float] = field(default_factory=dict)
    max_points: float = 0.0
    seconds: float = 0.0
    detail: str = ""
    counted: bool = True
    results: list[dict] = field(default_factory=list)
    cell_errors: list[str] = field(default_factory=list)

    @property
    def total(self) -> float:
        return round(sum(self.points.values()), 2)


def student_id(path: Path) -> str:
    """``alice__01_gradient_descent.ipynb`` -> ``alice``; ``bob.ipynb`` -> ``bob``."""
    return path.stem.split("__")[0].strip() or path.stem


def load_hidden_tests(path: Path | None = None) -> dict[str, list[dict]]:
    """Hidden case parameters per exercise: COURSE_HIDDEN_TESTS, else the package's data file."""
    source = Path(path or os.environ.get(HIDDEN_TESTS_ENV) or _DEFAULT_HIDDEN)
    return json.loads(source.read_text(encoding="utf-8"))


def grade_submission(
    path: str | Path,
    limits: Limits = Limits(),
    assignment: str | None = None,
    hidden: dict | None = None,
) -> Grade:
    """Grade one submission; never raises (a failure becomes the row's status)."""
    path = Path(path)
    # nbclient leaves an output-polling task behind when it interrupts a timed-out cell;
    # asyncio would print its harmless traceback to the instructor's terminal.
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    started = time.monotonic()
    grade = Grade(submission=path.name, student=student_id(path), status=RowStatus.GRADER_ERROR)
    try:
        with reaper.no_leftovers():  # nothing the submission started survives its grading
            _grade_into(
                grade, path, limits, assignment, load_hidden_tests() if hidden is None else hidden
            )
    except Exception as exc:  # the grader's own failure: still a row, still a message
        grade.status, grade.detail = RowStatus.GRADER_ERROR, f"{type(exc).__name__}: {exc}"
    grade.seconds = round(time.monotonic() - started, 2)
    return grade


def _grade_into(
    grade: Grade, path: Path, limits: Limits, assignment: str | None, hidden: dict
) -> None:
    from course_lib.grading.exercise_index import NOTEBOOK_EXERCISES

    notebook, problem = _read_notebook(path)
    if notebook is None:
        grade.status, grade.detail = RowStatus.INVALID, problem
        return
    name = notebook.metadata.get(METADATA_KEY, {}).get("exercise_notebook")
    if name not in NOTEBOOK_EXERCISES:
        grade.status = RowStatus.INVALID
        grade.detail = "not a course exercise notebook: submit the file from exercises/, with its metadata intact"
        return
    exercises = NOTEBOOK_EXERCISES[name]
    grade.points = {exercise.id: 0.0 for exercise in exercises}
    grade.max_points = sum(exercise.points for exercise in exercises)
    if assignment and name != assignment:
        grade.status, grade.detail = (
            RowStatus.WRONG_NOTEBOOK,
            f"this is {name}; the assignment is {assignment}",
        )
        return
    with tempfile.TemporaryDirectory(prefix="course-grade-") as scratch:
        # nested: '..' of the cwd is still this submission's
        workdir = Path(scratch, "sandbox", "work")
        workdir.mkdir(parents=True)
        _execute_and_grade(grade, notebook, name, workdir, limits, hidden)


def _read_notebook(path: Path) -> tuple[nbformat.NotebookNode | None, str]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return None, f"not a readable text file ({type(exc).__name__})"
    try:
        json.loads(text)
    except json.JSONDecodeError as exc:
        return None, f"not a notebook: malformed JSON at line {exc.lineno}, column {exc.colno}"
    try:
        notebook = nbformat.reads(text, as_version=4)
        nbformat.validate(notebook)
    except Exception as exc:
        return (
            None,
            f"not a valid Jupyter notebook ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})",
        )
    return notebook, ""


def _execute_and_grade(
    grade: Grade, notebook, name: str, workdir: Path, limits: Limits, hidden: dict
) -> None:
    deadline = time.monotonic() + limits.wall_limit
    client = _GradingClient(
        notebook,
        kernel_name="python3",
        resources={"metadata": {"path": str(workdir)}},
        allow_errors=True,
        timeout_func=lambda cell: max(1, min(limits.cell_timeout, deadline - time.monotonic())),
        output_limit=limits.output_bytes,
        record_timing=False,
        store_widget_state=False,
    )
    # the kernel starts in resources' path: workdir; it is not told where hidden cases live
    kernel_env = {key: value for key, value in os.environ.items() if key != HIDDEN_TESTS_ENV}
    with client.setup_kernel(env=kernel_env):
        try:
            _load_grading_code(client)
            if not _run_cells(grade, client, notebook, deadline):
                return
            cases = _cases_of(name, hidden)
            with tempfile.TemporaryDirectory(prefix="course-tests-") as tests_cwd:
                outcomes, problem = _run_probes(client, cases, limits, Path(tests_cwd))
        finally:
            _kill_what_the_kernel_started(client)
    if outcomes is None:
        grade.status = RowStatus.CRASHED
        grade.detail = "; ".join(part for part in (grade.detail, problem) if part)
        return
    results = _judge(cases, outcomes)
    grade.results = results
    for result in results:
        grade.points[result["exercise_id"]] = result["earned"]
    if grade.status == RowStatus.GRADER_ERROR:  # nothing went wrong while executing
        grade.status = RowStatus.CELL_ERRORS if grade.cell_errors else RowStatus.OK
    if client.output_exceeded and grade.status in (RowStatus.OK, RowStatus.CELL_ERRORS):
        grade.status = RowStatus.OUTPUT_LIMIT
        grade.detail = (
            f"the notebook printed more than {limits.output_bytes:,} bytes; the rest was dropped"
        )


def _kill_what_the_kernel_started(client: _GradingClient) -> None:
    """Kill the kernel's descendants while they are still attached to it (every platform).

    Shutting the kernel down stops its own process group only. Processes that left it (a new
    session) and were orphaned are caught afterwards by ``reaper.no_leftovers`` (Linux).
    """
    process = getattr(getattr(client.km, "provisioner", None), "process", None)
    if process is not None and process.poll() is None:
        reaper.kill_descendants(process.pid)


def _load_grading_code(client: _GradingClient) -> None:
    """Import torch and what the probes import before any learner code runs.

    The grading cell then imports nothing from disk, so it still works when the learner's code
    has deleted the working directory (after which ``import torch`` kills the kernel).
    """
    setup = nbformat.v4.new_code_cell("import torch, course_lib.grading.exercise_index")
    client.nb.cells.insert(0, setup)
    # The grader's own imports (torch) are not the learner's time: on a busy machine they can
    # take longer than a learner's cell may.
    saved, client.timeout_func = client.timeout_func, lambda cell: SETUP_TIMEOUT_SECONDS
    try:
        client.execute_cell(setup, 0)
    finally:
        client.nb.cells.pop(0)
        client.timeout_func = saved


def _run_cells(grade: Grade, client: _GradingClient, notebook, deadline: float) -> bool:
    """Run the learner's cells; False when the kernel died (the grade says why)."""
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type != "code":
            continue
        if time.monotonic() >= deadline:
            grade.status, grade.detail = (
                RowStatus.TIMEOUT,
                f"the notebook's time limit ran out before cell {index}",
            )
            return True
        try:
            client.execute_cell(cell, index)
        except CellTimeoutError:
            grade.status, grade.detail = (
                RowStatus.TIMEOUT,
                f"cell {index} ran past its time limit (an endless loop?)",
            )
            if client.interrupt_until_idle():
                return True
            grade.detail += "; the kernel did not respond to interrupts, so nothing could be graded"
            return False
        except DeadKernelError:
            grade.status = RowStatus.CRASHED
            grade.detail = f"the kernel died in cell {index} (os._exit, a crash, or out of memory)"
            return False
        errors = [out for out in cell.get("outputs", []) if out.get("output_type") == "error"]
        if errors:
            grade.cell_errors.append(f"cell {index}: {errors[0]['ename']}: {errors[0]['evalue']}")
    return True


def _cases_of(name: str, hidden: dict) -> list[tuple[Exercise, list[Case]]]:
    """Each exercise of notebook ``name`` with its public and hidden cases (built here)."""
    from course_lib.grading.exercise_index import NOTEBOOK_EXERCISES

    return [
        (
            exercise,
            exercise.public_cases() + [exercise.make_case(p) for p in hidden.get(exercise.id, [])],
        )
        for exercise in NOTEBOOK_EXERCISES[name]
    ]


def _probe_payload(cases: list[tuple[Exercise, list[Case]]], folder: Path) -> dict:
    """What the kernel gets: the probes' source, and each case's inputs. No expected answer."""
    jobs, modules = [], {probing.__name__: inspect.getsource(probing)}
    for exercise, exercise_cases in cases:
        for case in exercise_cases:
            for function in (case.probe.function, case.probe.prepare):
                if function is not None and function.__module__ not in modules:
                    modules[function.__module__] = inspect.getsource(
                        sys.modules[function.__module__]
                    )
            jobs.append(
                {
                    "function_name": exercise.function_name,
                    "probe": Probe.key_of(case.probe.function),
                    "prepare": Probe.key_of(case.probe.prepare),
                    "arguments": probing.encode(case.probe.arguments),
                    "time_limit": CASE_TIME_LIMIT_SECONDS,
                }
            )
    results_path = folder / f"outcomes-{secrets.token_hex(16)}.json"
    return {"modules": modules, "jobs": jobs, "cwd": str(folder), "results_path": str(results_path)}


def _run_probes(
    client: _GradingClient, cases: list, limits: Limits, folder: Path
) -> tuple[list[dict] | None, str]:
    """Run every case's probe in the submission's kernel; read their outcomes from a file.

    The kernel gets the probes as source (run there in fresh namespaces, so patches to the
    installed grading code do not apply) and each case's inputs; it sends back only data.
    ``folder`` is fresh (made after the learner's code ran) and the file name is random, so the
    learner's code could not have prepared the outcomes. Returns ``(outcomes, "")``, or
    ``(None, why)`` when none came back.
    """
    payload = _probe_payload(cases, folder)
    code = (  # nothing imported from disk: see _load_grading_code
        "__course_grader = {'__name__': '_course_grader_probing'}\n"
        f"exec(compile(__import__('json').loads({json.dumps(payload['modules'][probing.__name__])!r}), "
        "'<course-grader:probing>', 'exec'), __course_grader)\n"
        "__course_grader['grade_in_kernel'](globals(), "
        f"__import__('json').loads({json.dumps(payload)!r}))\n"
        "del __course_grader"
    )
    cell = nbformat.v4.new_code_cell(code)
    client.nb.cells.append(cell)  # nbclient stores outputs by the cell's index in the notebook
    client.output_bytes = 0  # the grading cell's own output is not the learner's
    client.timeout_func = lambda cell: limits.cell_timeout + 60
    try:
        client.execute_cell(cell, len(client.nb.cells) - 1)
    except CellTimeoutError:
        return None, f"the tests ran past {limits.cell_timeout + 60:g} s"
    except DeadKernelError:
        return None, "the kernel died while the tests ran"
    results_path = Path(payload["results_path"])
    if results_path.exists() and results_path.stat().st_size <= _MAX_OUTCOME_BYTES:
        try:
            outcomes = json.loads(results_path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            return None, "the tests' results were unreadable"
        if isinstance(outcomes, list) and len(outcomes) == len(payload["jobs"]):
            return outcomes, ""
        return None, "the tests' results did not match the tests"
    if results_path.exists():
        return None, "the tests' results were too large"
    errors = [out for out in cell.get("outputs", []) if out.get("output_type") == "error"]
    if errors:
        return None, f"the tests could not run: {errors[0].get('ename')}: {errors[0].get('evalue')}"
    return None, "the tests wrote no results"


def _judge(cases: list[tuple[Exercise, list[Case]]], outcomes: list[dict]) -> list[dict]:
    """Judge the kernel's outcomes here, in the grader's process: one result per exercise."""
    results, start = [], 0
    for exercise, exercise_cases in cases:
        mine = outcomes[start : start + len(exercise_cases)]
        start += len(exercise_cases)
        results.append(asdict(judge_exercise(exercise, exercise_cases, mine)))
    return results


class _GradingClient(NotebookClient):
    """nbclient that drops output past a byte limit (so a print loop cannot exhaust memory)."""

    def __init__(self, *args, output_limit: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.output_limit = output_limit
        self.output_bytes = 0
        self.output_exceeded = False

    def output(self, outs, msg, display_id, cell_index):
        content = msg.get("content", {})
        self.output_bytes += len(content.get("text", "")) + len(json.dumps(content.get("data", {})))
        if self.output_bytes > self.output_limit:
            self.output_exceeded = True
            return None
        return super().output(outs, msg, display_id, cell_index)

    def interrupt_until_idle(self, attempts: int = 3, wait: float = 10.0) -> bool:
        """Interrupt the kernel until a trivial cell runs again; False if it never does."""
        from jupyter_core.utils import run_sync

        for _ in range(attempts):
            run_sync(self.km.interrupt_kernel)()
            probe = nbformat.v4.new_code_cell("pass")
            self.nb.cells.append(probe)
            saved, self.timeout_func = self.timeout_func, lambda cell: wait
            try:
                self.execute_cell(probe, len(self.nb.cells) - 1)
                return True
            except CellTimeoutError:
                continue
            finally:
                self.timeout_func = saved
                self.nb.cells.pop()  # the probe is always the last cell
        return False


def grade_batch(
    paths: list[Path], *, jobs: int = 2, limits: Limits = Limits(), assignment: str | None = None
) -> list[Grade]:
    """Grade every submission (in parallel processes); mark which one counts per student.

    Two submissions of one student: both are graded and listed; the one modified last counts
    (``counted`` is False for the others).
    """
    hidden = load_hidden_tests()
    submissions = expand_submissions(paths)
    if jobs <= 1:
        grades = [grade_submission(p, limits, assignment, hidden) for p in submissions]
    else:
        with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
            grades = list(
                pool.map(
                    grade_submission,
                    submissions,
                    [limits] * len(submissions),
                    [assignment] * len(submissions),
                    [hidden] * len(submissions),
                )
            )
    _mark_counted(grades, submissions)
    return grades


def expand_submissions(paths: list[Path]) -> list[Path]:
    """Files as given; folders expand to every visible file inside (not only .ipynb)."""
    found = []
    for path in map(Path, paths):
        if path.is_dir():
            found += sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
        else:
            found.append(path)
    return found


def _mark_counted(grades: list[Grade], submissions: list[Path]) -> None:
    keys = [(path.stat().st_mtime if path.exists() else 0.0, path.name) for path in submissions]
    latest: dict[str, tuple[float, str]] = {}
    for grade, key in zip(grades, keys, strict=True):
        latest[grade.student] = max(key, latest.get(grade.student, key))
    for grade, key in zip(grades, keys, strict=True):
        grade.counted = key == latest[grade.student]


def write_gradebook(grades: list[Grade], out: Path) -> None:
    """CSV: student, submission, counted, status, one column per exercise, total, max, seconds, detail."""
    exercise_ids = list(dict.fromkeys(eid for grade in grades for eid in grade.points))
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(
            [
                "student",
                "submission",
                "counted",
                "status",
                *exercise_ids,
                "total",
                "max_points",
                "seconds",
                "detail",
            ]
        )
        for grade in grades:
            points = [grade.points.get(eid, "") for eid in exercise_ids]
            writer.writerow(
                [
                    grade.student,
                    grade.submission,
                    "yes" if grade.counted else "no",
                    grade.status,
                    *points,
                    grade.total,
                    grade.max_points,
                    grade.seconds,
                    grade.detail,
                ]
            )


def feedback_markdown(grade: Grade) -> str:
    """The feedback file a student receives."""
    lines = [
        f"# Feedback for {grade.student}",
        "",
        f"Submission: `{grade.submission}`  ",
        f"Status: **{grade.status}**" + (f" ({grade.detail})" if grade.detail else "") + "  ",
        f"Points: **{grade.total} / {grade.max_points:g}**",
    ]
    if not grade.counted:
        lines.append("\n*A later submission of yours counts instead of this one.*")
    if grade.cell_errors:
        lines += [
            "",
            "## Cells that raised an error",
            *[f"- {error}" for error in grade.cell_errors],
        ]
    for result in grade.results:
        lines += [
            "",
            f"## {result['exercise_id']}: {result['title']}",
            f"{result['earned']:g} / {result['points']:g} points, {result['status']}",
        ]
        for case in result["cases"]:
            mark = "passed" if case["status"] == "passed" else case["status"]
            lines.append(f"- {case['description']}: {mark}")
            for label in ("expected", "got", "hint"):
                if case[label] and case["status"] != "passed":
                    lines.append(f"  - {label}: {case[label]}")
    return "\n".join(lines) + "\n"


def write_feedback(grades: list[Grade], folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for grade in grades:
        (folder / f"{Path(grade.submission).stem}.md").write_text(
            feedback_markdown(grade), encoding="utf-8"
        )
