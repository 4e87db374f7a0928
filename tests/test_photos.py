"""Reading a learner's photo folder: every kind of bad input gets a clear message, none a traceback."""

from pathlib import Path

import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision.transforms import v2

from course_lib.photos import (
    Photo,
    PhotoDataset,
    PhotoFolderError,
    load_photo,
    scan_photo_folder,
    stratified_split,
)


def save(path: Path, image: Image.Image, **options) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **options)
    return path


def rgb(size=(32, 24), color=(200, 30, 30)) -> Image.Image:
    return Image.new("RGB", size, color)


def two_classes(root: Path, per_class: int = 3) -> Path:
    for name, color in (("cats", (200, 30, 30)), ("dogs", (30, 30, 200))):
        for i in range(per_class):
            save(root / name / f"{i}.jpg", rgb(color=color))
    return root


def test_a_good_folder_gives_sorted_classes_and_all_photos(tmp_path):
    found = scan_photo_folder(two_classes(tmp_path))
    assert found.classes == ["cats", "dogs"]
    assert found.counts() == {"cats": 3, "dogs": 3}
    assert found.skipped == []
    assert "6 photos in 2 classes (cats 3, dogs 3)" in found.report()


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda root: root / "nowhere", "is not a folder"),
        (lambda root: root, "has no class folders"),
        (lambda root: save(root / "cats" / "a.jpg", rgb()).parents[1], "one class only"),
    ],
    ids=["missing", "empty", "one-class"],
)
def test_unusable_folders_say_why_in_one_sentence(tmp_path, make, words):
    with pytest.raises(PhotoFolderError, match=words) as error:
        scan_photo_folder(make(tmp_path))
    assert "\n" not in str(error.value)


def test_a_class_with_one_photo_is_refused(tmp_path):
    two_classes(tmp_path)
    for extra in ("1.jpg", "2.jpg"):
        (tmp_path / "dogs" / extra).unlink()
    with pytest.raises(
        PhotoFolderError, match="class 'dogs' has 1 usable photo; each class needs at least 2"
    ):
        scan_photo_folder(tmp_path)


def test_files_that_are_not_photos_are_skipped_and_listed(tmp_path):
    two_classes(tmp_path)
    (tmp_path / "cats" / "notes.txt").write_text("not a photo")
    good = (tmp_path / "dogs" / "0.jpg").read_bytes()
    (tmp_path / "dogs" / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (tmp_path / "dogs" / ".DS_Store").write_bytes(b"\0\1")  # hidden: ignored silently
    found = scan_photo_folder(tmp_path)
    assert found.counts() == {"cats": 3, "dogs": 3}
    reasons = {path.name: why for path, why in found.skipped}
    assert reasons.keys() == {"notes.txt", "truncated.jpg"}
    assert "not an image" in reasons["notes.txt"]
    assert "truncated" in reasons["truncated.jpg"]
    assert "cats/notes.txt: not an image" in found.report()


def test_a_class_folder_with_no_usable_photo_is_listed_not_fatal(tmp_path):
    two_classes(tmp_path)
    (tmp_path / "empty_class").mkdir()
    found = scan_photo_folder(tmp_path)
    assert found.classes == ["cats", "dogs"]
    assert any(path.name == "empty_class" for path, _ in found.skipped)


@pytest.mark.parametrize(
    "image, options",
    [
        (Image.new("L", (20, 20), 128), {}),
        (Image.new("RGBA", (20, 20), (255, 0, 0, 0)), {}),  # fully transparent red
        (Image.new("P", (20, 20), 3), {"transparency": 3}),
        (Image.new("CMYK", (20, 20), (0, 255, 255, 0)), {}),
        (Image.new("I;16", (20, 20), 40000), {}),
    ],
    ids=["grayscale", "rgba", "palette", "cmyk", "16-bit"],
)
def test_every_mode_becomes_rgb(tmp_path, image, options):
    suffix = ".jpg" if image.mode == "CMYK" else ".png"
    photo = load_photo(save(tmp_path / f"x{suffix}", image, **options))
    assert photo.mode == "RGB" and photo.size == (20, 20)


def test_transparency_is_composited_on_white(tmp_path):
    photo = load_photo(save(tmp_path / "x.png", Image.new("RGBA", (4, 4), (255, 0, 0, 0))))
    assert photo.getpixel((0, 0)) == (255, 255, 255)


def test_tiny_and_huge_photos_load(tmp_path):
    tiny = load_photo(save(tmp_path / "tiny.jpg", rgb((10, 10))))
    assert tiny.size == (10, 10)
    huge = load_photo(save(tmp_path / "huge.jpg", rgb((4000, 3000)), quality=70))
    assert max(huge.size) <= 2048, "a huge JPEG is decoded at reduced scale"
    assert huge.size[0] / huge.size[1] == pytest.approx(4 / 3, rel=0.01)


def test_exif_orientation_is_applied(tmp_path):
    wide = Image.new("RGB", (40, 20), (0, 0, 0))
    wide.paste((255, 255, 255), (0, 0, 10, 20))  # a white band on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    photo = load_photo(save(tmp_path / "phone.jpg", wide, exif=exif, quality=95))
    assert photo.size == (20, 40)  # upright: portrait
    top_row_brightness = sum(photo.getpixel((x, 2))[0] for x in range(20)) / 20
    assert top_row_brightness > 200  # the left band is now at the top


def test_non_ascii_names_work(tmp_path):
    save(tmp_path / "chats é" / "фото 1.jpg", rgb())
    save(tmp_path / "chats é" / "写真.jpg", rgb())
    save(tmp_path / "chiens" / "a.jpg", rgb())
    save(tmp_path / "chiens" / "b.jpg", rgb())
    found = scan_photo_folder(tmp_path)
    assert found.classes == ["chats é", "chiens"] and len(found.photos) == 4


def photos_of(counts: dict[int, int]) -> list[Photo]:
    return [Photo(Path(f"{label}/{i}.jpg"), label) for label, n in counts.items() for i in range(n)]


def test_split_keeps_each_class_share_and_is_repeatable():
    photos = photos_of({0: 50, 1: 10, 2: 2})
    train, validation = stratified_split(photos, 0.2, seed=0)
    per_class = {label: sum(p.label == label for p in validation) for label in (0, 1, 2)}
    assert per_class == {0: 10, 1: 2, 2: 1}
    assert len(train) + len(validation) == len(photos)
    assert not {p.path for p in train} & {p.path for p in validation}
    assert stratified_split(list(reversed(photos)), 0.2, seed=0) == (train, validation)
    assert stratified_split(photos, 0.2, seed=1) != (train, validation)


def test_dataset_feeds_a_dataloader_with_workers(tmp_path):
    found = scan_photo_folder(two_classes(tmp_path, per_class=4))
    transform = v2.Compose(
        [v2.ToImage(), v2.Resize((16, 16)), v2.ToDtype(torch.float32, scale=True)]
    )
    loader = DataLoader(PhotoDataset(found.photos, transform), batch_size=4, num_workers=2)
    batches = list(loader)
    assert len(batches) == 2
    images, labels = batches[0]
    assert images.shape == (4, 3, 16, 16) and labels.tolist() == [0, 0, 0, 0]


def test_sample_photos_can_bring_the_bad_files_a_real_folder_collects(tmp_path):
    from course_lib.photos import SAMPLE_BAD_FILES, SAMPLE_CLASSES, write_sample_photos

    root = write_sample_photos(tmp_path / "photos", per_class=2, size=32, bad_files=True)
    found = scan_photo_folder(root)
    assert found.classes == list(SAMPLE_CLASSES) and found.counts() == dict.fromkeys(
        found.classes, 2
    )
    skipped = {str(path.relative_to(root)): why for path, why in found.skipped}
    assert set(skipped) == set(SAMPLE_BAD_FILES)
    assert "not an image" in skipped["ball/notes.txt"]
    assert "truncated" in skipped["box/copied_halfway.jpg"]
    assert str(tmp_path) not in found.report()  # names relative to the folder
    again = write_sample_photos(tmp_path / "again", per_class=2, size=32, bad_files=True)
    assert found.report() == scan_photo_folder(again).report()  # seeded: the same files


def test_sample_photos_can_have_mixed_sizes(tmp_path):
    from course_lib.photos import write_sample_photos

    root = write_sample_photos(tmp_path / "photos", per_class=4, size=(40, 70), seed=3)
    sizes = [Image.open(path).size for path in sorted(root.rglob("*.jpg"))]
    assert len(sizes) == 12 and len(set(sizes)) > 6
    assert all(40 <= side <= 70 for size in sizes for side in size)
    again = write_sample_photos(tmp_path / "again", per_class=4, size=(40, 70), seed=3)
    assert sizes == [Image.open(path).size for path in sorted(again.rglob("*.jpg"))]
