"""`course grade` on one batch holding every kind of submission the issue lists.

One batch run (module fixture) grades all of them in parallel; each test checks one row.
"""

import csv
import json
import os
import sys
import time
from pathlib import Path

import nbformat
import pytest

from course_lib.grading.batch import (
    Limits,
    RowStatus,
    feedback_markdown,
    grade_batch,
    student_id,
    write_gradebook,
)
from course_lib.grading.exercise_index import find_exercise
from course_lib.tools.assign import exercise_notebook

ROOT = Path(__file__).resolve().parents[2]
CH1, CH2 = "01_gradient_descent", "02_optimizers"


def full_points(name: str) -> float:
    """What a notebook's exercises are worth in all."""
    from course_lib.grading.exercise_index import NOTEBOOK_EXERCISES

    return sum(exercise.points for exercise in NOTEBOOK_EXERCISES[name])


def handed_out(grade) -> bool:
    """Every exercise is as handed out: stubs not attempted, debug exercises' broken code failing."""
    from course_lib.grading.exercise_index import EXERCISES

    return grade.total == 0 and all(
        result["status"]
        == ("failed" if EXERCISES[result["exercise_id"]].kind == "debug" else "not attempted")
        for result in grade.results
    )


def solved(name: str) -> nbformat.NotebookNode:
    """A submission with every exercise solved: the solution, tagged as the exercise notebook."""
    notebook = nbformat.read(ROOT / "solutions" / f"{name}.ipynb", as_version=4)
    tagged = exercise_notebook(notebook, name)  # stubs the solutions...
    for cell, source in zip(tagged.cells, notebook.cells, strict=True):
        cell.source = source.source  # ...so put the solution code back
    return tagged


def untouched(name: str) -> nbformat.NotebookNode:
    return nbformat.read(ROOT / "exercises" / f"{name}.ipynb", as_version=4)


def with_cell(
    notebook: nbformat.NotebookNode, source: str, position: int = 1
) -> nbformat.NotebookNode:
    notebook.cells.insert(position, nbformat.v4.new_code_cell(source))
    return notebook


def index_after(notebook: nbformat.NotebookNode, text: str) -> int:
    """The position just after the first cell whose source contains text."""
    return 1 + next(i for i, cell in enumerate(notebook.cells) if text in cell.source)


def replaced(notebook: nbformat.NotebookNode, old: str, new: str) -> nbformat.NotebookNode:
    for cell in notebook.cells:
        cell.source = cell.source.replace(old, new)
    return notebook


def escaping_processes(pid_folder: Path) -> dict[str, nbformat.NotebookNode]:
    """Submissions that start a process the kernel's shutdown would not stop; each writes its pid."""
    attached = (
        "import subprocess\n"
        "sleeper = subprocess.Popen(['sleep', '300'], start_new_session=True)\n"
        f"open({str(pid_folder / 'attached')!r}, 'w').write(str(sleeper.pid))"
    )
    orphaned = (  # bash exits at once: the sleeper is an orphan in a session of its own
        "import subprocess\n"
        f"subprocess.run(['bash', '-c', 'setsid sleep 300 & echo $! > {pid_folder / 'orphaned'}'])"
    )
    return {
        "newsession__01.ipynb": with_cell(solved(CH1), attached),
        "daemon__01.ipynb": with_cell(solved(CH1), orphaned),
    }


# Replaces what decides a grade in the kernel's copy of the grading package: every comparison
# matches, every probe reports an answer, every exercise earns full points, every check passes.
PATCH_THE_GRADER = """
import os
import course_lib.grading as grading
from course_lib.grading import exercise_index, probing, runner, spec


def full_marks(exercise, cases, outcomes=None, *args, **kwargs):
    return runner.ExerciseResult(
        exercise.id, exercise.title, exercise.points, exercise.points, runner.Status.PASSED
    )


spec.close = lambda *args, **kwargs: True
probing.run_probe = lambda *args, **kwargs: {"status": "value", "value": None}
probing.encode = lambda value: None
probing.grade_in_kernel = lambda namespace, payload: None
runner.judge_exercise = full_marks
runner.run_exercise = full_marks
grading.run_exercise = full_marks
for exercise in exercise_index.EXERCISES.values():
    object.__setattr__(exercise, "points", 1000)
assert "COURSE_HIDDEN_TESTS" not in os.environ, "the kernel was told where hidden cases live"
"""


def build_submissions(folder: Path, pid_folder: Path) -> dict[str, Path]:
    notebooks = {
        **escaping_processes(pid_folder),
        "patcher__01.ipynb": with_cell(untouched(CH1), PATCH_THE_GRADER, position=3),
        "patchedsolved__01.ipynb": with_cell(solved(CH1), PATCH_THE_GRADER, position=3),
        "full1__01.ipynb": solved(CH1),
        "full2__02.ipynb": solved(CH2),
        "untouched__01.ipynb": untouched(CH1),
        "wrong__01.ipynb": replaced(solved(CH1), "return w - lr * grad", "return w + lr * grad"),
        "importerror__01.ipynb": replaced(
            solved(CH1), "import torch", "import not_a_real_module\nimport torch"
        ),
        "endless__01.ipynb": with_cell(
            solved(CH1),
            "while True:\n    pass",
            position=index_after(solved(CH1), "def gd_step"),
        ),
        "exits__01.ipynb": with_cell(solved(CH1), "import os\nos._exit(1)", position=3),
        "printer__01.ipynb": with_cell(
            solved(CH1), "for _ in range(300):\n    print('x' * 1_000_000)"
        ),
        "deleter__01.ipynb": with_cell(
            solved(CH1),
            "import pathlib, shutil\nfor folder in (pathlib.Path('.'), pathlib.Path('..')):\n"
            "    for p in folder.iterdir():\n"
            "        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink()",
        ),
        "otherchapter__02.ipynb": solved(CH2),
        "twice__first.ipynb": untouched(CH1),
        "twice__second.ipynb": solved(CH1),
    }
    paths = {}
    for file_name, notebook in notebooks.items():
        paths[file_name] = folder / file_name
        nbformat.write(notebook, paths[file_name])
    (folder / "malformed__01.ipynb").write_text('{"cells": [ {"cell_type": "code", ')
    (folder / "notanotebook__01.txt").write_text("my answers are 1, 2 and 3")
    (folder / "image__01.ipynb").write_bytes(bytes(range(256)) * 10)
    os.utime(paths["twice__first.ipynb"], (time.time() - 100, time.time() - 100))
    return paths


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    folder = tmp_path_factory.mktemp("submissions")
    pid_folder = tmp_path_factory.mktemp("pids")
    build_submissions(folder, pid_folder)
    limits = Limits(cell_timeout=10, wall_limit=90, output_bytes=5_000_000)
    # an instructor's hidden cases, named by the environment: the kernels must not see it
    hidden_file = ROOT / "course_lib/grading/data/hidden_cases.json"
    saved = os.environ.get("COURSE_HIDDEN_TESTS")
    os.environ["COURSE_HIDDEN_TESTS"] = str(hidden_file)
    started = time.monotonic()
    # Two assignments in one folder: grade chapter 1 with --assignment, chapter 2 on its own.
    chapter1 = [p for p in folder.iterdir() if "__02" not in p.name]
    grades = grade_batch(chapter1, jobs=2, limits=limits, assignment=CH1)
    grades += grade_batch([folder / "full2__02.ipynb"], jobs=1, limits=limits)
    grades += grade_batch(
        [folder / "otherchapter__02.ipynb"], jobs=1, limits=limits, assignment=CH1
    )
    seconds = time.monotonic() - started
    if saved is None:
        os.environ.pop("COURSE_HIDDEN_TESTS")
    else:
        os.environ["COURSE_HIDDEN_TESTS"] = saved
    out = tmp_path_factory.mktemp("out") / "grades.csv"
    write_gradebook(grades, out)
    print(f"\n{len(grades)} submissions graded in {seconds:.1f} s")
    print(out.read_text())
    return {grade.submission: grade for grade in grades}, out, folder, pid_folder


def row(batch, name):
    return batch[0][name]


def test_solutions_score_full_points(batch):
    for name, maximum in (
        ("full1__01.ipynb", full_points(CH1)),
        ("full2__02.ipynb", full_points(CH2)),
    ):
        grade = row(batch, name)
        assert grade.status == RowStatus.OK, grade.detail
        assert grade.total == grade.max_points == maximum


def test_untouched_exercise_scores_zero_as_not_attempted(batch):
    grade = row(batch, "untouched__01.ipynb")
    assert grade.status == RowStatus.OK and grade.total == 0
    assert handed_out(grade), grade.results
    assert "not attempted" in feedback_markdown(grade)


def test_patching_the_grading_package_in_the_kernel_earns_nothing(batch):
    patched, plain = row(batch, "patcher__01.ipynb"), row(batch, "untouched__01.ipynb")
    assert patched.status == RowStatus.OK, patched.cell_errors or patched.detail
    assert patched.total == plain.total == 0
    assert patched.max_points == plain.max_points
    assert handed_out(patched), patched.results


def test_a_solved_notebook_that_patches_the_grader_is_graded_as_solved(batch):
    grade = row(batch, "patchedsolved__01.ipynb")
    assert grade.status == RowStatus.OK, grade.cell_errors or grade.detail
    assert grade.total == grade.max_points == row(batch, "full1__01.ipynb").total


def test_wrong_answer_loses_that_exercise_with_the_hint_in_feedback(batch):
    grade = row(batch, "wrong__01.ipynb")
    assert grade.status == RowStatus.OK
    assert grade.points["ch1.gd_step"] == 0.0
    assert grade.total == full_points(CH1) - 1
    assert "you stepped *up* the gradient" in feedback_markdown(grade)


def test_hidden_cases_run_in_the_grader_but_not_in_check(batch):
    results = {r["exercise_id"]: r for r in row(batch, "full1__01.ipynb").results}
    hidden = json.loads((ROOT / "course_lib/grading/data/hidden_cases.json").read_text())
    public = find_exercise("ch1.gd_step").public_params
    assert len(results["ch1.gd_step"]["cases"]) == len(public) + len(hidden["ch1.gd_step"]) > 2


def test_exception_at_import_is_reported_and_the_rest_still_graded(batch):
    grade = row(batch, "importerror__01.ipynb")
    assert grade.status == RowStatus.CELL_ERRORS
    assert any("ModuleNotFoundError" in error for error in grade.cell_errors)


def test_endless_loop_times_out_and_what_was_defined_is_graded(batch):
    grade = row(batch, "endless__01.ipynb")
    assert grade.status == RowStatus.TIMEOUT and "time limit" in grade.detail, grade.detail
    assert grade.points["ch1.gd_step"] == 1.0  # defined before the loop


def test_killed_kernel_is_crashed(batch):
    grade = row(batch, "exits__01.ipynb")
    assert grade.status == RowStatus.CRASHED and grade.total == 0


def test_hundreds_of_megabytes_of_output_are_capped(batch):
    grade = row(batch, "printer__01.ipynb")
    assert grade.status == RowStatus.OUTPUT_LIMIT and grade.total == full_points(CH1)


def test_deleting_files_around_it_harms_nobody_else(batch):
    grades, gradebook, folder, _ = batch
    assert grades["deleter__01.ipynb"].status == RowStatus.OK and grades[
        "deleter__01.ipynb"
    ].total == full_points(CH1)
    assert (folder / "full1__01.ipynb").exists() and gradebook.exists()
    assert grades["full1__01.ipynb"].total == full_points(CH1)


@pytest.mark.parametrize(
    "name, words",
    [
        ("malformed__01.ipynb", "malformed JSON"),
        ("notanotebook__01.txt", "malformed JSON"),
        ("image__01.ipynb", "not a readable text file"),
    ],
)
def test_broken_files_are_invalid_with_a_reason(batch, name, words):
    grade = row(batch, name)
    assert grade.status == RowStatus.INVALID and words in grade.detail


def running(pid: int) -> bool:
    """True while ``pid`` runs (a zombie, dead but not yet reaped, does not count)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="subreaper and /proc: Linux")
@pytest.mark.parametrize(
    "name, pid_file", [("newsession__01.ipynb", "attached"), ("daemon__01.ipynb", "orphaned")]
)
def test_no_process_a_submission_starts_outlives_its_grading(batch, name, pid_file):
    grades, _, _, pid_folder = batch
    assert grades[name].status == RowStatus.OK, grades[name].detail
    assert grades[name].total == full_points(CH1)
    pid = int((pid_folder / pid_file).read_text())
    assert not running(pid), f"{name}: process {pid} still runs after grading"


def test_notebook_of_another_chapter_is_refused(batch):
    grade = row(batch, "otherchapter__02.ipynb")
    assert (
        grade.status == RowStatus.WRONG_NOTEBOOK
        and "the assignment is 01_gradient_descent" in grade.detail
    )


def test_two_submissions_of_one_student_both_graded_latest_counts(batch):
    first, second = row(batch, "twice__first.ipynb"), row(batch, "twice__second.ipynb")
    assert first.student == second.student == "twice"
    assert second.counted and not first.counted


def test_gradebook_has_one_row_per_submission(batch):
    grades, gradebook, _, _ = batch
    rows = list(csv.DictReader(gradebook.open()))
    assert len(rows) == len(grades) == 19
    assert {"student", "submission", "counted", "status", "ch1.gd_step", "total"} <= set(rows[0])


def test_student_id_from_file_name():
    assert student_id(Path("alice__01_gradient_descent.ipynb")) == "alice"
    assert student_id(Path("bob.ipynb")) == "bob"


def test_hidden_tests_never_reach_exercises_or_the_public_api():
    import course_lib.grading as grading

    hidden = json.loads((ROOT / "course_lib/grading/data/hidden_cases.json").read_text())
    assert not any("hidden" in name for name in dir(grading))
    for path in (ROOT / "exercises").glob("*.ipynb"):
        text = path.read_text()
        assert "hidden_cases" not in text and "COURSE_HIDDEN_TESTS" not in text
        for cases in hidden.values():
            for case in cases:
                assert json.dumps(case) not in text


@pytest.mark.parametrize(
    "name", ["03_training_a_network", "05_transfer_learning", "06_deployment_hardening"]
)
def test_solution_scores_full_points_with_hidden_cases(tmp_path, name):
    from course_lib.grading.batch import grade_submission

    path = tmp_path / f"carol__{name[:2]}.ipynb"
    nbformat.write(solved(name), path)
    grade = grade_submission(path, Limits(cell_timeout=60, wall_limit=180))
    assert grade.status == RowStatus.OK, grade.detail
    assert grade.total == grade.max_points == full_points(name)
    assert all(len(result["cases"]) >= 2 for result in grade.results)  # public + hidden
