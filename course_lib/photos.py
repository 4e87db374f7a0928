"""Your own photos: a folder of class folders, read safely and split fairly.

The layout is torchvision's ``ImageFolder``: one sub-folder per class, named after it::

    my_photos/
      cats/   IMG_0001.jpg  IMG_0002.heic.jpg  ...
      dogs/   ...

:func:`scan_photo_folder` opens every file once, keeps those Pillow can decode completely, and
lists the others with the reason (not an image, truncated, unreadable), so a bad file costs one
line in a report instead of a traceback in the middle of training. :func:`load_photo` turns any
photo into what a network expects: upright (EXIF orientation applied) and RGB (grayscale,
palette, RGBA and CMYK converted; transparency composited on white). :func:`stratified_split`
keeps each class's share the same in training and validation. :class:`PhotoDataset` is a plain
``torch.utils.data.Dataset``, so a ``DataLoader`` batches it, shuffles it and reads it with
worker processes.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch.utils.data import Dataset

__all__ = [
    "PhotoFolderError",
    "Photo",
    "PhotoFolder",
    "scan_photo_folder",
    "load_photo",
    "stratified_split",
    "PhotoDataset",
    "MIN_PHOTOS_PER_CLASS",
    "SAMPLE_CLASSES",
    "SAMPLE_BAD_FILES",
    "write_sample_photos",
]

MIN_PHOTOS_PER_CLASS = 2  # one to train on, one to validate with
# A photo is decoded at no more than this many pixels per side before any transform: a
# 4000x3000 JPEG is then decoded at reduced scale (fast), and never kept whole in memory.
MAX_DECODED_SIDE = 1024


class PhotoFolderError(ValueError):
    """The folder cannot be used as it is; the message says why and what to do, in one sentence."""


@dataclass(frozen=True)
class Photo:
    path: Path
    label: int


@dataclass(frozen=True)
class PhotoFolder:
    """What a scan found: the classes (sorted), the usable photos, and the files skipped."""

    root: Path
    classes: list[str]
    photos: list[Photo]
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        """Usable photos per class."""
        per_label = Counter(photo.label for photo in self.photos)
        return {name: per_label[label] for label, name in enumerate(self.classes)}

    def report(self) -> str:
        """A few lines for a learner: classes with their counts, then every skipped file and why."""
        counts = ", ".join(f"{name} {count}" for name, count in self.counts().items())
        lines = [f"{len(self.photos)} photos in {len(self.classes)} classes ({counts})"]
        if self.skipped:
            lines.append(f"skipped {len(self.skipped)} files:")
            lines += [f"  {path.relative_to(self.root)}: {why}" for path, why in self.skipped]
        return "\n".join(lines)


def scan_photo_folder(root: str | Path) -> PhotoFolder:
    """Find the classes and the usable photos under ``root``; decode each file once to check it.

    Hidden files and folders (names starting with ".") are ignored. Every other file is tried:
    the ones Pillow cannot decode completely are skipped and listed with the reason.

    Raises:
        PhotoFolderError: ``root`` is missing or not a folder, has no class folders, fewer than
            two classes with photos, or a class with fewer than ``MIN_PHOTOS_PER_CLASS`` photos.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise PhotoFolderError(
            f"{root} is not a folder: put your photos in {root}/<class name>/<photo files>"
        )
    class_folders = sorted(p for p in root.iterdir() if p.is_dir() and not _hidden(p))
    if not class_folders:
        raise PhotoFolderError(
            f"{root} has no class folders: make one sub-folder per class, "
            f"e.g. {root}/cats/ and {root}/dogs/, and put the photos in them"
        )
    photos, skipped, classes = [], [], []
    for folder in class_folders:
        usable = []
        for path in sorted(p for p in folder.rglob("*") if p.is_file() and not _hidden(p)):
            problem = photo_problem(path)
            if problem:
                skipped.append((path, problem))
            else:
                usable.append(path)
        if usable:
            photos += [Photo(path, len(classes)) for path in usable]
            classes.append(folder.name)
        else:
            skipped.append((folder, "no usable photos in this class folder"))
    _check_enough(root, classes, photos)
    return PhotoFolder(root, classes, photos, skipped)


def _hidden(path: Path) -> bool:
    return path.name.startswith(".")


def _check_enough(root: Path, classes: list[str], photos: list[Photo]) -> None:
    if not photos:
        raise PhotoFolderError(f"{root} holds no usable photos (see the files skipped)")
    if len(classes) < 2:
        raise PhotoFolderError(
            f"{root} has photos of one class only ({classes[0]!r}): a classifier needs at least "
            "two class folders"
        )
    counts = Counter(photo.label for photo in photos)
    for label, name in enumerate(classes):
        if counts[label] < MIN_PHOTOS_PER_CLASS:
            raise PhotoFolderError(
                f"class {name!r} has {counts[label]} usable photo; each class needs at least "
                f"{MIN_PHOTOS_PER_CLASS} (one to train on, one to validate with)"
            )


def photo_problem(path: Path) -> str:
    """Why ``path`` cannot be used as a photo, or "" when it can (decodes it completely)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                image.draft("RGB", (MAX_DECODED_SIDE, MAX_DECODED_SIDE))
                image.load()  # a truncated file fails here, not at Image.open
    except UnidentifiedImageError:
        return "not an image Pillow can read"
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        return "too many pixels (a decompression bomb?)"
    except OSError as exc:
        return f"damaged or truncated ({exc})"
    except Exception as exc:  # Pillow raises many kinds on malformed files
        return f"unreadable ({type(exc).__name__}: {exc})"
    return ""


def load_photo(path: str | Path, max_side: int = MAX_DECODED_SIDE) -> Image.Image:
    """The photo as an upright RGB image, decoded at most ``max_side`` pixels per side or a little more.

    - EXIF orientation is applied (phones store portrait photos sideways plus a tag);
    - grayscale, palette, 16-bit, CMYK and others are converted to RGB;
    - transparency (RGBA, LA, palette with transparency) is composited on white.
    """
    with Image.open(path) as image:
        image.draft("RGB", (max_side, max_side))  # JPEG: decode at a reduced scale, fast
        image = ImageOps.exif_transpose(image)
        return _to_rgb(image)


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, image).convert("RGB")
    if image.mode.startswith("I;16") or image.mode == "I":
        image = image.point(lambda value: value / 256).convert("L")
    return image.convert("RGB")


def stratified_split(
    photos: Sequence[Photo], validation_fraction: float = 0.2, *, seed: int = 0
) -> tuple[list[Photo], list[Photo]]:
    """Split each class on its own: ``validation_fraction`` of it (at least 1) to validation.

    Every class keeps at least one photo for training. The split depends only on the photos
    and ``seed``: the same folder and seed give the same split on any machine.
    """
    if not 0 < validation_fraction < 1:
        raise ValueError(f"validation_fraction must be between 0 and 1, got {validation_fraction}")
    by_label: dict[int, list[Photo]] = {}
    for photo in sorted(photos, key=lambda p: (p.label, str(p.path))):
        by_label.setdefault(photo.label, []).append(photo)
    generator = torch.Generator().manual_seed(seed)
    train, validation = [], []
    for label in sorted(by_label):
        members = by_label[label]
        if len(members) < MIN_PHOTOS_PER_CLASS:
            raise PhotoFolderError(
                f"class {label} has {len(members)} photo; a split needs at least {MIN_PHOTOS_PER_CLASS}"
            )
        order = torch.randperm(len(members), generator=generator).tolist()
        held_out = min(
            len(members) - 1, max(1, math.floor(len(members) * validation_fraction + 0.5))
        )
        validation += [members[i] for i in order[:held_out]]
        train += [members[i] for i in order[held_out:]]
    return train, validation


class PhotoDataset(Dataset):
    """``(transform(photo), label)`` pairs, read from disk one at a time (a DataLoader batches them)."""

    def __init__(self, photos: Sequence[Photo], transform: Callable[[Image.Image], torch.Tensor]):
        self.photos = list(photos)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.photos)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        photo = self.photos[index]
        return self.transform(load_photo(photo.path)), photo.label

    def labels(self) -> list[int]:
        return [photo.label for photo in self.photos]


# --- a small photo-like set the course generates, so the pipeline runs without your photos -------

SAMPLE_CLASSES = ("ball", "box", "tent")


def write_sample_photos(
    folder: str | Path,
    per_class: int = 24,
    *,
    size: int | tuple[int, int] = 96,
    seed: int = 0,
    bad_files: bool = False,
) -> Path:
    """Write ``per_class`` JPEG photos of each of ``SAMPLE_CLASSES`` into ``folder/<class>/``.

    Each photo is a lit object (a shaded ball, a box, a tent) on a sky-and-ground background,
    at a random place, scale, colour and tilt, with sensor noise: no two alike, and the same
    files for the same seed. 3 x 24 photos at 96 px take about 150 KB.

    ``size`` is the side of every (square) photo, or a range ``(smallest, largest)``: each
    photo's width and height are then drawn from it, as in a folder of photos from several
    cameras.

    ``bad_files=True`` adds two files a real folder often holds and a scan must skip
    (``SAMPLE_BAD_FILES``): a text file, and a JPEG cut off half-way (an interrupted copy).
    """
    import numpy as np
    from PIL import ImageDraw, ImageFilter

    folder = Path(folder)
    rng = np.random.default_rng(seed)
    for name in SAMPLE_CLASSES:
        (folder / name).mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            width, height = _photo_size(rng, size)
            image = _sample_background(rng, width, height)
            draw = ImageDraw.Draw(image)
            _draw_object(draw, name, rng, width, height)
            image = image.filter(ImageFilter.GaussianBlur(0.6))
            pixels = np.asarray(image, dtype=np.float32) + rng.normal(0, 6, (height, width, 3))
            photo = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
            photo.save(folder / name / f"{name}_{index:03d}.jpg", quality=85)
    if bad_files:
        _write_bad_files(folder)
    return folder


# Relative to the folder; what ``write_sample_photos(..., bad_files=True)`` adds.
SAMPLE_BAD_FILES = ("ball/notes.txt", "box/copied_halfway.jpg")


def _write_bad_files(folder: Path) -> None:
    notes, cut = (folder / name for name in SAMPLE_BAD_FILES)
    notes.write_text("shot on the beach, 3 May\n", encoding="utf-8")
    whole = (folder / SAMPLE_CLASSES[1] / f"{SAMPLE_CLASSES[1]}_000.jpg").read_bytes()
    cut.write_bytes(whole[: len(whole) // 2])


def _photo_size(rng, size: int | tuple[int, int]) -> tuple[int, int]:
    """(width, height): ``size`` twice, or each drawn from the range ``size``."""
    if isinstance(size, int):
        return size, size
    smallest, largest = size
    width, height = rng.integers(smallest, largest, endpoint=True, size=2)
    return int(width), int(height)


def _sample_background(rng, width: int, height: int) -> Image.Image:
    import numpy as np

    horizon = int(height * rng.uniform(0.45, 0.75))
    sky = rng.uniform([90, 140, 190], [170, 200, 250])
    ground = rng.uniform([60, 80, 30], [140, 140, 90])
    rows = np.arange(height)[:, None, None]
    shade = 1 - 0.3 * rows / height
    pixels = np.where(rows < horizon, sky * (0.8 + 0.2 * shade), ground * shade)
    return Image.fromarray(np.broadcast_to(pixels, (height, width, 3)).astype(np.uint8))


def _draw_object(draw, name: str, rng, width: int, height: int) -> None:
    import numpy as np

    size = min(width, height)  # the object stays in the photo's central square
    radius = size * rng.uniform(0.16, 0.3)
    cx = width / 2 + size * (rng.uniform(0.3, 0.7) - 0.5)
    cy = height / 2 + size * (rng.uniform(0.35, 0.65) - 0.5)
    color = tuple(int(c) for c in rng.uniform(30, 230, 3))
    dark = tuple(int(c * 0.55) for c in color)
    if name == "ball":
        for shrink in np.linspace(1.0, 0.2, 6):  # shading: lighter towards the top left
            r = radius * shrink
            offset = (1 - shrink) * radius * 0.4
            tone = tuple(int(min(255, c * (0.7 + 0.5 * (1 - shrink)))) for c in color)
            draw.ellipse(
                [cx - r - offset, cy - r - offset, cx + r - offset, cy + r - offset], fill=tone
            )
    elif name == "box":
        angle = rng.uniform(-0.35, 0.35)
        corners = [(-1, -0.8), (1, -0.8), (1, 0.8), (-1, 0.8)]
        points = [_turned(cx, cy, radius * x, radius * y, angle) for x, y in corners]
        draw.polygon(points, fill=color, outline=dark)
        draw.line([points[0], points[1]], fill=dark, width=max(1, size // 40))
    else:  # tent
        angle = rng.uniform(-0.2, 0.2)
        corners = [(0, -1.1), (1.2, 0.8), (-1.2, 0.8)]
        points = [_turned(cx, cy, radius * x, radius * y, angle) for x, y in corners]
        draw.polygon(points, fill=color, outline=dark)
        door = [
            points[0],
            _turned(cx, cy, radius * 0.3, radius * 0.8, angle),
            _turned(cx, cy, -radius * 0.3, radius * 0.8, angle),
        ]
        draw.polygon(door, fill=dark)


def _turned(cx: float, cy: float, x: float, y: float, angle: float) -> tuple[float, float]:
    cos, sin = math.cos(angle), math.sin(angle)
    return cx + x * cos - y * sin, cy + x * sin + y * cos
