"""Data augmentation on torchvision.transforms.v2: the source articles' presets, and a grid.

The course's source articles (two short articles on model tuning) augment with Keras'
``ImageDataGenerator(rescale=1/255, shear_range=0.2, zoom_range=0.2, horizontal_flip=True)``.
Of the four, only shear, zoom and flip augment:
*rescale* maps pixel values from 0..255 to 0..1 for every image, in training and at test
time alike. It is input scaling, not augmentation, and the presets keep it separate.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torchvision.transforms import v2

__all__ = [
    "rescale",
    "shear",
    "zoom",
    "horizontal_flip",
    "source_augmentation",
    "PRESETS",
    "augmentation",
    "augmented_samples",
    "augmentation_grid",
    "BatchAugmentation",
]


def rescale() -> v2.Transform:
    """uint8 0..255 -> float 0..1 (Keras' rescale=1/255). Not random: apply it at test time too."""
    return v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True)])


def shear(intensity: float = 0.2) -> v2.Transform:
    """Random shear of up to ``intensity`` radians either way.

    Keras' ``shear_range`` was in radians in early Keras 2 and is in degrees since the
    keras-preprocessing rewrite (``shear_range=0.2`` is now 0.2 degrees, next to no shear).
    This course keeps radians: 0.2 rad is about 11.5 degrees, the strength the articles meant.
    """
    degrees = math.degrees(intensity)
    return v2.RandomAffine(degrees=0, shear=(-degrees, degrees))


def zoom(amount: float = 0.2) -> v2.Transform:
    """Random zoom in or out by up to ``amount`` (0.2: 80% to 120%), one factor for both axes.

    Keras' ``zoom_range`` draws the horizontal and vertical factors separately, so it also
    stretches; torchvision's ``scale`` (used here) keeps the aspect ratio.
    """
    return v2.RandomAffine(degrees=0, scale=(1 - amount, 1 + amount))


def horizontal_flip() -> v2.Transform:
    """Mirror left-right half of the time. Fine for photos, wrong for digits ('2' is not a mirrored '2')."""
    return v2.RandomHorizontalFlip(p=0.5)


def source_augmentation() -> v2.Transform:
    """The source articles' full pipeline: rescale, then shear 0.2, zoom 0.2 and horizontal flips."""
    return augmentation(shear_intensity=0.2, zoom_amount=0.2, flip=True)


PRESETS = {
    "rescale only": rescale,
    "shear 0.2": lambda: v2.Compose([rescale(), shear(0.2)]),
    "zoom 0.2": lambda: v2.Compose([rescale(), zoom(0.2)]),
    "horizontal flip": lambda: v2.Compose([rescale(), horizontal_flip()]),
    "source (all four)": source_augmentation,
}


def augmentation(
    shear_intensity: float = 0.0,
    zoom_amount: float = 0.0,
    flip: bool = False,
    rotation_degrees: float = 0.0,
) -> v2.Transform:
    """Rescale, then the chosen random transforms (0 switches one off), one image per call.

    To augment training batches fast, give ``fit`` a :class:`BatchAugmentation` with the same
    arguments: the same random transforms, drawn per image, applied to a batch in one call.
    """
    steps = [rescale()]
    if shear_intensity or zoom_amount or rotation_degrees:
        degrees = math.degrees(shear_intensity)
        steps.append(
            v2.RandomAffine(
                degrees=rotation_degrees,
                shear=(-degrees, degrees) if shear_intensity else None,
                scale=(1 - zoom_amount, 1 + zoom_amount) if zoom_amount else None,
                interpolation=v2.InterpolationMode.BILINEAR,
            )
        )
    if flip:
        steps.append(horizontal_flip())
    return v2.Compose(steps)


def augmented_samples(
    image: torch.Tensor, transform: v2.Transform, count: int = 8, seed: int = 0
) -> torch.Tensor:
    """``count`` random augmentations of one image, shape (count, C, H, W); the same seed, the same draws."""
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        return torch.stack([transform(image) for _ in range(count)])
    finally:
        torch.random.set_rng_state(state)  # the caller's random stream is left untouched


def augmentation_grid(
    image: torch.Tensor, transform: v2.Transform, count: int = 8, seed: int = 0, title: str = ""
) -> Figure:
    """The original next to ``count`` augmentations, as a Figure (for the augmentation widget)."""
    samples = augmented_samples(image, transform, count, seed)
    columns = min(count + 1, 5)
    rows = math.ceil((count + 1) / columns)
    figure = Figure(figsize=(2.2 * columns, 2.2 * rows), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False).flatten()
    original = rescale()(image)
    for panel, (picture, label) in zip(
        axes,
        [(original, "original")] + [(s, f"#{i + 1}") for i, s in enumerate(samples)],
        strict=False,
    ):
        panel.imshow(
            picture.permute(1, 2, 0).clamp(0, 1).numpy(),
            cmap="gray" if picture.shape[0] == 1 else None,
        )
        panel.set_title(label, fontsize=9)
    for panel in axes:
        panel.axis("off")
    if title:
        figure.suptitle(title)
    return figure


class BatchAugmentation:
    """The random transforms of :func:`augmentation`, drawn per image but applied to a whole batch at once.

    ``augmentation(...)`` transforms one image per call, which costs about 0.2 ms an image in
    Python overhead: more than a small CNN's training step. This class draws the same random
    rotation, shear, zoom and flip for every image of an (N, C, H, W) batch and warps them in
    one ``grid_sample`` call. For each image it builds the 2x2 matrix that maps an output pixel
    (x, y), measured from the image centre, to the input pixel it samples::

        A = (1 / zoom) * [[cos(r) - sin(r) tan(s),  cos(r) tan(s) + sin(r)],
                          [-sin(r),                  cos(r)               ]]

    with rotation ``r`` and shear ``s`` in radians (torchvision's convention), then a flip
    multiplies the x column by -1. Pixels that come from outside the image are 0, as in
    torchvision. Same random draws as ``v2.RandomAffine``; ``tests`` compare the two.
    """

    def __init__(
        self,
        shear_intensity: float = 0.0,
        zoom_amount: float = 0.0,
        flip: bool = False,
        rotation_degrees: float = 0.0,
        interpolation: str = "bilinear",
    ):
        if not 0 <= zoom_amount < 1:
            raise ValueError(f"zoom_amount must be in [0, 1), got {zoom_amount}")
        if shear_intensity < 0 or rotation_degrees < 0:
            raise ValueError("shear_intensity and rotation_degrees must be >= 0")
        if interpolation not in ("bilinear", "nearest"):
            raise ValueError(
                f"interpolation must be 'bilinear' or 'nearest', got {interpolation!r}"
            )
        self.shear_intensity, self.zoom_amount, self.flip = shear_intensity, zoom_amount, flip
        self.rotation_degrees, self.interpolation = rotation_degrees, interpolation

    def __repr__(self) -> str:
        return (
            f"BatchAugmentation(shear_intensity={self.shear_intensity}, zoom_amount={self.zoom_amount}, "
            f"flip={self.flip}, rotation_degrees={self.rotation_degrees})"
        )

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) float images -> the same shape, each image with its own random transform.

        A single (C, H, W) image works too (it is treated as a batch of one).
        """
        if images.dim() == 3:
            return self(images.unsqueeze(0))[0]
        if images.dim() != 4 or not images.is_floating_point():
            raise ValueError(
                f"expected float images of shape (N, C, H, W) or (C, H, W), got "
                f"{images.dtype} of shape {tuple(images.shape)}"
            )
        count = len(images)
        rotation = torch.deg2rad(_symmetric(count, self.rotation_degrees))
        shear = torch.deg2rad(_symmetric(count, math.degrees(self.shear_intensity)))
        scale = 1 + _symmetric(count, self.zoom_amount)
        flipped = torch.rand(count) < 0.5 if self.flip else torch.zeros(count, dtype=torch.bool)
        return warp(images, sampling_matrices(rotation, shear, scale, flipped), self.interpolation)


def _symmetric(count: int, limit: float) -> torch.Tensor:
    """``count`` draws from U(-limit, limit); zeros (and no draw) when ``limit`` is 0."""
    if not limit:
        return torch.zeros(count)
    return (torch.rand(count) * 2 - 1) * limit


def sampling_matrices(
    rotation: torch.Tensor, shear: torch.Tensor, scale: torch.Tensor, flipped: torch.Tensor
) -> torch.Tensor:
    """(N, 2, 2) matrices mapping an output pixel (from the centre) to the input pixel it samples.

    The inverse of "zoom, shear, rotate, then flip", in torchvision's sign conventions.
    """
    cos, sin, tan = torch.cos(rotation), torch.sin(rotation), torch.tan(shear)
    matrices = (
        torch.stack(
            [
                torch.stack([cos - sin * tan, cos * tan + sin], dim=-1),
                torch.stack([-sin, cos], dim=-1),
            ],
            dim=-2,
        )
        / scale[:, None, None]
    )
    matrices[:, :, 0] *= torch.where(flipped, -1.0, 1.0)[:, None]
    return matrices


def warp(
    images: torch.Tensor, matrices: torch.Tensor, interpolation: str = "bilinear"
) -> torch.Tensor:
    """Resample each image of (N, C, H, W) ``images`` through its (2, 2) matrix about the image centre."""
    height, width = images.shape[-2:]
    # grid_sample works in coordinates where the image spans -1..1 on both axes; for a
    # non-square image, convert to pixel units and back around the matrix.
    to_pixels = torch.tensor([width / 2, height / 2])
    theta = torch.zeros(len(images), 2, 3)
    theta[:, :, :2] = matrices * to_pixels[None, None, :] / to_pixels[None, :, None]
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(
        images, grid, mode=interpolation, padding_mode="zeros", align_corners=False
    )
