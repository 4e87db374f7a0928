"""Small networks built from reusable blocks (the "componentized, layered model" of the source).

"The source" here and in the notebooks means the course's source articles: two short articles
on model tuning and transfer learning that the course started from, and corrects where wrong.

A block is a few layers that belong together (linear or conv, normalization, activation,
dropout). A model is blocks in a row, then a head. Depth, width, activation, dropout and
normalization are arguments, so a sweep over them is a loop over arguments.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from torch import nn

__all__ = ["ACTIVATIONS", "dense_block", "conv_block", "mlp", "cnn", "evaluation_mode"]

ACTIVATIONS = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "gelu": nn.GELU,
    "leaky_relu": nn.LeakyReLU,
}


def _check_units(name: str, values: Sequence) -> None:
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(
                f"{name} must be positive whole numbers of units, got {value!r} in {list(values)} "
                "(a layer cannot have 0.1 units: was that meant to be a learning rate or a dropout rate?)"
            )


def _activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose one of {list(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


def _check_dropout(dropout: float) -> None:
    if not 0 <= dropout < 1:
        raise ValueError(f"dropout is a probability in [0, 1), got {dropout}")


def dense_block(
    inputs: int,
    outputs: int,
    activation: str = "relu",
    dropout: float = 0.0,
    norm: str | None = None,
) -> nn.Sequential:
    """Linear -> (LayerNorm/BatchNorm) -> activation -> (Dropout)."""
    _check_units("layer sizes", [inputs, outputs])
    _check_dropout(dropout)
    layers: list[nn.Module] = [nn.Linear(inputs, outputs)]
    if norm == "batch":
        layers.append(nn.BatchNorm1d(outputs))
    elif norm == "layer":
        layers.append(nn.LayerNorm(outputs))
    elif norm is not None:
        raise ValueError(f"norm must be None, 'batch' or 'layer', got {norm!r}")
    layers.append(_activation(activation))
    if dropout:
        layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


def conv_block(
    in_channels: int,
    out_channels: int,
    activation: str = "relu",
    dropout: float = 0.0,
    norm: str | None = "batch",
    pool: bool = True,
) -> nn.Sequential:
    """3x3 conv -> (BatchNorm) -> activation -> (2x2 max-pool: halves height and width) -> (Dropout)."""
    _check_units("channel counts", [in_channels, out_channels])
    _check_dropout(dropout)
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=norm is None)
    ]
    if norm == "batch":
        layers.append(nn.BatchNorm2d(out_channels))
    elif norm is not None:
        raise ValueError(f"norm must be None or 'batch' for a conv block, got {norm!r}")
    layers.append(_activation(activation))
    if pool:
        layers.append(nn.MaxPool2d(2))
    if dropout:
        layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


def mlp(
    inputs: int,
    hidden: Sequence[int],
    outputs: int,
    *,
    activation: str = "relu",
    dropout: float = 0.0,
    norm: str | None = None,
) -> nn.Sequential:
    """Flatten -> one dense block per entry of ``hidden`` -> Linear head with ``outputs`` logits.

    ``hidden=[]`` is a linear model; ``[64, 64]`` has two hidden layers of 64 units.
    """
    _check_units("hidden sizes", list(hidden))
    _check_units("inputs and outputs", [inputs, outputs])
    sizes = [inputs, *hidden]
    blocks = [
        dense_block(a, b, activation, dropout, norm) for a, b in zip(sizes, sizes[1:], strict=False)
    ]
    return nn.Sequential(nn.Flatten(), *blocks, nn.Linear(sizes[-1], outputs))


def cnn(
    in_channels: int,
    classes: int,
    *,
    channels: Sequence[int] = (16, 32),
    activation: str = "relu",
    dropout: float = 0.0,
    norm: str | None = "batch",
) -> nn.Sequential:
    """Conv blocks (each halves the image) -> global average pooling -> Linear head.

    Global average pooling makes the head independent of the image size.
    """
    _check_units("channels", list(channels))
    sizes = [in_channels, *channels]
    blocks = [
        conv_block(a, b, activation, dropout, norm) for a, b in zip(sizes, sizes[1:], strict=False)
    ]
    return nn.Sequential(
        *blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(sizes[-1], classes)
    )


@contextmanager
def evaluation_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Run a block with ``model`` in eval mode, then put back the mode it was in.

    Eval mode switches dropout off and makes BatchNorm use its running statistics: what
    every measurement of a model needs. ``with evaluation_mode(model): ...``
    """
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)
