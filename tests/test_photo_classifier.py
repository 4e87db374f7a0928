"""The own-photos trainer: the backbone's own preprocessing, both strategies, best-epoch keeping."""

import pytest
from PIL import Image

import course_lib.photo_classifier as photo_classifier
from course_lib.photo_classifier import (
    TrainingConfig,
    class_report,
    confusion_counts,
    preprocessing_for,
    train_on_photos,
)
from course_lib.photos import scan_photo_folder, write_sample_photos


@pytest.fixture(scope="module")
def sample_folder(tmp_path_factory):
    root = write_sample_photos(tmp_path_factory.mktemp("photos"), per_class=4, size=48)
    return scan_photo_folder(root)


def test_resnet18_preprocessing_is_torchvisions_own():
    from torchvision.models import ResNet18_Weights

    preset = ResNet18_Weights.DEFAULT.transforms()
    ours = preprocessing_for("resnet18")
    assert (ours.resize, ours.crop) == (256, 224) == (preset.resize_size[0], preset.crop_size[0])
    assert ours.mean == tuple(preset.mean) and ours.std == tuple(preset.std)


@pytest.mark.parametrize("backbone, shape", [("resnet18", (3, 224, 224)), ("bundled", (1, 32, 32))])
def test_any_photo_becomes_the_backbones_input(backbone, shape):
    photo = Image.new("RGB", (400, 300), (10, 200, 30))
    preprocessing = preprocessing_for(backbone)
    assert preprocessing.evaluation_transform()(photo).shape == shape
    assert preprocessing.training_transform()(photo).shape == shape


def test_unknown_settings_are_refused():
    with pytest.raises(ValueError, match="unknown backbone"):
        preprocessing_for("vgg")
    with pytest.raises(ValueError, match="strategy must be one of"):
        TrainingConfig(strategy="everything")


@pytest.mark.parametrize("strategy", ["features", "fine-tune"])
def test_training_keeps_the_best_epoch_and_reports_it(sample_folder, strategy):
    saved = []
    config = TrainingConfig(strategy=strategy, epochs=2, batch_size=4)
    result = train_on_photos(
        sample_folder, config, on_best=lambda model, r: saved.append(r.best_epoch), progress=False
    )
    assert [e.epoch for e in result.epochs] == [1, 2]
    assert saved and saved[-1] == result.best_epoch
    best = result.epochs[result.best_epoch - 1].validation_accuracy
    assert best == result.best_accuracy
    assert len(result.validation_predictions) == len(result.validation) == 3  # 1 of 4 per class
    assert set(result.best_state) >= {"fc.weight", "layer4.0.conv1.weight"}


def test_ctrl_c_stops_training_and_keeps_the_best_so_far(sample_folder, monkeypatch):
    real = photo_classifier._train_one_epoch

    def interrupted_in_epoch_two(model, data, optimizer, config, epoch, progress):
        if epoch == 2:
            raise KeyboardInterrupt
        return real(model, data, optimizer, config, epoch, progress)

    monkeypatch.setattr(photo_classifier, "_train_one_epoch", interrupted_in_epoch_two)
    result = train_on_photos(
        sample_folder, TrainingConfig(strategy="features", epochs=3), progress=False
    )
    assert result.interrupted and result.best_epoch == 1 and len(result.epochs) == 1


def test_report_counts_each_class():
    predictions, labels = [0, 0, 1, 2, 2], [0, 1, 1, 2, 0]
    assert confusion_counts(predictions, labels, 3) == [[1, 0, 1], [1, 1, 0], [0, 0, 1]]
    report = class_report(predictions, labels, ["ball", "box", "tent"])
    assert "ball" in report and "confusion matrix" in report
    assert report.splitlines()[1].split() == ["ball", "0.50", "0.50", "2"]
