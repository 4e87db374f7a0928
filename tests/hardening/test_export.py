"""Export: torch.export and ONNX match the eager model; int8 quantization shrinks Linear layers."""

from __future__ import annotations

import pytest
import torch

from course_lib.hardening import (
    Ed25519PrivateKey,
    IntegrityError,
    UnsignedModelWarning,
    compare_runtimes,
    export_onnx,
    export_program,
    onnx_session,
    quantize_int8,
    serialized_size,
    sign_file,
)
from course_lib.models import mlp
from course_lib.transfer import load_backbone, replace_head


def test_exported_programs_match_the_model_at_any_batch_size(tmp_path):
    model = replace_head(load_backbone("bundled"), 10).eval()
    inputs = torch.rand(32, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    # a batch of 1 as the example still exports any batch
    program = export_program(model, inputs[:1])
    with torch.no_grad():
        for size in (1, 5, 32):
            assert (program.module()(inputs[:size]) - model(inputs[:size])).abs().max() < 1e-5
    private = Ed25519PrivateKey.generate()
    path = export_onnx(model, inputs[:1], tmp_path / "model.onnx")
    sign_file(path, private)
    session = onnx_session(path, verify_key=private.public_key())
    rows = compare_runtimes(model, session, inputs, batch_sizes=(1, 32), repeats=3)
    assert [row["batch"] for row in rows] == [1, 32]
    assert all(
        row["max_abs_diff"] < 1e-4 and row["torch_ms"] > 0 and row["onnx_ms"] > 0 for row in rows
    )


def test_int8_quantization_shrinks_linear_layers_and_keeps_the_answers():
    torch.manual_seed(0)
    model = mlp(64, [256, 256], 10).eval()
    quantized = quantize_int8(model)
    assert serialized_size(quantized) < serialized_size(model) / 3  # int8 weights: about 4x smaller
    inputs = torch.rand(200, 64)
    with torch.no_grad():
        agreement = (quantized(inputs).argmax(1) == model(inputs).argmax(1)).float().mean()
    assert agreement > 0.95
    assert isinstance(model[-1], torch.nn.Linear)  # the original is left as it was


class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 3)

    def forward(self, x):  # export_onnx names the input "x"
        return self.fc(x)


def test_an_onnx_file_runs_only_after_its_signature_checks_out(tmp_path):
    model = Tiny().eval()
    path = export_onnx(model, torch.rand(1, 4), tmp_path / "tiny.onnx")
    private = Ed25519PrivateKey.generate()
    with pytest.raises(IntegrityError, match="no verify_key given"):
        onnx_session(path)
    with pytest.raises(IntegrityError, match="no detached signature"):
        onnx_session(path, verify_key=private.public_key())
    with pytest.warns(UnsignedModelWarning, match="WITHOUT a signature check"):
        onnx_session(path, allow_unsigned=True)
    sign_file(path, private)
    onnx_session(path, verify_key=private.public_key())
    data = bytearray(path.read_bytes())
    data[-5] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="wrong signature"):
        onnx_session(path, verify_key=private.public_key())
