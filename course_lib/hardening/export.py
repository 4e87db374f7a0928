"""Export for deployment: torch.export, ONNX checked with onnxruntime, and dynamic int8 quantization.

TorchScript (``torch.jit.trace`` / ``torch.jit.script``) is deprecated: ``torch.export``
captures the model as a graph of standard operators, and the ONNX exporter builds on it
(``torch.onnx.export(..., dynamo=True)``). An exported model must be *checked*: run it on the
same inputs as the original and compare the outputs.

An exported file is what ships, so it is signed like the rest (:func:`sign_file`, a detached
signature) and :func:`onnx_session` verifies it before onnxruntime parses a byte of it.
"""

from __future__ import annotations

import contextlib
import io
import os
import statistics
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from course_lib.hardening.secure import UnsignedModelWarning, verify_file
from course_lib.hardening.serialization import IntegrityError

__all__ = [
    "export_program",
    "export_onnx",
    "onnx_session",
    "compare_runtimes",
    "quantize_int8",
    "serialized_size",
    "median_ms",
]


def _batch_of_two(example: torch.Tensor) -> torch.Tensor:
    # an example batch of 1 would be taken as "always 1": export with 2, keep the batch dynamic
    return example.repeat(2, *[1] * (example.dim() - 1))[:2] if len(example) < 2 else example


def _dynamic_batch() -> dict:
    return {"x": {0: torch.export.Dim("batch", min=1, max=4096)}}


def export_program(model: nn.Module, example: torch.Tensor) -> torch.export.ExportedProgram:
    """``torch.export`` of ``model`` in eval mode, any batch size (``.module()`` runs it)."""
    return torch.export.export(
        model.eval(), (_batch_of_two(example),), dynamic_shapes=_dynamic_batch()
    )


def export_onnx(model: nn.Module, example: torch.Tensor, path: str | os.PathLike) -> Path:
    """Write ``model`` as ONNX (opset chosen by torch), any batch size; return the path."""
    with contextlib.redirect_stdout(io.StringIO()):  # the exporter narrates every step
        program = torch.onnx.export(
            model.eval(),
            (_batch_of_two(example),),
            dynamo=True,
            dynamic_shapes=_dynamic_batch(),
            input_names=["x"],
        )
        program.save(str(path))
    return Path(path)


def onnx_session(
    path: str | os.PathLike,
    *,
    verify_key=None,
    allow_unsigned: bool = False,
    threads: int = 1,
):
    """An onnxruntime CPU session for the ONNX file, after checking its detached signature.

    ``verify_key`` checks ``<path>.sig`` (see ``sign_file``) and the session is built from the
    very bytes that were checked. Without it the call refuses, unless ``allow_unsigned=True``,
    which warns. One thread by default: comparable with the course's torch runs.

    Raises:
        IntegrityError: no signature, a wrong one, or a changed file.
    """
    import onnxruntime

    if verify_key is not None:
        content = verify_file(path, verify_key)
    elif allow_unsigned:
        warnings.warn(
            f"allow_unsigned=True: {Path(path).name} is run WITHOUT a signature check",
            UnsignedModelWarning,
            stacklevel=2,
        )
        content = Path(path).read_bytes()
    else:
        raise IntegrityError(
            f"{Path(path).name}: no verify_key given: refusing to run an unverified model "
            "(pass allow_unsigned=True only for a file you just exported yourself)"
        )
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    return onnxruntime.InferenceSession(content, options, providers=["CPUExecutionProvider"])


def median_ms(run, repeats: int = 30) -> float:
    """Median milliseconds of ``run()`` over ``repeats`` calls, after one warm-up call."""
    run()  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times)


@torch.no_grad()
def compare_runtimes(
    model: nn.Module,
    session,
    inputs: torch.Tensor,
    batch_sizes: Sequence[int] = (1, 32),
    repeats: int = 30,
) -> list[dict]:
    """Per batch size: the largest difference between torch's and onnxruntime's outputs, and
    the median milliseconds of each (same process, interleaved). torch runs on one thread
    here, like the sessions of :func:`onnx_session`."""
    model.eval()
    name = session.get_inputs()[0].name
    rows, threads = [], torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for size in batch_sizes:
            rows.append(_compare_one(model, session, name, inputs[:size], repeats))
    finally:
        torch.set_num_threads(threads)
    return rows


def _compare_one(model: nn.Module, session, name: str, batch: torch.Tensor, repeats: int) -> dict:
    expected = model(batch)
    got = torch.from_numpy(session.run(None, {name: batch.numpy()})[0])
    return {
        "batch": len(batch),
        "max_abs_diff": (got - expected).abs().max().item(),
        "torch_ms": median_ms(lambda: model(batch), repeats),
        "onnx_ms": median_ms(lambda: session.run(None, {name: batch.numpy()}), repeats),
    }


def quantize_int8(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose Linear layers compute in int8 (dynamic quantization).

    Weights are stored as int8, activations quantized on the fly. Only ``nn.Linear`` layers
    change: on a convolutional network that is just the head. (torch.ao.quantization is
    deprecated in favour of the torchao package, which the course does not depend on.)
    """
    import copy

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the deprecation notice, printed on every call
        return torch.ao.quantization.quantize_dynamic(
            copy.deepcopy(model).eval(), {nn.Linear}, dtype=torch.qint8
        )


def serialized_size(model: nn.Module) -> int:
    """Bytes of ``torch.save(model.state_dict())``: what a model costs on disk."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.tell()
