"""Data sets the course ships or builds offline. Nothing here downloads anything."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

__all__ = [
    "Split",
    "digits_split",
    "digits_splits",
    "sample_photo",
    "PHOTOS",
    "image_folder",
    "per_class_subset",
    "with_wrong_labels",
]


@dataclass(frozen=True)
class Split:
    """Inputs and integer class targets of one split; ``inputs`` is (N, features) or (N, C, H, W)."""

    inputs: torch.Tensor
    targets: torch.Tensor

    def __len__(self) -> int:
        return len(self.targets)


def digits_split(
    *, test_fraction: float = 0.25, seed: int = 0, flatten: bool = True
) -> tuple[Split, Split]:
    """scikit-learn's 1,797 handwritten digits (8x8, real data, shipped with scikit-learn).

    Returns ``(train, test)``: a seeded, stratified split. Pixels are scaled from 0..16 to
    0..1; ``flatten`` gives (N, 64) inputs, otherwise (N, 1, 8, 8).
    """
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be between 0 and 1, got {test_fraction}")
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32) / 16.0
    targets = torch.tensor(digits.target, dtype=torch.long)
    inputs = images.reshape(len(images), -1) if flatten else images.unsqueeze(1)
    train_idx, test_idx = train_test_split(
        torch.arange(len(targets)).numpy(),
        test_size=test_fraction,
        random_state=seed,
        stratify=targets.numpy(),
    )
    return Split(inputs[train_idx], targets[train_idx]), Split(inputs[test_idx], targets[test_idx])


def digits_splits(
    *, val_fraction: float = 0.15, test_fraction: float = 0.25, size: int = 8, seed: int = 0
) -> tuple[Split, Split, Split]:
    """The digits as ``(train, val, test)`` images of shape (N, 1, size, size), stratified and seeded.

    ``size`` above 8 upscales bilinearly (16 is enough for small CNNs; the information is
    still that of an 8x8 image). The test split is the same for every ``val_fraction``.
    """
    if not 0 < val_fraction < 1 - test_fraction:
        raise ValueError(
            f"val_fraction must be between 0 and {1 - test_fraction:g}, got {val_fraction}"
        )
    if size < 8:
        raise ValueError(f"size must be >= 8 (the images are 8x8), got {size}")
    from sklearn.model_selection import train_test_split

    rest, test = digits_split(test_fraction=test_fraction, seed=seed, flatten=False)
    train_idx, val_idx = train_test_split(
        torch.arange(len(rest)).numpy(),
        test_size=val_fraction / (1 - test_fraction),
        random_state=seed,
        stratify=rest.targets.numpy(),
    )
    splits = (
        Split(rest.inputs[train_idx], rest.targets[train_idx]),
        Split(rest.inputs[val_idx], rest.targets[val_idx]),
        test,
    )
    if size == 8:
        return splits
    return tuple(Split(_resize(split.inputs, size), split.targets) for split in splits)


def per_class_subset(split: Split, per_class: int, *, seed: int = 0) -> Split:
    """``per_class`` examples of every class, drawn at random (seeded) from ``split``."""
    if per_class < 1:
        raise ValueError(f"per_class must be >= 1, got {per_class}")
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for label in split.targets.unique().tolist():
        members = (split.targets == label).nonzero().flatten()
        if len(members) < per_class:
            raise ValueError(
                f"class {label} has only {len(members)} examples, fewer than per_class={per_class}"
            )
        chosen.append(members[torch.randperm(len(members), generator=generator)[:per_class]])
    order = torch.cat(chosen)
    return Split(split.inputs[order], split.targets[order])


def with_wrong_labels(split: Split, fraction: float, *, seed: int = 0) -> Split:
    """A copy of ``split`` where a random ``fraction`` of the labels is replaced by a wrong class.

    Hand-labelled data sets have such mistakes (a few percent up to tens of percent); a
    network big enough to memorise them learns the mistakes too. Exactly
    ``round(fraction * len(split))`` labels change, each to another class chosen at random.
    """
    if not 0 <= fraction <= 1:
        raise ValueError(f"fraction must be between 0 and 1, got {fraction}")
    classes = int(split.targets.max()) + 1
    if classes < 2:
        raise ValueError("wrong labels need at least two classes")
    generator = torch.Generator().manual_seed(seed)
    wrong = torch.randperm(len(split), generator=generator)[: round(fraction * len(split))]
    targets = split.targets.clone()
    # 1..classes-1: never the same class
    shift = torch.randint(1, classes, (len(wrong),), generator=generator)
    targets[wrong] = (targets[wrong] + shift) % classes
    return Split(split.inputs, targets)


def _resize(images: torch.Tensor, size: int) -> torch.Tensor:
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)


PHOTOS = {
    "flower": ("scikit-learn", "flower.jpg"),
    "china": ("scikit-learn", "china.jpg"),
    "grace_hopper": ("matplotlib", "grace_hopper.jpg"),
}


def sample_photo(name: str = "flower", size: int | None = 224) -> torch.Tensor:
    """A real photo shipped inside an installed package, as a (3, H, W) uint8 tensor.

    ``size`` resizes the shorter side (None keeps the original). Offline, no download.
    """
    if name not in PHOTOS:
        raise ValueError(
            f"no photo {name!r}; the photos shipped with the course's packages are {list(PHOTOS)}"
        )
    package, file_name = PHOTOS[name]
    if package == "scikit-learn":
        from sklearn.datasets import load_sample_image

        array = load_sample_image(file_name)
    else:
        import matplotlib.cbook
        import matplotlib.image

        with matplotlib.cbook.get_sample_data(file_name) as file:
            array = matplotlib.image.imread(file, format="jpg")
    photo = torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()
    if size is not None:
        from torchvision.transforms.v2.functional import resize

        photo = resize(photo, [size], antialias=True)
    return photo


def image_folder(path: str | Path, *, size: int = 64):
    """Your own photos: ``path/CLASS_NAME/*.jpg`` as a torchvision ImageFolder of (3, size, size) tensors."""
    from torchvision.datasets import ImageFolder
    from torchvision.transforms import v2

    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(
            f"{folder} is not a folder; put your images in {folder}/<class name>/*.jpg"
        )
    if not any(child.is_dir() for child in folder.iterdir()):
        raise ValueError(
            f"{folder} has no class folders: ImageFolder expects {folder}/<class name>/<image files>"
        )
    transform = v2.Compose(
        [
            v2.ToImage(),
            v2.Resize((size, size), antialias=True),
            v2.ToDtype(torch.float32, scale=True),
        ]
    )
    return ImageFolder(folder, transform=transform)
