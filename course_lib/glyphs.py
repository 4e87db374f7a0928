"""Glyphs: the source task the course's bundled backbone was pretrained on.

A glyph class is one or two random pen strokes (cubic Bezier curves). Every image of a class
draws the same strokes with a little jitter, rotation, shear and scale, centred and scaled to
fill the frame, the way the UCI handwritten digits were normalised. Images are drawn at
16x16 and averaged down to 8x8, which is how the digits were made from 32x32 bitmaps.

Why this source: transfer works when the source task teaches features the target needs.
A thousand stroke classes teach "where are the strokes, which way do they bend, where do
they end", which is what tells digits apart. No digit image is in it (a few glyphs look like
a "1": a stroke is a stroke), so the course's target test images can never have been seen in
pretraining.

What made it work, measured while designing it: the pen's width varies from image to image
(+-50%), as it does between the people who wrote the digits. With one fixed pen width the
pretrained features were no better for digits than raw pixels; many classes (1,000 rather
than 200) added a few points more.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from matplotlib.figure import Figure

from course_lib.data import Split

__all__ = ["glyph_dataset", "glyphs_figure", "GLYPH_CLASSES"]

GLYPH_CLASSES = 1000
_POINTS_PER_STROKE = 24
_PEN_RADIUS = 0.2  # in units of half the frame (varies per image, see below)
_DRAW_SIZE = 16
_STROKES = 2  # at most; the second is drawn for half of the classes
_JITTER = 0.08  # of the control points, per image
_ROTATION = 15  # degrees, either way
_SHEAR = 0.2
_FILL = 1.5  # the longer side of the glyph, in units of half the frame
_PEN_VARIATION = 0.5  # the pen radius varies by +-50% between images


def glyph_dataset(
    per_class: int,
    *,
    classes: int = GLYPH_CLASSES,
    size: int = 16,
    seed: int = 0,
    class_seed: int = 0,
) -> Split:
    """``per_class`` images of each of ``classes`` glyph classes, (N, 1, size, size) in 0..1.

    ``class_seed`` fixes what the classes look like; ``seed`` fixes the images drawn from
    them (so a validation set is ``seed=1`` with the same ``class_seed``). Pixels are
    averaged to 8x8 like the UCI digits, then upscaled bilinearly to ``size``.
    """
    if per_class < 1 or classes < 1:
        raise ValueError(f"per_class and classes must be >= 1, got {per_class} and {classes}")
    # control points (classes, 2, 4, 2), in use (classes, 2)
    strokes = _class_strokes(classes, class_seed)
    generator = torch.Generator().manual_seed(seed)
    targets = torch.arange(classes).repeat_interleave(per_class)
    control_points, in_use = strokes[0][targets], strokes[1][targets]
    control_points = control_points + _JITTER * torch.randn(
        control_points.shape, generator=generator
    )
    points = _bezier_points(control_points)  # (N, 2 strokes, P, 2)
    points = _random_affine(points, generator)
    points = _centre_and_fill(points, in_use)
    radius = _PEN_RADIUS * (
        1 + _PEN_VARIATION * (2 * torch.rand(len(points), generator=generator) - 1)
    )
    images = _render(points, in_use, radius)
    images = F.avg_pool2d(images, _DRAW_SIZE // 8)  # 16x16 -> 8x8, as the UCI digits
    images = images / images.amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-6)
    if size != 8:
        images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
    order = torch.randperm(len(targets), generator=generator)
    return Split(images[order].clamp(0, 1), targets[order])


def _class_strokes(classes: int, class_seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per class: two strokes of 4 control points each, and whether the second one is drawn.

    Drawn for at least GLYPH_CLASSES classes and cut to ``classes``, so that glyph 7 looks
    the same whether 10 or 1,000 classes are asked for.
    """
    drawn = max(classes, GLYPH_CLASSES)
    generator = torch.Generator().manual_seed(10_000 + class_seed)
    control_points = torch.rand((drawn, _STROKES, 4, 2), generator=generator) * 1.6 - 0.8
    extra = torch.rand((drawn, _STROKES - 1), generator=generator) < 0.5
    in_use = torch.cat([torch.ones(drawn, 1, dtype=torch.bool), extra], dim=1)
    return control_points[:classes], in_use[:classes]


def _bezier_points(control_points: torch.Tensor) -> torch.Tensor:
    """Points along cubic Bezier curves: B(t) = (1-t)^3 P0 + 3(1-t)^2 t P1 + 3(1-t) t^2 P2 + t^3 P3."""
    t = torch.linspace(0, 1, _POINTS_PER_STROKE)
    weights = torch.stack([(1 - t) ** 3, 3 * (1 - t) ** 2 * t, 3 * (1 - t) * t**2, t**3], dim=1)
    return torch.einsum("pk,nskd->nspd", weights, control_points)


def _random_affine(points: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Rotate by up to 15 degrees, shear by up to 0.2 and scale by 0.8-1.1, one draw per image."""
    n = len(points)
    angle = (torch.rand(n, generator=generator) * 2 - 1) * math.radians(_ROTATION)
    shear = (torch.rand(n, generator=generator) * 2 - 1) * _SHEAR
    scale = 0.8 + 0.3 * torch.rand(n, generator=generator)
    cos, sin = torch.cos(angle), torch.sin(angle)
    rotation = torch.stack([torch.stack([cos, -sin], 1), torch.stack([sin, cos], 1)], 1)
    shearing = torch.eye(2).repeat(n, 1, 1)
    shearing[:, 0, 1] = shear
    matrix = scale[:, None, None] * rotation @ shearing
    return torch.einsum("nij,nspj->nspi", matrix, points)


def _centre_and_fill(points: torch.Tensor, in_use: torch.Tensor) -> torch.Tensor:
    """Move the drawn strokes' bounding box to the centre and scale its longer side to the frame."""
    drawn = in_use[:, :, None, None].expand_as(points)
    low = torch.where(drawn, points, torch.inf).amin(dim=(1, 2))
    high = torch.where(drawn, points, -torch.inf).amax(dim=(1, 2))
    centre = (low + high) / 2
    extent = (high - low).amax(dim=1).clamp_min(0.2)
    return (points - centre[:, None, None, :]) * (_FILL / extent)[:, None, None, None]


def _render(points: torch.Tensor, in_use: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
    """Ink at each pixel: 1 within the pen radius of a stroke, fading to 0 one pixel further."""
    # in chunks: the distance table of 24,000 images at once would take a gigabyte
    chunks = [
        _render_chunk(points[i : i + 2048], in_use[i : i + 2048], radius[i : i + 2048])
        for i in range(0, len(points), 2048)
    ]
    return torch.cat(chunks)


def _render_chunk(points: torch.Tensor, in_use: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
    n = len(points)
    axis = (torch.arange(_DRAW_SIZE) + 0.5) / _DRAW_SIZE * 2 - 1
    y, x = torch.meshgrid(axis, axis, indexing="ij")
    pixels = torch.stack([x.flatten(), -y.flatten()], dim=1)  # (H*W, 2), y up
    flat = points.reshape(n, -1, 2)
    usable = in_use[:, :, None].expand(-1, -1, _POINTS_PER_STROKE).reshape(n, -1)
    distance = torch.cdist(pixels.expand(n, -1, -1), flat)  # (N, H*W, points)
    distance = torch.where(usable[:, None, :], distance, torch.inf).amin(dim=2)
    pixel = 2 / _DRAW_SIZE
    ink = ((radius[:, None] + pixel - distance) / pixel).clamp(0, 1)
    return ink.reshape(n, 1, _DRAW_SIZE, _DRAW_SIZE)


def glyphs_figure(
    classes: int = 8, per_class: int = 4, *, digits: torch.Tensor | None = None
) -> Figure:
    """A grid: one glyph class per column, a few of its images per row; real ``digits`` (16x16) in a last row."""
    glyphs = glyph_dataset(per_class, classes=classes, seed=2, size=16)  # as the network sees them
    rows = per_class + (digits is not None)
    figure = Figure(figsize=(1.1 * classes, 1.1 * rows + 0.4), layout="constrained")
    grid = figure.subplots(rows, classes, squeeze=False)
    for column in range(classes):
        members = glyphs.inputs[glyphs.targets == column]
        for row in range(per_class):
            grid[row, column].imshow(members[row, 0], cmap="gray", vmin=0, vmax=1)
        grid[0, column].set_title(f"glyph {column}", fontsize=9)
        if digits is not None:
            grid[-1, column].imshow(digits[column, 0], cmap="gray", vmin=0, vmax=1)
            grid[-1, column].set_xlabel("a digit", fontsize=8)
    for axes in grid.flat:
        axes.set_xticks([])
        axes.set_yticks([])
    if digits is not None:
        grid[-1, 0].set_ylabel("digits", fontsize=9)
    figure.suptitle(
        "Pretraining classes (columns): the same strokes drawn with a different hand each time"
    )
    return figure
