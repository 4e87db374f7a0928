"""``course finetune`` and ``course predict``: chapter 5's recipe on a folder of your own photos.

Every problem a learner can cause (a folder that is not one, a bad file, missing weights, a
wrong key, Ctrl+C) ends in one sentence on stderr and an exit status, never a traceback:

- 0: done;
- 1: the model folder was refused (tampered, unsigned, wrong key), or some photos could not be
  classified (each is listed);
- 2: a usage problem (the folder, a key file, weights that are not on this machine);
- 130: interrupted; the best model so far is in the model folder.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path
from typing import TextIO

EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def finetune(
    data_dir: str | os.PathLike,
    out: str | os.PathLike,
    *,
    backbone: str = "bundled",
    strategy: str = "fine-tune",
    epochs: int | None = None,
    batch_size: int = 16,
    seed: int = 0,
    signing_key_file: str | os.PathLike | None = None,
    progress: bool = True,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Train on ``data_dir``'s photos and write the best model to ``out``; return an exit status.

    ``epochs=None`` takes the backbone's default (``BACKBONE_DEFAULTS``: 15 for the bundled
    backbone, 3 for resnet18).
    """
    stdout, stderr = stdout or sys.stdout, stderr or sys.stderr
    from course_lib.hardening import load_key
    from course_lib.photo_classifier import (
        TrainingConfig,
        class_report,
        save_photo_model,
        train_on_photos,
    )
    from course_lib.photos import PhotoFolderError, scan_photo_folder
    from course_lib.transfer import WeightsUnavailable

    def fail(message: str, status: int = EXIT_USAGE) -> int:
        print(f"course finetune: {message}", file=stderr)
        return status

    try:
        config = TrainingConfig(
            backbone=backbone, strategy=strategy, epochs=epochs, batch_size=batch_size, seed=seed
        )
        key = load_key(signing_key_file) if signing_key_file is not None else None
        folder = scan_photo_folder(data_dir)
    except (PhotoFolderError, ValueError, OSError) as exc:
        return fail(str(exc))
    print(folder.report(), file=stdout)
    out = Path(out)
    saved = []

    def save_best(model, result) -> None:
        saved.append(save_photo_model(out, result, config, signing_key=key))

    try:
        result = train_on_photos(folder, config, on_best=save_best, progress=progress)
    except WeightsUnavailable as exc:
        return fail(str(exc).splitlines()[0])
    for epoch in result.epochs:
        print(
            f"epoch {epoch.epoch}: training loss {epoch.train_loss:.3f}, "
            f"validation accuracy {epoch.validation_accuracy:.1%}",
            file=stdout,
        )
    if not saved:
        return fail(
            "interrupted before the first epoch ended: no model was written", EXIT_INTERRUPTED
        )
    labels = [photo.label for photo in result.validation]
    print(
        f"\nbest: epoch {result.best_epoch}, validation accuracy {result.best_accuracy:.1%} "
        f"on {len(labels)} photos",
        file=stdout,
    )
    print(class_report(result.validation_predictions, labels, folder.classes), file=stdout)
    signed = (
        "signed"
        if key is not None
        else "UNSIGNED: `course predict` refuses it without --allow-unsigned"
    )
    print(f"\nmodel written to {out} ({signed})", file=stdout)
    if result.interrupted:
        return fail(
            f"interrupted; the best model so far (epoch {result.best_epoch}) is in {out}",
            EXIT_INTERRUPTED,
        )
    return EXIT_OK


def predict(
    model_dir: str | os.PathLike,
    images: list[str],
    *,
    verify_key_file: str | os.PathLike | None = None,
    allow_unsigned: bool = False,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Print ``path<TAB>class<TAB>confidence`` per image; return an exit status."""
    stdout, stderr = stdout or sys.stdout, stderr or sys.stderr
    from course_lib.hardening import IntegrityError, load_key
    from course_lib.photo_classifier import PhotoModelError, load_photo_model

    try:
        key = load_key(verify_key_file) if verify_key_file is not None else None
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model = load_photo_model(model_dir, verify_key=key, allow_unsigned=allow_unsigned)
        for warning in caught:
            print(f"course predict: warning: {warning.message}", file=stderr)
    except IntegrityError as exc:
        why = str(exc)
        if verify_key_file is None and not allow_unsigned:
            why = (
                "no key to check its signature with: pass --verify-key KEY_FILE (the key it was "
                "signed with), or --allow-unsigned for a model you trained yourself"
            )
        print(f"course predict: refused {model_dir}: {why}", file=stderr)
        return EXIT_REFUSED
    except (PhotoModelError, ValueError, KeyError, OSError) as exc:
        print(f"course predict: {exc}", file=stderr)
        return EXIT_USAGE
    predictions = model.predict(images)
    for prediction in predictions:
        print(prediction.line(), file=stdout)
    return EXIT_REFUSED if any(p.problem for p in predictions) else EXIT_OK
