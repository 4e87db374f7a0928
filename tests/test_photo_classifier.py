"""The own-photos trainer: the backbone's own preprocessing, both strategies, best-epoch keeping."""

import pytest
import torch
from PIL import Image

import course_lib.photo_classifier as photo_classifier
from course_lib.hardening import IntegrityError
from course_lib.photo_classifier import (
    BACKBONE_DEFAULTS,
    GLYPH_IMAGE_STATISTICS,
    EpochResult,
    MatchImageStatistics,
    PhotoModelError,
    TrainingConfig,
    class_report,
    confusion_counts,
    load_photo_model,
    photo_model,
    preprocessing_for,
    save_photo_model,
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


def test_each_image_is_rescaled_to_the_given_statistics():
    generator = torch.Generator().manual_seed(0)
    image = torch.rand(1, 20, 30, generator=generator) * 0.1 + 0.45  # a dull, low-contrast photo
    rescaled = MatchImageStatistics(0.39, 0.36)(image)
    assert rescaled.mean().item() == pytest.approx(0.39, abs=1e-5)
    assert rescaled.std().item() == pytest.approx(0.36, abs=1e-5)
    assert torch.equal(rescaled.argsort(dim=-1), image.argsort(dim=-1))  # same order of pixels
    flat = MatchImageStatistics(0.39, 0.36)(torch.full((1, 4, 4), 0.8))
    assert torch.allclose(flat, torch.full_like(flat, 0.39), atol=1e-4)
    wall = MatchImageStatistics(0.39, 0.36)(
        0.5 + 0.002 * torch.randn(1, 32, 32, generator=generator)
    )
    assert wall.std().item() < 0.05  # a blank wall's sensor noise is not blown up


def test_the_bundled_backbone_sees_photos_at_the_contrast_of_its_glyphs():
    from course_lib.glyphs import glyph_dataset

    glyphs = glyph_dataset(5, size=16).inputs
    assert glyphs.mean().item() == pytest.approx(GLYPH_IMAGE_STATISTICS[0], abs=0.01)
    assert glyphs.flatten(1).std(1).mean().item() == pytest.approx(
        GLYPH_IMAGE_STATISTICS[1], abs=0.01
    )
    dull = Image.new("RGB", (64, 48), (120, 130, 140))
    dull.paste((135, 140, 150), (20, 10, 44, 38))  # an object a few grey levels off
    x = preprocessing_for("bundled").evaluation_transform()(dull)
    assert x.mean().item() == pytest.approx(GLYPH_IMAGE_STATISTICS[0], abs=1e-4)
    assert x.std().item() == pytest.approx(GLYPH_IMAGE_STATISTICS[1], abs=1e-4)


def test_learning_rates_and_epochs_default_per_backbone():
    for backbone, (epochs, head_lr, backbone_lr) in BACKBONE_DEFAULTS.items():
        config = TrainingConfig(backbone=backbone)
        assert (config.epochs, config.head_lr, config.backbone_lr) == (epochs, head_lr, backbone_lr)
    assert TrainingConfig(epochs=2, head_lr=0.5).epochs == 2
    assert TrainingConfig(epochs=2, head_lr=0.5).head_lr == 0.5


def test_a_tie_on_accuracy_goes_to_the_lower_validation_loss(sample_folder):
    result = photo_classifier.FineTuneResult(sample_folder, [], [])
    result.epochs = [EpochResult(1, 1.0, 0.9, 0.5), EpochResult(2, 0.8, 0.9, 0.3)]
    assert result.is_best(result.epochs[1]) and not result.is_best(result.epochs[0])
    result.epochs.append(EpochResult(3, 0.7, 0.85, 0.1))
    assert not result.is_best(result.epochs[2])  # accuracy first


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


@pytest.fixture(scope="module")
def trained(sample_folder):
    config = TrainingConfig(strategy="features", epochs=2, batch_size=4)
    return train_on_photos(sample_folder, config, progress=False), config


def test_a_signed_model_folder_predicts_what_the_network_did(trained, tmp_path, sample_folder):
    result, config = trained
    key = bytes(range(32))
    folder = save_photo_model(tmp_path / "model", result, config, signing_key=key)
    loaded = load_photo_model(folder, verify_key=key)
    assert loaded.classes == ["ball", "box", "tent"]
    assert loaded.metadata["validation"]["accuracy"] == result.best_accuracy
    assert (
        loaded.metadata["preprocessing"]["crop"] == 32 and loaded.metadata["strategy"] == "features"
    )
    assert loaded.preprocessing == preprocessing_for("bundled")  # JSON lists back to tuples
    paths = [photo.path for photo in result.validation]
    predictions = loaded.predict(paths)
    assert [p.label for p in predictions] == [
        loaded.classes[i] for i in result.validation_predictions
    ]
    assert all(0 < p.confidence <= 1 for p in predictions)
    assert str(paths[0]) in predictions[0].line() and "%" in predictions[0].line()


def test_prediction_lists_bad_files_and_goes_on(trained, tmp_path):
    result, config = trained
    folder = save_photo_model(tmp_path / "model", result, config, signing_key=b"k" * 32)
    loaded = load_photo_model(folder, verify_key=b"k" * 32)
    (tmp_path / "notes.txt").write_text("hello")
    good = result.validation[0].path
    predictions = loaded.predict([tmp_path / "notes.txt", tmp_path / "missing.jpg", good])
    assert "not an image" in predictions[0].line() and "no such file" in predictions[1].line()
    assert predictions[2].label in loaded.classes and not predictions[2].problem


def test_unsigned_or_tampered_models_are_refused(trained, tmp_path):
    result, config = trained
    unsigned = save_photo_model(tmp_path / "unsigned", result, config)
    with pytest.raises(IntegrityError):
        load_photo_model(unsigned)
    with pytest.warns(UserWarning):
        assert load_photo_model(unsigned, allow_unsigned=True).classes == ["ball", "box", "tent"]
    signed = save_photo_model(tmp_path / "signed", result, config, signing_key=b"k" * 32)
    weights = signed / "weights.safetensors"
    content = bytearray(weights.read_bytes())
    content[-1] ^= 1
    weights.write_bytes(bytes(content))
    with pytest.raises(IntegrityError, match="changed"):
        load_photo_model(signed, verify_key=b"k" * 32)


def test_a_model_of_another_kind_is_refused(tmp_path):
    from course_lib.hardening import save_secure

    folder = save_secure(
        {"w": torch.zeros(2)}, tmp_path / "other", signing_key=b"k" * 32, metadata={"name": "x"}
    )
    with pytest.raises(PhotoModelError, match="not a photo classifier"):
        load_photo_model(folder, verify_key=b"k" * 32)


def test_photo_model_predicts_like_the_saved_and_loaded_folder(trained, tmp_path):
    result, config = trained
    in_memory = photo_model(result, config)
    folder = save_photo_model(tmp_path / "model", result, config, signing_key=b"k" * 32)
    loaded = load_photo_model(folder, verify_key=b"k" * 32)
    paths = [photo.path for photo in result.validation]
    assert in_memory.classes == loaded.classes and in_memory.preprocessing == loaded.preprocessing
    assert [(p.label, p.confidence) for p in in_memory.predict(paths)] == [
        (p.label, p.confidence) for p in loaded.predict(paths)
    ]
    assert [p.label for p in in_memory.predict(paths)] == [
        result.folder.classes[i] for i in result.validation_predictions
    ]


def test_photo_model_needs_a_finished_epoch(trained):
    result, config = trained
    unfinished = photo_classifier.FineTuneResult(result.folder, result.train, result.validation)
    with pytest.raises(ValueError, match="no epoch finished"):
        photo_model(unfinished, config)
