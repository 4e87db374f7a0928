"""Comparing a notebook cell's fresh outputs with its stored ones, on a machine that computes
floats differently from the one that stored them.

torch, MKL and oneDNN pick their vector code by CPU, so another machine's last bits differ,
and training turns last bits into visible differences. There the course asks that outputs
keep their *structure*, not their bytes:

* the same kinds of output (stdout, an image, an HTML table...), as many of each;
* text equal once each number is compared with a tolerance: every word, every line, and
  how many numbers there are, must match exactly;
* images of the same size, close in content.

The claims themselves are guarded by the asserts in the notebooks, which run on every
machine, and staleness by ``course_lib.tools.provenance``, which is exact everywhere.

Tolerances, measured: refreshing every notebook on this machine's default (AVX-512) code path
and on the AVX2 one (``ATEN_CPU_CAPABILITY=avx2 MKL_CBWR=AVX2 ONEDNN_MAX_CPU_ISA=AVX2``), the
printed numbers moved by at most ``MEASURED_LARGEST_RELATIVE_CHANGE`` beyond their last printed
digit (a single-seed training result), and the plots' ink by at most ``MEASURED_LARGEST_MOVED_INK``
(loss curves near the edge of stability). The tolerances leave twice that room for CPUs not
measured. They are wide on purpose: they check that a notebook says the same thing, not its
last digits. They still fail a changed word, a number that appears or disappears, a NaN, an
order of magnitude, a sign flip larger than a few printed units, an image of another size,
and a plot whose ink is mostly elsewhere.
"""

from __future__ import annotations

import base64
import io
import math
import re
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

RELATIVE_TOLERANCE = 0.5
MEASURED_LARGEST_RELATIVE_CHANGE = 0.25
# Printed units of slack, on top of the relative tolerance: a difference of two accuracies,
# printed as -0.002 on one machine, may print as -0.004 on another.
PRINTED_UNITS = 3
# Images: the share of ink that may move by more than IMAGE_BLOCK pixels (see moved_ink).
IMAGE_BLOCK = 4
IMAGE_TOLERANCE = 0.5
MEASURED_LARGEST_MOVED_INK = 0.26

_NUMBER = re.compile(
    r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|[-+]?\b(?:nan|inf)\b", re.IGNORECASE
)
_SPACES = re.compile(r"[ \t]+")
_PNG = "image/png"
# What nbval itself leaves out of a comparison (nbval.plugin.IPyNbFile.skip_compare).
_NOT_COMPARED = {
    "metadata",
    "traceback",
    "prompt_number",
    "output_type",
    "name",
    "execution_count",
    "application/vnd.jupyter.widget-view+json",
}


@dataclass(frozen=True)
class Number:
    """A number as printed: its value and the size of one unit in its last printed digit."""

    value: float
    quantum: float

    @classmethod
    def parse(cls, text: str) -> Number:
        value = float(text)
        mantissa, _, exponent = text.lower().partition("e")
        decimals = len(mantissa.partition(".")[2])
        quantum = 10.0 ** (int(exponent or 0) - decimals)
        return cls(value, quantum)


def numbers_close(stored: Number, fresh: Number, rtol: float = RELATIVE_TOLERANCE) -> bool:
    """|stored - fresh| <= rtol * max(|stored|, |fresh|) + PRINTED_UNITS * the coarser quantum.

    The quantum (one unit in the last printed digit) is there because printing rounds, and
    because small differences of large numbers print near zero, where a relative tolerance
    alone means nothing.
    """
    a, b = stored.value, fresh.value
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    if math.isinf(a) or math.isinf(b):
        return a == b
    allowed = rtol * max(abs(a), abs(b)) + PRINTED_UNITS * max(stored.quantum, fresh.quantum)
    return abs(a - b) <= allowed


def split_numbers(text: str) -> tuple[list[str], list[Number]]:
    """The words between numbers (spaces runs made one space), and the numbers."""
    words, numbers, start = [], [], 0
    for match in _NUMBER.finditer(text):
        words.append(_SPACES.sub(" ", text[start : match.start()]))
        numbers.append(Number.parse(match.group()))
        start = match.end()
    words.append(_SPACES.sub(" ", text[start:]))
    return words, numbers


def compare_text(stored: str, fresh: str, rtol: float = RELATIVE_TOLERANCE) -> str | None:
    """None when the texts match with numbers compared by tolerance, else what differs."""
    stored_words, stored_numbers = split_numbers(stored)
    fresh_words, fresh_numbers = split_numbers(fresh)
    if len(stored_numbers) != len(fresh_numbers):
        return f"{len(stored_numbers)} numbers stored, {len(fresh_numbers)} now"
    for old, new in zip(stored_words, fresh_words, strict=True):
        if old != new:
            return f"the text differs: {old.strip()!r} stored, {new.strip()!r} now"
    for index, (old, new) in enumerate(zip(stored_numbers, fresh_numbers, strict=True)):
        if not numbers_close(old, new, rtol):
            where = stored_words[index][-30:].strip()
            return (
                f"number #{index + 1} (after {where!r}) is {new.value:g} now, {old.value:g} "
                f"stored: more than {rtol:.0%} apart"
            )
    return None


def moved_ink(stored: np.ndarray, fresh: np.ndarray, block: int = IMAGE_BLOCK) -> float:
    """The share of a plot's ink that moved by more than about ``block`` pixels.

    Ink is darkness (1 - grey level), averaged over ``block`` x ``block`` squares so that a
    curve drawn a pixel or two away lands in the same squares. 0 means the same picture, 1
    that no ink is where it was.
    """
    a, b = _ink_in_blocks(stored, block), _ink_in_blocks(fresh, block)
    total = max(a.sum(), b.sum())
    return float(np.abs(a - b).sum() / total) if total > 0 else 0.0


def compare_png(stored_base64: str, fresh_base64: str) -> str | None:
    """None when two PNGs have the same size and close content, else what differs."""
    stored, fresh = decode_png(stored_base64), decode_png(fresh_base64)
    if stored.shape != fresh.shape:
        return f"the image is {_size(fresh)} now, {_size(stored)} stored"
    moved = moved_ink(stored, fresh)
    if moved > IMAGE_TOLERANCE:
        return f"the image changed: {moved:.0%} of its ink moved (tolerance {IMAGE_TOLERANCE:.0%})"
    return None


def compare_outputs(
    stored: Iterable[dict], fresh: Iterable[dict], sanitize: Callable[[str], str] = str
) -> list[str]:
    """What differs between a cell's stored and fresh outputs, compared with tolerance.

    Both are lists of nbformat outputs, streams already coalesced (as nbval does).
    ``sanitize`` is applied to every text first (nbval's sanitize patterns). Returns one
    sentence per problem; an empty list means the outputs match.
    """
    stored_values, fresh_values = _by_kind(stored, sanitize), _by_kind(fresh, sanitize)
    if stored_values.keys() != fresh_values.keys():
        return [f"output kinds differ: {sorted(stored_values)} stored, {sorted(fresh_values)} now"]
    problems = []
    for kind, old_values in stored_values.items():
        new_values = fresh_values[kind]
        if len(old_values) != len(new_values):
            problems.append(f"{kind}: {len(old_values)} stored, {len(new_values)} now")
            continue
        for number, (old, new) in enumerate(zip(old_values, new_values, strict=True), 1):
            problem = _compare_value(kind, old, new)
            if problem:
                problems.append(f"{kind} #{number}: {problem}")
    return problems


# --- internals ---------------------------------------------------------------------------------


def _by_kind(outputs: Iterable[dict], sanitize: Callable[[str], str]) -> dict[str, list]:
    """Outputs flattened as nbval flattens them: stdout, stderr, each MIME type, ename..."""
    values: dict[str, list] = defaultdict(list)
    for output in outputs:
        if output.get("output_type") == "stream":
            values[output["name"]].append(sanitize(output["text"]))
            continue
        for key, value in output.items():
            if key == "data":
                for mime, content in value.items():
                    if mime not in _NOT_COMPARED:
                        values[mime].append(
                            content if mime == _PNG else _sanitized(content, sanitize)
                        )
            elif key not in _NOT_COMPARED:
                values[key].append(_sanitized(value, sanitize))
    return dict(values)


def _sanitized(value, sanitize: Callable[[str], str]):
    if isinstance(value, list):
        value = "".join(value)
    return sanitize(value) if isinstance(value, str) else value


def _compare_value(kind: str, stored, fresh) -> str | None:
    if kind == _PNG:
        return compare_png(_joined(stored), _joined(fresh))
    if isinstance(stored, str) and isinstance(fresh, str):
        return compare_text(stored, fresh)
    return None if stored == fresh else f"{stored!r} stored, {fresh!r} now"


def _joined(value) -> str:
    return "".join(value) if isinstance(value, list) else value


def decode_png(encoded: str) -> np.ndarray:
    """An image's pixels as floats in [0, 1], shape (height, width, channels)."""
    from matplotlib import image

    pixels = image.imread(io.BytesIO(base64.b64decode(encoded)), format="png")
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    return pixels.astype(np.float32)


def _ink_in_blocks(pixels: np.ndarray, block: int) -> np.ndarray:
    """Mean darkness per block x block square (a transparent pixel counts as background)."""
    grey = pixels[..., :3].mean(axis=-1)
    if pixels.shape[-1] == 4:
        grey = 1 - pixels[..., 3] * (1 - grey)
    ink = 1 - grey
    height, width = (ink.shape[0] // block) * block, (ink.shape[1] // block) * block
    squares = ink[:height, :width].reshape(height // block, block, width // block, block)
    return squares.mean(axis=(1, 3))


def _size(pixels: np.ndarray) -> str:
    return f"{pixels.shape[1]}x{pixels.shape[0]} pixels"
