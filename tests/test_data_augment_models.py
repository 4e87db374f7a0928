import math

import pytest
import torch
from matplotlib.figure import Figure
from torch import nn
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from course_lib.augment import (
    PRESETS,
    BatchAugmentation,
    augmentation,
    augmentation_grid,
    augmented_samples,
    horizontal_flip,
    rescale,
    sampling_matrices,
    warp,
)
from course_lib.data import (
    PHOTOS,
    digits_splits,
    image_folder,
    per_class_subset,
    sample_photo,
    with_wrong_labels,
)
from course_lib.lessons.ch04_generalization import augmentation_controls
from course_lib.models import cnn, conv_block, dense_block, mlp


def test_digits_splits_are_disjoint_seeded_and_upscaled():
    train, val, test = digits_splits(size=16)
    assert len(train) + len(val) + len(test) == 1797
    assert train.inputs.shape[1:] == (1, 16, 16)
    again = digits_splits(size=16)[0]
    assert torch.equal(train.inputs, again.inputs)
    flat = [tuple(x.flatten().tolist()) for split in (train, val, test) for x in split.inputs]
    # practically no image in two splits (a few digits are duplicates)
    assert len(set(flat)) > 0.99 * len(flat)
    with pytest.raises(ValueError, match="size must be >= 8"):
        digits_splits(size=4)


@pytest.mark.parametrize("name", PHOTOS)
def test_every_shipped_photo_loads_offline(name):
    photo = sample_photo(name, size=100)
    assert photo.dtype == torch.uint8 and photo.shape[0] == 3 and min(photo.shape[1:]) == 100


def test_image_folder_reads_your_own_photos_and_explains_a_wrong_layout(tmp_path):
    from PIL import Image

    with pytest.raises(FileNotFoundError, match="class name"):
        image_folder(tmp_path / "missing")
    with pytest.raises(ValueError, match="no class folders"):
        image_folder(tmp_path)
    for label in ("cats", "dogs"):
        (tmp_path / label).mkdir()
        pixels = torch.randint(0, 255, (40, 30, 3), dtype=torch.uint8).numpy()
        Image.fromarray(pixels).save(tmp_path / label / "a.png")
    data = image_folder(tmp_path, size=32)
    image, target = data[1]
    assert data.classes == ["cats", "dogs"] and image.shape == (3, 32, 32) and target == 1


def test_rescale_maps_to_unit_range_and_is_not_random():
    image = torch.randint(0, 256, (3, 20, 20), dtype=torch.uint8)
    once, twice = rescale()(image), rescale()(image)
    assert torch.equal(once, twice) and once.dtype == torch.float32
    assert torch.allclose(once, image.float() / 255)


def test_flip_mirrors_and_samples_are_seeded_without_touching_the_callers_rng():
    image = torch.arange(12, dtype=torch.uint8).reshape(1, 3, 4)
    flips = {tuple(horizontal_flip()(image).flatten().tolist()) for _ in range(30)}
    assert flips == {tuple(image.flatten().tolist()), tuple(image.flip(-1).flatten().tolist())}
    torch.manual_seed(7)
    expected_next = torch.rand(1)
    torch.manual_seed(7)
    a = augmented_samples(sample_photo(size=64), PRESETS["source (all four)"](), count=4, seed=1)
    assert torch.equal(torch.rand(1), expected_next)
    assert torch.equal(
        a, augmented_samples(sample_photo(size=64), PRESETS["source (all four)"](), count=4, seed=1)
    )


def test_grid_figure_and_controls():
    figure = augmentation_grid(sample_photo(size=48), augmentation(0.3, 0.2, True), count=5)
    assert isinstance(figure, Figure) and len(figure.axes) >= 6
    controls = augmentation_controls()
    assert set(controls.values()) == {"shear_intensity", "zoom_amount", "rotation_degrees", "flip"}
    augmentation(**controls.values())  # the controls' values are exactly the function's arguments


def test_models_are_built_from_blocks_with_the_requested_shape():
    model = mlp(64, [32, 16], 10, activation="tanh", dropout=0.1, norm="layer")
    assert model(torch.randn(5, 1, 8, 8)).shape == (5, 10)
    assert sum(isinstance(m, nn.Tanh) for m in model.modules()) == 2
    assert mlp(64, [], 10)(torch.randn(2, 64)).shape == (2, 10)  # no hidden layer: linear model
    network = cnn(3, 4, channels=(8, 16))
    assert (
        network(torch.randn(2, 3, 32, 32)).shape
        == (2, 4)
        == network(torch.randn(2, 3, 20, 20)).shape
    )
    assert isinstance(dense_block(4, 4)[0], nn.Linear) and isinstance(
        conv_block(1, 4)[0], nn.Conv2d
    )


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: mlp(64, [0.1], 10), "0.1 units"),
        (lambda: mlp(64, [32], 10, activation="swish"), "unknown activation"),
        (lambda: mlp(64, [32], 10, dropout=1.5), "dropout is a probability"),
        (lambda: cnn(3, 10, channels=(16, 0)), "positive whole numbers"),
    ],
)
def test_bad_model_arguments_are_explained(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.parametrize("interpolation", ["bilinear", "nearest"])
@pytest.mark.parametrize(
    ("angle", "shear", "scale", "flip"),
    [
        (0, 0, 1.0, False),
        (30, 0, 1.0, False),
        (0, 15, 1.0, False),
        (0, 0, 0.8, False),
        (-20, 10, 1.2, True),
    ],
)
def test_batch_warp_equals_torchvision_affine(angle, shear, scale, flip, interpolation):
    # not square, on purpose
    image = torch.rand(3, 12, 20, generator=torch.Generator().manual_seed(0))
    mode = {"bilinear": v2.InterpolationMode.BILINEAR, "nearest": v2.InterpolationMode.NEAREST}[
        interpolation
    ]
    expected = TF.affine(
        image, angle=angle, translate=[0, 0], scale=scale, shear=[shear, 0.0], interpolation=mode
    )
    if flip:
        expected = TF.horizontal_flip(expected)
    matrices = sampling_matrices(
        torch.tensor([math.radians(angle)]),
        torch.tensor([math.radians(shear)]),
        torch.tensor([scale]),
        torch.tensor([flip]),
    )
    got = warp(image[None], matrices, interpolation)[0]
    assert torch.allclose(got, expected, atol=1e-5)


def test_batch_augmentation_draws_one_transform_per_image_within_its_ranges():
    images = torch.rand(1, 1, 9, 9).expand(64, 1, 9, 9).contiguous()
    torch.manual_seed(0)
    flipped = BatchAugmentation(flip=True)(images)
    mirrored = torch.tensor([torch.allclose(a, images[0].flip(-1), atol=1e-6) for a in flipped])
    untouched = torch.tensor([torch.allclose(a, images[0], atol=1e-6) for a in flipped])
    assert (mirrored | untouched).all() and 10 < int(
        mirrored.sum()
    ) < 54  # each image decides for itself
    # everything off: the identity
    assert torch.allclose(BatchAugmentation()(images), images, atol=1e-6)
    warped = BatchAugmentation(rotation_degrees=20, zoom_amount=0.2)(images)
    assert len({tuple(a.flatten().tolist()) for a in warped}) == 64  # 64 different transforms
    single = BatchAugmentation(rotation_degrees=20)(images[0])
    assert single.shape == images[0].shape


def test_batch_augmentation_explains_bad_input():
    with pytest.raises(ValueError, match="zoom_amount"):
        BatchAugmentation(zoom_amount=1.5)
    with pytest.raises(ValueError, match=r"float images of shape \(N, C, H, W\)"):
        BatchAugmentation(flip=True)(torch.zeros(4, 8, 8, dtype=torch.uint8))


def test_per_class_subset_takes_the_same_number_of_each_class_seeded():
    train, _, _ = digits_splits(seed=0)
    subset = per_class_subset(train, 7, seed=3)
    assert torch.bincount(subset.targets).tolist() == [7] * 10
    assert torch.equal(subset.inputs, per_class_subset(train, 7, seed=3).inputs)
    assert not torch.equal(subset.inputs, per_class_subset(train, 7, seed=4).inputs)
    with pytest.raises(ValueError, match="fewer than per_class"):
        per_class_subset(train, 10_000)


def test_wrong_labels_change_exactly_the_requested_fraction_to_other_classes():
    train, _, _ = digits_splits(seed=0)
    noisy = with_wrong_labels(train, 0.25, seed=1)
    changed = noisy.targets != train.targets
    assert int(changed.sum()) == round(0.25 * len(train))  # never "changed" to the same class
    assert torch.equal(noisy.inputs, train.inputs) and noisy.targets.max() <= 9
    assert torch.equal(with_wrong_labels(train, 0.0).targets, train.targets)
    with pytest.raises(ValueError, match="between 0 and 1"):
        with_wrong_labels(train, 1.5)
