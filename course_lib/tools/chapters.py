"""The course's chapters: one notebook each, in order, with a time estimate.

Each chapter states how long it takes. That number is not a guess: ``reading_estimate``
computes it from what the notebook asks a learner to read, run and look at, at the rates
below, and a test checks that every stated time is at least the estimate.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import nbformat

# Studying, not skimming: well below the ~240 words a minute of silent reading of non-fiction
# (Brysbaert, "How many words do we read per minute?", 2019), because learners stop to think.
PROSE_WORDS_PER_MINUTE = 150
# Reading code to understand it, then running the cell.
CODE_LINES_PER_MINUTE = 8
# Looking at a figure long enough to see what the text says it shows.
MINUTES_PER_FIGURE = 1
# Trying a few settings of a widget.
MINUTES_PER_WIDGET = 3

_STATED_TIME = re.compile(r"\*\*Time:\*\*\s*about\s+(\d+)\s+minutes")
_WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


@dataclass(frozen=True)
class Chapter:
    number: str
    slug: str
    title: str
    minutes: int
    summary: str

    @property
    def filename(self) -> str:
        return f"{self.number}_{self.slug}.ipynb"


CHAPTERS = (
    Chapter(
        "00",
        "start_here",
        "Start here",
        25,
        "How the course works, a check of your set-up, a first widget.",
    ),
    Chapter(
        "01",
        "gradient_descent",
        "Gradient descent",
        40,
        "Gradient descent from scratch; learning rates; ill-conditioning; saddle points; "
        "stochastic vs full-batch.",
    ),
    Chapter(
        "02",
        "optimizers",
        "Optimizers",
        80,
        "Momentum, Nesterov, conjugate gradient, Adagrad, RMSprop, Adadelta, Adam, AdamW, "
        "Adamax, NAdam: built from scratch, checked against torch.optim.",
    ),
    Chapter(
        "03",
        "training_a_network",
        "Training a network",
        95,
        "The training loop, loss and evaluation; a bug hunt; learning rate, activation, "
        "depth and width.",
    ),
    Chapter(
        "04",
        "generalization",
        "Generalization",
        75,
        "Overfitting; data augmentation, dropout, weight decay, early stopping, schedules.",
    ),
    Chapter(
        "05",
        "transfer_learning",
        "Feature extraction vs fine-tuning",
        110,
        "A pretrained ResNet, frozen or fine-tuned; the three claims of transfer learning, measured.",
    ),
    Chapter(
        "06",
        "deployment_hardening",
        "Deployment hardening",
        120,
        "Safe loading, signing, envelope encryption, a model registry, input guards, calibration, "
        "OOD, attacks, a signed export.",
    ),
    Chapter(
        "07",
        "scaling_out",
        "Scaling out",
        45,
        "Data-parallel fine-tuning with torchrun and DDP: equivalence to one process measured, "
        "the cost of an all-reduce, a worker killed and the run resumed.",
    ),
)


def chapter_map(notebook_dir: str | os.PathLike = ".") -> str:
    """A Markdown table of the chapters; those whose notebook exists in ``notebook_dir`` link to it."""
    folder = Path(notebook_dir)
    rows = ["| # | Chapter | Time | What you do |", "|---|---|---|---|"]
    for chapter in CHAPTERS:
        if (folder / chapter.filename).is_file():
            title = f"[{chapter.title}]({chapter.filename})"
        else:
            title = f"{chapter.title} *(being written)*"
        rows.append(f"| {chapter.number} | {title} | {chapter.minutes} min | {chapter.summary} |")
    total = sum(chapter.minutes for chapter in CHAPTERS)
    rows.append(f"| | **Whole course** | **{total // 60} h {total % 60:02d} min** | |")
    return "\n".join(rows)


@dataclass(frozen=True)
class ReadingEstimate:
    """What a notebook asks of a learner, and the minutes that takes at the module's rates.

    minutes = prose_words / 150 + code_lines / 8 + figures * 1 + widgets * 3
    """

    prose_words: int
    code_lines: int
    figures: int
    widgets: int

    @property
    def minutes(self) -> float:
        return (
            self.prose_words / PROSE_WORDS_PER_MINUTE
            + self.code_lines / CODE_LINES_PER_MINUTE
            + self.figures * MINUTES_PER_FIGURE
            + self.widgets * MINUTES_PER_WIDGET
        )

    @property
    def rounded_minutes(self) -> int:
        """The estimate rounded up to the next 5 minutes, as a chapter states it."""
        return 5 * math.ceil(self.minutes / 5)


def _code_lines(source: str) -> int:
    """Lines a learner reads: neither blank nor comment-only."""
    lines = (line.strip() for line in source.splitlines())
    return sum(1 for line in lines if line and not line.startswith("#"))


def reading_estimate(notebook_path: str | os.PathLike) -> ReadingEstimate:
    """Count the prose words, code lines, figures and widgets of a stored notebook."""
    notebook = nbformat.read(notebook_path, as_version=4)
    prose_words = code_lines = figures = widgets = 0
    for cell in notebook.cells:
        if cell.cell_type == "markdown":
            prose_words += len(re.findall(r"\w+", cell.source))
        elif cell.cell_type == "code":
            code_lines += _code_lines(cell.source)
            for output in cell.get("outputs", []):
                data = output.get("data", {})
                figures += "image/png" in data
                widgets += _WIDGET_MIME in data
    return ReadingEstimate(prose_words, code_lines, figures, widgets)


def stated_minutes(notebook_path: str | os.PathLike) -> int | None:
    """The minutes the notebook's first cell states ("**Time:** about N minutes"), or None."""
    notebook = nbformat.read(notebook_path, as_version=4)
    match = _STATED_TIME.search(notebook.cells[0].source) if notebook.cells else None
    return int(match.group(1)) if match else None
