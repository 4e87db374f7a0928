"""Data augmentation on torchvision.transforms.v2: the source's presets, and a grid for a widget.

The source's augmentation is Keras' ``ImageDataGenerator(rescale=1/255, shear_range=0.2,
zoom_range=0.2, horizontal_flip=True)``. Of the four, only shear, zoom and flip augment:
*rescale* maps pixel values from 0..255 to 0..1 for every image, in training and at test
time alike. It is input scaling, not augmentation, and the presets keep it separate.
"""

from __future__ import annotations

import math

import ipywidgets as widgets
import torch
from matplotlib.figure import Figure
from torchvision.transforms import v2

from course_lib.widgets import Controls

__all__ = [
    "rescale", "shear", "zoom", "horizontal_flip", "source_augmentation", "PRESETS", "augmentation",
    "augmented_samples", "augmentation_grid", "augmentation_controls",
]  # fmt: skip


def rescale() -> v2.Transform:
    """uint8 0..255 -> float 0..1 (Keras' rescale=1/255). Not random: apply it at test time too."""
    return v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True)])


def shear(intensity: float = 0.2) -> v2.Transform:
    """Random shear of up to ``intensity`` radians either way (Keras' shear_range)."""
    degrees = math.degrees(intensity)
    return v2.RandomAffine(degrees=0, shear=(-degrees, degrees))


def zoom(amount: float = 0.2) -> v2.Transform:
    """Random zoom in or out by up to ``amount`` (0.2: 80% to 120%; Keras' zoom_range)."""
    return v2.RandomAffine(degrees=0, scale=(1 - amount, 1 + amount))


def horizontal_flip() -> v2.Transform:
    """Mirror left-right half of the time. Fine for photos, wrong for digits ('2' is not a mirrored '2')."""
    return v2.RandomHorizontalFlip(p=0.5)


def source_augmentation() -> v2.Transform:
    """The source's full pipeline: rescale, then shear 0.2, zoom 0.2 and horizontal flips."""
    return augmentation(shear_intensity=0.2, zoom_amount=0.2, flip=True)


PRESETS = {
    "rescale only": rescale,
    "shear 0.2": lambda: v2.Compose([rescale(), shear(0.2)]),
    "zoom 0.2": lambda: v2.Compose([rescale(), zoom(0.2)]),
    "horizontal flip": lambda: v2.Compose([rescale(), horizontal_flip()]),
    "source (all four)": source_augmentation,
}


def augmentation(shear_intensity: float = 0.0, zoom_amount: float = 0.0, flip: bool = False,
                 rotation_degrees: float = 0.0) -> v2.Transform:  # fmt: skip
    """Rescale, then the chosen random transforms (0 switches one off)."""
    steps = [rescale()]
    if shear_intensity or zoom_amount or rotation_degrees:
        degrees = math.degrees(shear_intensity)
        steps.append(v2.RandomAffine(
            degrees=rotation_degrees,
            shear=(-degrees, degrees) if shear_intensity else None,
            scale=(1 - zoom_amount, 1 + zoom_amount) if zoom_amount else None,
        ))  # fmt: skip
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


def augmentation_grid(image: torch.Tensor, transform: v2.Transform, count: int = 8, seed: int = 0,
                      title: str = "") -> Figure:  # fmt: skip
    """The original next to ``count`` augmentations, as a Figure (for the augmentation widget)."""
    samples = augmented_samples(image, transform, count, seed)
    columns = min(count + 1, 5)
    rows = math.ceil((count + 1) / columns)
    figure = Figure(figsize=(2.2 * columns, 2.2 * rows), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False).flatten()
    original = rescale()(image)
    for panel, (picture, label) in zip(axes, [(original, "original")] + [(s, f"#{i + 1}") for i, s in enumerate(samples)],
                                       strict=False):  # fmt: skip
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


def augmentation_controls() -> Controls:
    """Sliders and a checkbox for :func:`augmentation`."""
    style, layout = {"description_width": "110px"}, widgets.Layout(width="420px")
    return Controls(
        shear_intensity=widgets.FloatSlider(value=0.2, min=0, max=0.8, step=0.05, description="shear (rad)",
                                            style=style, layout=layout),
        zoom_amount=widgets.FloatSlider(value=0.2, min=0, max=0.6, step=0.05, description="zoom ±",
                                        style=style, layout=layout),
        rotation_degrees=widgets.FloatSlider(value=0, min=0, max=45, step=5, description="rotation (°)",
                                             style=style, layout=layout),
        flip=widgets.Checkbox(value=True, description="horizontal flip", style=style, layout=layout),
    )  # fmt: skip
