"""Exercises of chapter 6: deployment hardening (solutions/06_deployment_hardening.ipynb)."""

from __future__ import annotations

import math
import tempfile
from functools import cache
from pathlib import Path

import torch
from torch import nn

from course_lib.data import digits_splits
from course_lib.grading.spec import Case, Exercise, Verdict, describe
from course_lib.hardening import fgsm, max_softmax_score, new_key, save_secure
from course_lib.train import fit
from course_lib.transfer import extract_features, freeze, load_backbone, replace_head, unfreeze


@cache
def _digits(seed: int):
    return digits_splits(size=16, seed=seed)


@cache
def _model(seed: int) -> nn.Module:
    """Chapter 6's model: the bundled backbone, frozen, with a digit head on cached features."""
    train, _, _ = _digits(seed)
    torch.manual_seed(seed)
    model = unfreeze(freeze(replace_head(load_backbone("bundled"), 10)), "fc")
    fit(model.fc, extract_features(model, train), optimizer=torch.optim.Adam(model.fc.parameters(), lr=1e-2),
        loss_fn=nn.CrossEntropyLoss(), epochs=30, batch_size=64, progress=False)
    return model.eval()


# --- Exercise 15: find the tampered files -----------------------------------------------------------

_TAMPERING = {
    "none": "an untouched folder",
    "flip": "one bit flipped in the weights",
    "extra": "an extra file added",
    "missing": "the weights file deleted",
    "swap": "the weights replaced by another model's",
    "flip+extra": "one bit flipped in the weights and an extra file added",
}


def _make_folder(root: Path, tamper: str, encrypted: bool) -> tuple[Path, list[str]]:
    """A save_secure folder with one kind of tampering; returns it and the names that should be found."""
    torch.manual_seed(len(tamper))
    state = {"weight": torch.randn(8, 4), "bias": torch.randn(8)}
    key = new_key() if encrypted else None
    folder = save_secure(state, root / "model", key=key, metadata={"name": "digits", "version": 1})
    weights = "weights.safetensors.enc" if encrypted else "weights.safetensors"
    if tamper in ("flip", "flip+extra"):
        data = bytearray((folder / weights).read_bytes())
        data[len(data) // 3] ^= 0b00010000
        (folder / weights).write_bytes(bytes(data))
    if tamper in ("extra", "flip+extra"):
        (folder / "notes.txt").write_text("nothing to see here\n")
    elif tamper == "missing":
        (folder / weights).unlink()
    elif tamper == "swap":
        other = save_secure({k: v + 1 for k, v in state.items()}, root / "other", key=key,
                            metadata={"name": "digits", "version": 2})
        (folder / weights).write_bytes((other / weights).read_bytes())
    expected = {"none": [], "extra": ["notes.txt"], "flip+extra": sorted(["notes.txt", weights])}
    return folder, expected.get(tamper, [weights])


_TAMPER_HINTS = {
    "flip": "read each listed file's bytes and compare hashlib.sha256(data).hexdigest() with the manifest",
    "swap": "compare every listed file's SHA-256 with the manifest, whatever its name",
    "extra": "a file in the folder that the manifest does not list counts too "
    "(leave out manifest.json and manifest.sig themselves)",
    "missing": "a file the manifest lists that is not in the folder counts too (check .exists() first)",
    "flip+extra": "report every untrusted file, not only the first one you find, and sort the names",
}


def _tamper_case(params: dict) -> Case:
    tamper, encrypted = params["tamper"], params.get("encrypted", False)

    def check(find_tampered_files) -> Verdict:
        with tempfile.TemporaryDirectory() as root:
            folder, expected = _make_folder(Path(root), tamper, encrypted)
            got = find_tampered_files(folder)
        if not isinstance(got, list | tuple) or not all(isinstance(name, str) for name in got):
            return Verdict(False, f"a list of file names, {expected}", describe(got),
                           "return a list of names (strings), such as ['weights.safetensors']")
        got = sorted(got)
        if got == expected:
            return Verdict(True)
        if {"manifest.json", "manifest.sig"} & set(got):
            return Verdict(False, str(expected), str(got),
                           "manifest.json and manifest.sig are not in the manifest's file list: leave them out")
        if tamper == "none":
            return Verdict(False, "[] (nothing changed)", str(got),
                           "only files whose SHA-256 differs from the manifest's, or that are missing "
                           "or not listed, are tampered")
        return Verdict(False, str(expected), str(got), _TAMPER_HINTS[tamper])

    what = _TAMPERING[tamper] + (" (encrypted model)" if encrypted else "")
    return Case(what, check)


# --- Exercise 16: an input guard ----------------------------------------------------------------------


def _guard_inputs(kind: str):
    """(input, valid?) for each kind of input the guard must accept or refuse."""
    images = _digits(0)[2].inputs
    nan = images[:4].clone()
    nan[2, 0, 5, 5] = float("nan")
    inputs = {
        "a valid batch": (images[:8].clone(), True),
        "one image (1, 16, 16)": (images[0].clone(), True),
        "a batch of 64": (images[:64].clone(), True),
        "a NaN pixel": (nan, False),
        "an infinite pixel": (
            images[:4].clone().index_fill_(0, torch.tensor([1]), math.inf),
            False,
        ),
        "values 0..255": (images[:4] * 255, False),
        "a negative pixel": (images[:4] - 0.5, False),
        "no channel axis (N, 16, 16)": (images[:4, 0].clone(), False),
        "a 32x32 image": (torch.rand(2, 1, 32, 32), False),
        "a batch of 65": (images[:65].clone(), False),
        "an empty batch": (images[:0].clone(), False),
        # in range: only the dtype is wrong
        "uint8 pixels": (
            torch.zeros(4, 1, 16, 16, dtype=torch.uint8),
            False,
        ),
        "float64 pixels": (images[:4].double(), False),
        "a list": (images[:2].tolist(), False),
    }
    return inputs[kind]


_GUARD_HINTS = {
    "a NaN pixel": "NaN compares False with everything, so x.min() < 0 does not catch it: "
    "check torch.isnan(x).any() (or torch.isfinite(x).all())",
    "an infinite pixel": "check torch.isfinite(x).all() before the range",
    "values 0..255": "check the range: x.min() < 0 or x.max() > 1",
    "a negative pixel": "check the range: x.min() < 0 or x.max() > 1",
    "no channel axis (N, 16, 16)": "check x.shape[1:] == (1, 16, 16) and x.dim() == 4",
    "a 32x32 image": "check x.shape[1:] == (1, 16, 16)",
    "a batch of 65": "check 1 <= len(x) <= 64",
    "an empty batch": "check 1 <= len(x) <= 64: an empty batch is an error too",
    "uint8 pixels": "check x.dtype == torch.float32",
    "float64 pixels": "check x.dtype == torch.float32",
    "a list": "check isinstance(x, torch.Tensor) first",
}


_WRONG_TYPE = ("a list", "uint8 pixels", "float64 pixels")


def _guard_case(params: dict) -> Case:
    kind = params["kind"]

    def check(check_input) -> Verdict:
        value, valid = _guard_inputs(kind)
        original = value.clone() if isinstance(value, torch.Tensor) else None
        try:
            got = check_input(value)
        except ValueError as error:
            if valid:
                return Verdict(False, "the batch, returned", f"ValueError: {error}",
                               "a single (1, 16, 16) image is valid: add the batch axis with x.unsqueeze(0)"
                               if kind.startswith("one image") else "this input is valid: accept it")
            if not str(error).strip():
                return Verdict(False, "a ValueError that says what is wrong", "a ValueError with no message",
                               "raise ValueError('...') with the reason, for example 'NaN in input 2'")
            return Verdict(True)
        except TypeError as error:
            if kind in _WRONG_TYPE and str(error).strip():
                return Verdict(True)  # TypeError is a fine answer to a wrong type or dtype
            raise
        if not valid:
            return Verdict(
                False, "ValueError", f"accepted, returned {describe(got)}", _GUARD_HINTS[kind]
            )
        expected = original if original.dim() == 4 else original.unsqueeze(0)
        if not isinstance(got, torch.Tensor) or got.shape != expected.shape:
            return Verdict(False, f"a tensor of shape {tuple(expected.shape)}", describe(got),
                           "return the batch (N, 1, 16, 16); a single image gets the batch axis: x.unsqueeze(0)")
        if not torch.equal(got, expected):
            return Verdict(False, "the same values", "changed values",
                           "a guard checks; it does not change the input (no clamping, no rescaling)")
        return Verdict(True)

    return Case(kind + (": accepted" if _guard_inputs(kind)[1] else ": refused"), check)


# --- Exercise 17: calibrate an OOD threshold ----------------------------------------------------------


def _threshold_case(params: dict) -> Case:
    seed, rate = params["seed"], params["false_positive_rate"]

    _model(seed)  # trained here, before the learner's time limit starts

    def check(calibrate_ood_threshold) -> Verdict:
        model = _model(seed)
        _, val, test = _digits(seed)
        got = calibrate_ood_threshold(model, val.inputs.clone(), rate)
        try:
            threshold = float(got)
        except (TypeError, ValueError, RuntimeError):
            return Verdict(False, "a number (the threshold)", describe(got),
                           "return a float: torch.quantile(scores, false_positive_rate).item()")
        with torch.no_grad():
            val_scores, test_scores = (
                max_softmax_score(model(val.inputs)),
                max_softmax_score(model(test.inputs)),
            )
        flagged = (val_scores < threshold).double().mean().item()
        if threshold > 1:
            return Verdict(False, "a threshold between 0 and 1", f"{threshold:.3g}",
                           "score with the maximum softmax probability: model(x).softmax(dim=1).max(dim=1).values, "
                           "not the raw logits")
        if abs(flagged - (1 - rate)) < 0.02 and abs(flagged - rate) > 0.02:
            return Verdict(False, f"{rate:.0%} of validation digits below the threshold", f"{flagged:.1%}",
                           "the threshold is the false_positive_rate quantile (low scores are flagged), "
                           "not the 1 - false_positive_rate one")
        if abs(flagged - rate) > 0.01:
            return Verdict(False, f"{rate:.0%} of validation digits below the threshold", f"{flagged:.1%}",
                           "score every validation input, then take torch.quantile(scores, false_positive_rate)")
        on_test = (test_scores < threshold).double().mean().item()
        if abs(on_test - rate) > 0.04:
            return Verdict(False, f"about {rate:.0%} of test digits flagged", f"{on_test:.1%}",
                           "calibrate on the validation inputs you are given, with the model in eval mode")
        return Verdict(True)

    return Case(f"false-positive rate {rate:.0%} (seed {seed})", check)


# --- Exercise 18: FGSM ----------------------------------------------------------------------------------


def _gradient_sign(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    (gradient,) = torch.autograd.grad(nn.functional.cross_entropy(model(x), y), x)
    return gradient.sign()


def _fgsm_case(params: dict) -> Case:
    seed, epsilon = params["seed"], params["epsilon"]

    _model(seed)  # trained here, before the learner's time limit starts

    def check(fgsm_attack) -> Verdict:
        model = _model(seed)
        test = _digits(seed)[2]
        x, y = test.inputs[:64].clone(), test.targets[:64].clone()
        got = fgsm_attack(model, x, y, epsilon)
        if not torch.equal(x, test.inputs[:64]):
            return Verdict(False, "x unchanged", "x changed in place",
                           "build a new tensor: x.clone().requires_grad_(True), and return x + ...")
        if not isinstance(got, torch.Tensor) or got.shape != x.shape:
            return Verdict(False, f"a tensor of shape {tuple(x.shape)}", describe(got),
                           "return the attacked images, same shape as x")
        got = got.detach()
        expected = fgsm(model, x, y, epsilon)
        if torch.allclose(got, expected, atol=1e-6):
            return Verdict(True)
        if got.min() < 0 or got.max() > 1:
            return Verdict(False, "pixels in [0, 1]", f"pixels from {got.min():.3f} to {got.max():.3f}",
                           "clip the result to the valid range: .clamp(0, 1)")
        if torch.allclose(got, (x - epsilon * _gradient_sign(model, x, y)).clamp(0, 1), atol=1e-6):
            return Verdict(False, "x + epsilon * sign(gradient)", "x - epsilon * sign(gradient)",
                           "the attack moves *up* the loss: add epsilon * sign, do not subtract it")
        largest = (got - x).abs().max().item()
        if largest > epsilon + 1e-6:
            return Verdict(False, f"no pixel changed by more than {epsilon:g}", f"a change of {largest:.3g}",
                           "use the sign of the gradient, times epsilon: epsilon * gradient.sign()")
        typical = (got - x).abs().median().item()
        if typical < epsilon / 2:
            return Verdict(False, f"most pixels moved by epsilon ({epsilon:g})", f"a median change of {typical:.2g}",
                           "take the sign of the gradient, not the gradient itself: small gradients "
                           "must still move their pixel by epsilon")
        return Verdict(False, "FGSM: (x + epsilon * sign(d loss / d x)).clamp(0, 1)", "different images",
                       "the loss is cross-entropy of model(x) against y; differentiate it with respect to x")

    return Case(f"epsilon {epsilon:g} on 64 test digits (seed {seed})", check)


EXERCISES = [
    Exercise(
        id="ch6.tampered_files",
        title="Find the tampered files",
        function_name="find_tampered_files",
        points=1,
        make_case=_tamper_case,
        public_params=[{"tamper": t} for t in ("none", "flip", "extra", "missing", "flip+extra")],
        general_hint="json.loads(manifest.json)['files'] maps names to SHA-256 hex digests: report changed, "
        "missing and unlisted files (not manifest.json or manifest.sig)",
    ),
    Exercise(
        id="ch6.input_guard",
        title="An input guard",
        function_name="check_input",
        points=1,
        make_case=_guard_case,
        public_params=[
            {"kind": k}
            for k in (
                "a valid batch",
                "one image (1, 16, 16)",
                "a NaN pixel",
                "values 0..255",
                "no channel axis (N, 16, 16)",
                "a batch of 65",
                "uint8 pixels",
            )
        ],
        general_hint="check the type, dtype, shape, batch size (1 to 64), NaN/inf and range in that order; "
        "raise ValueError with the reason",
    ),
    Exercise(
        id="ch6.ood_threshold",
        title="Calibrate an OOD threshold",
        function_name="calibrate_ood_threshold",
        points=1,
        make_case=_threshold_case,
        public_params=[
            {"seed": 0, "false_positive_rate": 0.05},
            {"seed": 0, "false_positive_rate": 0.1},
        ],
        general_hint="with torch.no_grad(): scores = model(val_inputs).softmax(1).max(1).values; "
        "return torch.quantile(scores, false_positive_rate).item()",
    ),
    Exercise(
        id="ch6.fgsm",
        title="The fast gradient sign method",
        function_name="fgsm_attack",
        points=1,
        make_case=_fgsm_case,
        public_params=[{"seed": 0, "epsilon": 0.05}],
        general_hint="x = x.clone().requires_grad_(True); loss = cross_entropy(model(x), y); "
        "grad = torch.autograd.grad(loss, x)[0]; return (x + epsilon * grad.sign()).clamp(0, 1).detach()",
    ),
]
