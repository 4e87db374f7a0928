"""How the bundled backbone of chapter 5 is made: what ``course pretrain`` runs.

``course_lib/weights/small_resnet_glyphs.safetensors`` is SmallResNet pretrained on the
course's procedural glyphs. Rebuilding it from its seed gives the same bytes, which
``course pretrain --check`` confirms; its SHA-256 is ``course_lib.transfer.BUNDLED_SHA256``.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from course_lib.glyphs import GLYPH_CLASSES, glyph_dataset
from course_lib.train import LearningRateSchedule, evaluate, fit
from course_lib.transfer import BUNDLED_WEIGHTS, SmallResNet

__all__ = ["pretrain"]


def pretrain(
    path: str | os.PathLike = BUNDLED_WEIGHTS,
    *,
    seed: int = 0,
    epochs: int = 8,
    per_class: int = 24,
    classes: int = GLYPH_CLASSES,
    progress: bool = True,
) -> dict:
    """Pretrain SmallResNet on the glyph classes and save it as safetensors; what ``course pretrain`` runs.

    ``per_class`` images of each of ``classes`` glyph classes (seeded), AdamW with a one-cycle
    learning rate (peak 3e-3), batch 128. It runs on one thread: with the same seed and
    library versions the file comes out byte for byte the same. Returns the file's SHA-256,
    the glyph validation accuracy and the seconds it took.
    """
    started, threads = time.perf_counter(), torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(seed)
        train = glyph_dataset(per_class, classes=classes, seed=seed)
        validation = glyph_dataset(2, classes=classes, seed=seed + 1)
        model = SmallResNet(num_classes=classes)
        optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
        steps = epochs * -(-len(train) // 128)
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, total_steps=steps)
        fit(
            model,
            train,
            optimizer=optimizer,
            loss_fn=nn.CrossEntropyLoss(),
            epochs=epochs,
            batch_size=128,
            seed=seed,
            progress=progress,
            callbacks=[LearningRateSchedule(schedule, interval="step")],
        )
        accuracy = evaluate(model, validation)["accuracy"]
    finally:
        torch.set_num_threads(threads)
    about = {
        "source": f"{classes} glyph classes x {per_class} images (course_lib.glyphs)",
        "command": f"course pretrain --seed {seed} --epochs {epochs}",
        "glyph_validation_accuracy": f"{accuracy:.4f}",
    }
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    # one metadata entry: safetensors writes several in an arbitrary order, and the bytes must not vary
    metadata = {"course_lib": json.dumps(about, sort_keys=True)}
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path), metadata)
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return {
        "sha256": digest,
        "glyph_validation_accuracy": accuracy,
        "seconds": time.perf_counter() - started,
    }
