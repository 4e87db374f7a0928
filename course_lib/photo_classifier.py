"""Fine-tune a pretrained backbone on a folder of your own photos, keep the best model, predict.

The whole path of chapter 5, on real files, the way PyTorch users train: a ``Dataset`` that
reads photos from disk, a ``DataLoader`` that batches and shuffles them, and a plain loop
(zero_grad, forward, loss, backward, step). Two strategies, as chapter 5 measures them:

- ``"features"`` (feature extraction): the backbone is frozen; each photo's embedding is
  computed once, and only a new linear head is trained on the cached embeddings. Fast; no
  augmentation (an embedding is computed from one view of each photo).
- ``"fine-tune"``: the last block (``layer4``) and a new head are trained, everything before
  stays frozen with its BatchNorm statistics fixed (chapter 5's ``freeze``). Train-time
  augmentation: a random crop of 60-100% of the photo, and a horizontal flip.

After each epoch the model is evaluated on a stratified validation split; the best one by
validation accuracy (on a tie, by validation loss) is written to the model folder at once, atomically, so an interrupted run
(Ctrl+C) leaves the last good model usable.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset
from torchvision.transforms import v2

from course_lib.photos import Photo, PhotoDataset, PhotoFolder, stratified_split
from course_lib.transfer import extract_features, freeze, load_backbone, replace_head, unfreeze

__all__ = [
    "Preprocessing",
    "MatchImageStatistics",
    "GLYPH_IMAGE_STATISTICS",
    "preprocessing_for",
    "BACKBONE_DEFAULTS",
    "TrainingConfig",
    "EpochResult",
    "FineTuneResult",
    "STRATEGIES",
    "build_model",
    "train_on_photos",
    "class_report",
    "confusion_counts",
    "MODEL_KIND",
    "PhotoModelError",
    "Prediction",
    "PhotoModel",
    "photo_model",
    "model_metadata",
    "save_photo_model",
    "load_photo_model",
]

STRATEGIES = ("features", "fine-tune")
# Mean and standard deviation of a glyph image's pixels, averaged over glyph_dataset(5, size=16).
GLYPH_IMAGE_STATISTICS = (0.39, 0.36)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocessing:
    """What a backbone expects of a photo: resize the shorter side, centre-crop, normalise.

    Saved with a model, so that prediction prepares a photo exactly as training did.
    """

    resize: int
    crop: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    grayscale: bool = False
    # (mean, std): rescale each image to these statistics before ``mean``/``std`` apply (None: no)
    image_statistics: tuple[float, float] | None = None

    def evaluation_transform(self) -> v2.Compose:
        """Resize, centre-crop, to a normalised float tensor: the same every time."""
        return v2.Compose(
            [v2.Resize(self.resize, antialias=True), v2.CenterCrop(self.crop), *self._to_tensor()]
        )

    def training_transform(self) -> v2.Compose:
        """A random crop of 60-100% of the photo, resized to the crop size, and a random flip."""
        return v2.Compose(
            [
                v2.RandomResizedCrop(self.crop, scale=(0.6, 1.0), antialias=True),
                v2.RandomHorizontalFlip(),
                *self._to_tensor(),
            ]
        )

    def _to_tensor(self) -> list:
        gray = [v2.Grayscale(num_output_channels=1)] if self.grayscale else []
        rescale = [MatchImageStatistics(*self.image_statistics)] if self.image_statistics else []
        return [
            *gray,
            v2.ToImage(),
            v2.ToDtype(torch.float32, scale=True),
            *rescale,
            v2.Normalize(self.mean, self.std),
        ]


class MatchImageStatistics:
    """Per-image contrast normalisation: ``x -> mean + std * (x - mean(x)) / std(x)``.

    Each image, on its own, is shifted and scaled to the given mean and standard deviation of
    its pixels. An image flatter than ``min_std`` (about 5 grey levels of 255) is scaled as if
    it had that much contrast, so that a blank wall's sensor noise is not blown up into a
    pattern. A backbone pretrained on high-contrast images then
    sees photos at the contrast it knows, whatever their exposure: a mid-grey photo whose
    object differs from the background by a few grey levels reaches the network with the
    contrast of a pretraining image instead of a fraction of it.
    """

    def __init__(self, mean: float, std: float, min_std: float = 0.02):
        self.mean, self.std, self.min_std = float(mean), float(std), float(min_std)

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        centred = image - image.mean()
        return self.mean + self.std * centred / centred.std().clamp_min(self.min_std)

    def __repr__(self) -> str:
        return f"MatchImageStatistics(mean={self.mean}, std={self.std}, min_std={self.min_std})"


def preprocessing_for(backbone: str) -> Preprocessing:
    """The preprocessing each backbone was trained with.

    - ``"resnet18"``: torchvision's own for its ImageNet weights (resize 256, centre-crop 224,
      ImageNet mean and standard deviation), read from ``ResNet18_Weights.DEFAULT``.
    - ``"bundled"``: the course's glyph backbone saw one-channel 16x16 images of bright strokes
      on black, in 0..1, with a mean of 0.39 and a standard deviation of 0.36 per image. A
      photo becomes a 32x32 grayscale image (the network is fully convolutional, so a little
      more resolution helps photos without changing the weights), rescaled on its own to
      those statistics (``MatchImageStatistics``): a photo's grey levels cluster around its
      exposure, with a third to a half of a glyph's contrast (a standard deviation of 0.10 to
      0.20 for the generated sample photos), and contrast is what the glyph features respond to.
    """
    if backbone == "resnet18":
        from torchvision.models import ResNet18_Weights

        preset = ResNet18_Weights.DEFAULT.transforms()
        return Preprocessing(
            resize=preset.resize_size[0],
            crop=preset.crop_size[0],
            mean=tuple(preset.mean),
            std=tuple(preset.std),
        )
    if backbone == "bundled":
        return Preprocessing(
            resize=36,
            crop=32,
            mean=(0.0,),
            std=(1.0,),
            grayscale=True,
            image_statistics=GLYPH_IMAGE_STATISTICS,
        )
    raise ValueError(f"unknown backbone {backbone!r}; choose 'bundled' or 'resnet18'")


# Per backbone, what a field left at None becomes: (epochs, head_lr, backbone_lr).
# resnet18: ImageNet features fit photos; a few epochs, layer4 10x slower than the head.
# bundled: glyph features are far from photos, and the network is small: layer4 has to move,
# at the head's rate, for longer. Chosen on write_sample_photos sets (120 photos, new photos
# of other seeds): layer4 + fc at 1e-3/1e-4 for 10 epochs labelled 52-63% of new photos right
# (its training loss had barely left log 3); at 1e-2/1e-2 for 15 epochs, 88-97%.
BACKBONE_DEFAULTS = {"resnet18": (3, 1e-3, 1e-4), "bundled": (15, 1e-2, 1e-2)}


@dataclass(frozen=True)
class TrainingConfig:
    """Everything that decides a run; saved with the model. Defaults suit a CPU laptop.

    ``epochs``, ``head_lr`` and ``backbone_lr`` left at None take the backbone's defaults
    (``BACKBONE_DEFAULTS``); the saved config records the values used.
    """

    backbone: str = "bundled"
    strategy: str = "fine-tune"
    epochs: int | None = None
    batch_size: int = 16
    head_lr: float | None = None
    backbone_lr: float | None = None  # layer4, when fine-tuning
    validation_fraction: float = 0.2
    seed: int = 0
    workers: int | None = None  # None: 2 worker processes for large photo sets, else none

    def __post_init__(self):
        defaults = BACKBONE_DEFAULTS.get(self.backbone, BACKBONE_DEFAULTS["resnet18"])
        for name, default in zip(("epochs", "head_lr", "backbone_lr"), defaults, strict=True):
            if getattr(self, name) is None:
                object.__setattr__(self, name, default)
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch_size must be at least 1")

    @property
    def weights(self) -> str:
        return "imagenet" if self.backbone == "resnet18" else "glyphs"


@dataclass(frozen=True)
class EpochResult:
    epoch: int
    train_loss: float
    validation_accuracy: float
    validation_loss: float = float("nan")


@dataclass
class FineTuneResult:
    folder: PhotoFolder
    train: list[Photo]
    validation: list[Photo]
    epochs: list[EpochResult] = field(default_factory=list)
    best_epoch: int | None = None
    best_state: dict[str, torch.Tensor] | None = None
    validation_predictions: list[int] = field(default_factory=list)
    interrupted: bool = False

    @property
    def best_accuracy(self) -> float:
        return max((e.validation_accuracy for e in self.epochs), default=float("nan"))

    def is_best(self, epoch: EpochResult) -> bool:
        """Better than every earlier epoch: higher validation accuracy, or as high and a lower loss.

        With a few dozen validation photos, several epochs often tie on accuracy (the same
        photos right); the loss, which also counts how sure the model is, breaks the tie.
        """
        return all(
            (epoch.validation_accuracy, -epoch.validation_loss)
            > (e.validation_accuracy, -e.validation_loss)
            for e in self.epochs
            if e is not epoch
        )


def build_model(config: TrainingConfig, num_classes: int) -> nn.Module:
    """The pretrained backbone with a new head; what the strategy does not train is frozen."""
    model = load_backbone(config.backbone, config.weights)
    replace_head(model, num_classes)
    freeze(model)
    unfreeze(model, *(["fc"] if config.strategy == "features" else ["layer4", "fc"]))
    return model


def train_on_photos(
    folder: PhotoFolder,
    config: TrainingConfig,
    *,
    on_best: Callable[[nn.Module, FineTuneResult], None] | None = None,
    progress: bool = True,
) -> FineTuneResult:
    """Train ``config.strategy`` on the photos of ``folder``; call ``on_best`` at each new best epoch.

    Ctrl+C stops training between batches; the result then says ``interrupted`` and keeps the
    best epoch reached so far (which ``on_best`` has already saved).
    """
    torch.manual_seed(config.seed)
    train, validation = stratified_split(
        folder.photos, config.validation_fraction, seed=config.seed
    )
    result = FineTuneResult(folder, train, validation)
    model = build_model(config, len(folder.classes))
    preprocessing = preprocessing_for(config.backbone)
    if config.strategy == "features":
        train_data = _embeddings(
            model, PhotoDataset(train, preprocessing.evaluation_transform()), config
        )
        validation_data = _embeddings(
            model, PhotoDataset(validation, preprocessing.evaluation_transform()), config
        )
        trained, evaluated = model.fc, model.fc
    else:
        train_data = PhotoDataset(train, preprocessing.training_transform())
        validation_data = PhotoDataset(validation, preprocessing.evaluation_transform())
        trained, evaluated = model, model
    optimizer = torch.optim.Adam(_parameter_groups(model, config))
    try:
        for epoch in range(1, config.epochs + 1):
            loss = _train_one_epoch(trained, train_data, optimizer, config, epoch, progress)
            predictions, validation_loss = _predict(evaluated, validation_data, config)
            accuracy = _accuracy(predictions, [p.label for p in validation])
            result.epochs.append(EpochResult(epoch, loss, accuracy, validation_loss))
            if result.is_best(result.epochs[-1]):
                result.best_epoch = epoch
                result.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                result.validation_predictions = predictions
                if on_best is not None:
                    on_best(model, result)
    except KeyboardInterrupt:
        result.interrupted = True
    return result


def _parameter_groups(model: nn.Module, config: TrainingConfig) -> list[dict]:
    groups = [{"params": list(model.fc.parameters()), "lr": config.head_lr}]
    if config.strategy == "fine-tune":
        groups.append({"params": list(model.layer4.parameters()), "lr": config.backbone_lr})
    return groups


def _loader(data: Dataset, config: TrainingConfig, *, shuffle: bool) -> DataLoader:
    generator = torch.Generator().manual_seed(config.seed)
    return DataLoader(
        data,
        batch_size=config.batch_size,
        shuffle=shuffle,
        generator=generator,
        num_workers=_workers(data, config),
    )


def _workers(data: Dataset, config: TrainingConfig) -> int:
    """Decoding photos is what workers speed up; for a few small files, starting them costs more."""
    if config.workers is not None:
        return config.workers
    if isinstance(data, TensorDataset) or len(data) < 100:
        return 0
    return min(2, max(1, (os.cpu_count() or 1) - 1))


def _train_one_epoch(model, data, optimizer, config, epoch, progress) -> float:
    from tqdm.auto import tqdm

    model.train()
    loss_fn = nn.CrossEntropyLoss()
    total, count = 0.0, 0
    batches = tqdm(
        _loader(data, config, shuffle=True),
        desc=f"epoch {epoch}/{config.epochs}",
        disable=not progress,
        leave=False,
    )
    for inputs, targets in batches:
        optimizer.zero_grad()
        loss = loss_fn(model(inputs), targets)
        loss.backward()
        optimizer.step()
        total += loss.item() * len(targets)
        count += len(targets)
        batches.set_postfix(loss=f"{total / count:.3f}")
    return total / max(count, 1)


@torch.no_grad()
def _predict(model: nn.Module, data: Dataset, config: TrainingConfig) -> tuple[list[int], float]:
    """The predicted class of each example, in order, and the mean cross-entropy loss."""
    model.eval()
    predictions, total, count = [], 0.0, 0
    for inputs, targets in _loader(data, config, shuffle=False):
        logits = model(inputs)
        predictions += logits.argmax(dim=1).tolist()
        total += nn.functional.cross_entropy(logits, targets, reduction="sum").item()
        count += len(targets)
    return predictions, total / max(count, 1)


@torch.no_grad()
def _embeddings(model: nn.Module, data: PhotoDataset, config: TrainingConfig) -> TensorDataset:
    """Each photo's embedding (the input of ``fc``), computed once by chapter 5's extract_features."""
    chunks, labels = [], []
    for inputs, targets in _loader(data, config, shuffle=False):
        chunks.append(extract_features(model, inputs))
        labels.append(targets)
    return TensorDataset(torch.cat(chunks), torch.cat(labels))


def _accuracy(predictions: Sequence[int], labels: Sequence[int]) -> float:
    return sum(p == t for p, t in zip(predictions, labels, strict=True)) / max(len(labels), 1)


def confusion_counts(
    predictions: Sequence[int], labels: Sequence[int], num_classes: int
) -> list[list[int]]:
    """``counts[true][predicted]``: how often each true class was predicted as each class."""
    counts = [[0] * num_classes for _ in range(num_classes)]
    for predicted, true in zip(predictions, labels, strict=True):
        counts[true][predicted] += 1
    return counts


def class_report(predictions: Sequence[int], labels: Sequence[int], classes: Sequence[str]) -> str:
    """Per class: precision, recall and support on validation, then the confusion matrix."""
    counts = confusion_counts(predictions, labels, len(classes))
    width = max(8, *(len(name) for name in classes))
    lines = [f"{'class':<{width}}  precision  recall  photos"]
    for index, name in enumerate(classes):
        true_positive = counts[index][index]
        predicted = sum(row[index] for row in counts)
        actual = sum(counts[index])
        precision = true_positive / predicted if predicted else float("nan")
        recall = true_positive / actual if actual else float("nan")
        lines.append(f"{name:<{width}}  {precision:9.2f}  {recall:6.2f}  {actual:6d}")
    lines += ["", "confusion matrix (rows: true class, columns: predicted)"]
    lines.append(" " * width + "  " + " ".join(f"{i:>4d}" for i in range(len(classes))))
    for index, name in enumerate(classes):
        lines.append(
            f"{name:<{width}}  " + " ".join(f"{n:>4d}" for n in counts[index]) + f"   ({index})"
        )
    return "\n".join(lines)


# --- the model folder: written by training, read by prediction ---------------------------------

MODEL_KIND = "course-photo-classifier/1"
# The architecture to rebuild before loading a saved state (no pretrained file needed to predict).
_ARCHITECTURE = {"bundled": ("small_resnet", None), "resnet18": ("resnet18", None)}


class PhotoModelError(ValueError):
    """A model folder that is not a photo classifier of this course; the message says why."""


@dataclass(frozen=True)
class Prediction:
    path: Path
    label: str = ""
    confidence: float = float("nan")
    problem: str = ""  # why the file could not be classified; "" when it was

    def line(self) -> str:
        if self.problem:
            return f"{self.path}\tskipped: {self.problem}"
        return f"{self.path}\t{self.label}\t{self.confidence:.1%}"


def model_metadata(result: FineTuneResult, config: TrainingConfig) -> dict:
    """What a model folder records besides its weights (JSON values only)."""
    labels = [photo.label for photo in result.validation]
    counts = confusion_counts(result.validation_predictions, labels, len(result.folder.classes))
    recall = {
        name: counts[i][i] / sum(counts[i])
        for i, name in enumerate(result.folder.classes)
        if sum(counts[i])
    }
    return {
        "kind": MODEL_KIND,
        "name": "photo-classifier",
        "classes": list(result.folder.classes),
        "preprocessing": asdict(preprocessing_for(config.backbone)),
        "backbone": config.backbone,
        "weights": config.weights,
        "strategy": config.strategy,
        "seed": config.seed,
        "config": asdict(config),
        "best_epoch": result.best_epoch,
        "validation": {
            "accuracy": result.best_accuracy,
            "photos": len(labels),
            "recall_per_class": recall,
            "confusion": counts,
        },
        "photos": {"train": len(result.train), "skipped_files": len(result.folder.skipped)},
    }


def save_photo_model(
    out: str | os.PathLike, result: FineTuneResult, config: TrainingConfig, *, signing_key=None
) -> Path:
    """Write the best epoch's model folder (chapter 6's format): safetensors, manifest, signature."""
    from course_lib.hardening import save_secure

    if result.best_state is None:
        raise ValueError("no epoch finished, so there is no model to save")
    return save_secure(
        result.best_state, out, signing_key=signing_key, metadata=model_metadata(result, config)
    )


@dataclass
class PhotoModel:
    """A trained photo classifier, ready to predict."""

    network: nn.Module
    classes: list[str]
    preprocessing: Preprocessing
    metadata: dict

    @torch.no_grad()
    def predict(self, paths: Sequence[str | os.PathLike], batch_size: int = 16) -> list[Prediction]:
        """One prediction per path, in order; a file that is not a usable photo says why."""
        from course_lib.photos import load_photo, photo_problem

        transform = self.preprocessing.evaluation_transform()
        self.network.eval()
        predictions: list[Prediction | None] = []
        readable: list[tuple[int, torch.Tensor]] = []
        for path in map(Path, paths):
            problem = "no such file" if not path.is_file() else photo_problem(path)
            predictions.append(Prediction(path, problem=problem) if problem else None)
            if not problem:
                readable.append((len(predictions) - 1, transform(load_photo(path))))
        for start in range(0, len(readable), batch_size):
            chunk = readable[start : start + batch_size]
            probabilities = self.network(torch.stack([x for _, x in chunk])).softmax(dim=1)
            confidence, label = probabilities.max(dim=1)
            for (index, _), c, k in zip(chunk, confidence.tolist(), label.tolist(), strict=True):
                predictions[index] = Prediction(Path(paths[index]), self.classes[k], c)
        return predictions


def photo_model(result: FineTuneResult, config: TrainingConfig) -> PhotoModel:
    """The best epoch of ``result`` as a PhotoModel, ready to predict, without writing a folder.

    The same network, classes and preprocessing that ``save_photo_model`` followed by
    ``load_photo_model`` give back (``course finetune`` then ``course predict``).
    """
    if result.best_state is None:
        raise ValueError("no epoch finished, so there is no model to predict with")
    name, weights = _ARCHITECTURE[config.backbone]
    network = replace_head(load_backbone(name, weights), len(result.folder.classes))
    network.load_state_dict(result.best_state)
    return PhotoModel(
        network.eval(),
        list(result.folder.classes),
        preprocessing_for(config.backbone),
        model_metadata(result, config),
    )


def load_photo_model(
    folder: str | os.PathLike, *, verify_key=None, allow_unsigned: bool = False
) -> PhotoModel:
    """Read a model folder after checking it (chapter 6's ``load_secure``: signed by default).

    Raises:
        IntegrityError: unsigned (without ``allow_unsigned``), tampered with, or a wrong key.
        PhotoModelError: a valid folder that does not hold a photo classifier of this course.
    """
    from course_lib.hardening import load_secure

    state, metadata = load_secure(folder, verify_key=verify_key, allow_unsigned=allow_unsigned)
    if metadata.get("kind") != MODEL_KIND:
        raise PhotoModelError(
            f"{folder} holds a model, but not a photo classifier written by `course finetune`"
        )
    name, weights = _ARCHITECTURE[metadata["backbone"]]
    network = load_backbone(name, weights)
    replace_head(network, len(metadata["classes"]))
    network.load_state_dict(state)
    preprocessing = metadata["preprocessing"]
    statistics = preprocessing.get("image_statistics")
    preprocessing = Preprocessing(
        **{
            **preprocessing,
            "mean": tuple(preprocessing["mean"]),
            "std": tuple(preprocessing["std"]),
            "image_statistics": tuple(statistics) if statistics else None,
        }
    )
    return PhotoModel(network.eval(), list(metadata["classes"]), preprocessing, metadata)
