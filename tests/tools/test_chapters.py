"""Chapter times: estimated from each notebook's content, stated the same everywhere."""

import re
from pathlib import Path

import nbformat
import pytest

from course_lib.tools.chapters import (
    CHAPTERS,
    ReadingEstimate,
    reading_estimate,
    stated_minutes,
)

ROOT = Path(__file__).resolve().parents[2]
# A stated time may round up and leave room to experiment, but not hide how long a chapter is.
MOST_MINUTES_ABOVE_ESTIMATE = 20


def write_notebook(path: Path, cells) -> Path:
    notebook = nbformat.v4.new_notebook(cells=cells)
    nbformat.write(notebook, path)
    return path


def test_estimate_counts_prose_code_figures_and_widgets(tmp_path):
    figure = nbformat.v4.new_output(
        "display_data", data={"image/png": "iVBO", "text/plain": "<Figure>"}
    )
    widget = nbformat.v4.new_output(
        "display_data", data={"application/vnd.jupyter.widget-view+json": {"model_id": "x"}}
    )
    code = nbformat.v4.new_code_cell("# a comment\n\nx = 1\ny = x + 1\n", outputs=[figure, widget])
    path = write_notebook(
        tmp_path / "n.ipynb",
        [nbformat.v4.new_markdown_cell("**Time:** about 25 minutes. Three more words"), code],
    )
    estimate = reading_estimate(path)
    assert estimate == ReadingEstimate(prose_words=7, code_lines=2, figures=1, widgets=1)
    assert estimate.minutes == pytest.approx(7 / 150 + 2 / 8 + 1 + 3)
    assert estimate.rounded_minutes == 5
    assert stated_minutes(path) == 25


def test_a_notebook_without_a_stated_time_says_none(tmp_path):
    path = write_notebook(tmp_path / "n.ipynb", [nbformat.v4.new_markdown_cell("# Title")])
    assert stated_minutes(path) is None


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda c: c.number)
def test_each_chapter_states_an_honest_time(chapter):
    notebook = ROOT / "notebooks" / chapter.filename
    estimate = reading_estimate(notebook)
    stated = stated_minutes(notebook)
    assert stated == chapter.minutes, (
        f"{notebook.name} states {stated} minutes in its first cell, the chapter list "
        f"(course_lib/tools/chapters.py) {chapter.minutes}: make them agree"
    )
    assert (
        estimate.rounded_minutes
        <= chapter.minutes
        <= estimate.rounded_minutes + MOST_MINUTES_ABOVE_ESTIMATE
    ), (
        f"chapter {chapter.number} states {chapter.minutes} minutes; its content takes about "
        f"{estimate.minutes:.0f} ({estimate}): state {estimate.rounded_minutes} or a little more"
    )


def test_the_readme_states_the_same_times():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for chapter in CHAPTERS:
        row = re.search(rf"^\| {chapter.number} \|.*\| (\d+) min \|", readme, flags=re.MULTILINE)
        assert row, f"README.md has no table row for chapter {chapter.number}"
        assert int(row.group(1)) == chapter.minutes, (
            f"README.md says chapter {chapter.number} takes {row.group(1)} min; "
            f"course_lib/tools/chapters.py says {chapter.minutes}"
        )
