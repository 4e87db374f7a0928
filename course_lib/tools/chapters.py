"""The course's chapters: one notebook each, in order, with a time estimate."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


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
        15,
        "How the course works, a check of your set-up, a first widget.",
    ),
    Chapter(
        "01",
        "gradient_descent",
        "Gradient descent",
        40,
        "Gradient descent from scratch; learning rates; ill-conditioning; stochastic vs full-batch.",
    ),
    Chapter(
        "02",
        "optimizers",
        "Optimizers",
        60,
        "Momentum, Nesterov, conjugate gradient, Adagrad, RMSprop, Adadelta, Adam, AdamW, "
        "Adamax, NAdam: built from scratch, checked against torch.optim.",
    ),
    Chapter(
        "03",
        "training_a_network",
        "Training a network",
        50,
        "The training loop, loss and evaluation; a bug hunt; learning rate, activation, "
        "depth and width.",
    ),
    Chapter(
        "04",
        "generalization",
        "Generalization",
        50,
        "Overfitting; data augmentation, dropout, weight decay, early stopping, schedules.",
    ),
    Chapter(
        "05",
        "transfer_learning",
        "Feature extraction vs fine-tuning",
        60,
        "A pretrained ResNet, frozen or fine-tuned; the three claims of transfer learning, measured.",
    ),
    Chapter(
        "06",
        "deployment_hardening",
        "Deployment hardening",
        50,
        "Safe loading, signing, encryption, a model registry, input guards, OOD, attacks, export.",
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
