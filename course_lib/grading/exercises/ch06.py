"""Exercises of chapter 6: deployment hardening (solutions/06_deployment_hardening.ipynb).

Every probe below runs in the learner's kernel and builds what it needs there from the case's
parameters (a model folder, a model from a seed, digits and out-of-distribution images); it
reports what the learner's function did as plain data. The judges, in the grader's process,
rebuild the expected answer from the same parameters and compare.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import math
import tempfile
import time
from functools import cache
from pathlib import Path

import torch
from torch import nn

from course_lib.data import digits_splits
from course_lib.glyphs import glyph_dataset
from course_lib.grading.probing import one_thread
from course_lib.grading.spec import Case, Exercise, Probe, Verdict, describe
from course_lib.hardening import max_softmax_score, new_key, save_secure
from course_lib.train import fit
from course_lib.transfer import extract_features, freeze, load_backbone, replace_head, unfreeze

# --- the chapter's model, built from a seed (in the kernel by `prepare`, in the grader by judges) ---


@cache
def _digits(seed: int):
    return digits_splits(size=16, seed=seed)


@cache
def _model(seed: int) -> nn.Module:
    """Chapter 6's model: the bundled backbone, frozen, with a digit head on cached features."""
    train, _, _ = _digits(seed)
    with one_thread():
        torch.manual_seed(seed)
        model = unfreeze(freeze(replace_head(load_backbone("bundled"), 10)), "fc")
        fit(
            model.fc,
            extract_features(model, train),
            optimizer=torch.optim.Adam(model.fc.parameters(), lr=1e-2),
            loss_fn=nn.CrossEntropyLoss(),
            epochs=30,
            batch_size=64,
            progress=False,
        )
    return model.eval()


def prepare_model(seed: int, *_) -> None:
    """Build (and cache) the model and digits of ``seed`` before the learner's time limit."""
    _model(seed)


def _fresh_model(seed: int) -> nn.Module:
    """A copy of the cached model, so that what a learner's code does to it stays in this case."""
    return copy.deepcopy(_model(seed)).eval()


# --- Exercise 1 (derive): find the tampered files ---------------------------------------------------

_TAMPERING = {
    "none": "an untouched folder",
    "flip": "one bit flipped in the weights",
    "extra": "an extra file added",
    "missing": "the weights file deleted",
    "swap": "the weights replaced by another model's",
    "flip+extra": "one bit flipped in the weights and an extra file added",
    "exchange": "two listed files' contents exchanged",
}
_LABELS_FILE = "labels.json"  # a second listed file, for the "exchange" tampering


def _weights_name(encrypted: bool) -> str:
    return "weights.safetensors.enc" if encrypted else "weights.safetensors"


def _untrusted_names(tamper: str, encrypted: bool) -> list[str]:
    """The files a careful reader of the folder must distrust, for each kind of tampering."""
    weights = _weights_name(encrypted)
    names = {
        "none": [],
        "extra": ["notes.txt"],
        "flip+extra": ["notes.txt", weights],
        "exchange": [_LABELS_FILE, weights],
    }
    return sorted(names.get(tamper, [weights]))


def _list_a_second_file(folder: Path) -> None:
    """Add a labels file to the folder and to its (unsigned) manifest's file list."""
    labels = json.dumps({"classes": list(range(10))}).encode()
    (folder / _LABELS_FILE).write_bytes(labels)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"][_LABELS_FILE] = hashlib.sha256(labels).hexdigest()
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True))


def _make_folder(root: Path, tamper: str, encrypted: bool) -> Path:
    """A save_secure folder (unsigned) with one kind of tampering applied."""
    generator = torch.Generator().manual_seed(len(tamper))
    state = {
        "weight": torch.randn(8, 4, generator=generator),
        "bias": torch.randn(8, generator=generator),
    }
    key = new_key() if encrypted else None
    folder = save_secure(state, root / "model", key=key, metadata={"name": "digits", "version": 1})
    weights = folder / _weights_name(encrypted)
    if tamper in ("flip", "flip+extra"):
        data = bytearray(weights.read_bytes())
        data[len(data) // 3] ^= 0b00010000
        weights.write_bytes(bytes(data))
    if tamper in ("extra", "flip+extra"):
        (folder / "notes.txt").write_text("nothing to see here\n")
    elif tamper == "missing":
        weights.unlink()
    elif tamper == "swap":
        other_state = {name: value + 1 for name, value in state.items()}
        other = save_secure(
            other_state, root / "other", key=key, metadata={"name": "digits", "version": 2}
        )
        weights.write_bytes((other / weights.name).read_bytes())
    elif tamper == "exchange":
        _list_a_second_file(folder)
        labels = folder / _LABELS_FILE
        weights_bytes, labels_bytes = weights.read_bytes(), labels.read_bytes()
        weights.write_bytes(labels_bytes)
        labels.write_bytes(weights_bytes)
    return folder


def probe_tampered_files(find_tampered_files, tamper: str, encrypted: bool) -> dict:
    """Build a tampered folder here, in a temporary directory; report the learner's answer.

    A FileNotFoundError (reading a file the manifest lists but the folder lacks) is reported
    as data, so that the judge can explain it.
    """
    with tempfile.TemporaryDirectory() as root:
        folder = _make_folder(Path(root), tamper, encrypted)
        try:
            return {"names": find_tampered_files(folder)}
        except FileNotFoundError as error:
            return {"raised": "FileNotFoundError", "message": Path(str(error.filename)).name}


_UNTRUSTED_HINTS = {  # by the first file the learner left out
    "flip": "one flipped bit leaves the file's name and size as they were: only its SHA-256, "
    "compared with the manifest's, shows the change. Hash every listed file's bytes",
    "swap": "the weights were replaced by another valid model's file of the same name: compare "
    "every listed file's SHA-256 with the manifest, whatever its name",
    "exchange": "each listed file's SHA-256 must equal the one the manifest gives under that "
    "file's own name; a hash that appears somewhere in the manifest, under another name, does "
    "not vouch for this file",
    "extra": "a file in the folder that the manifest does not list counts too "
    "(leave out manifest.json and manifest.sig themselves)",
    "missing": "a file the manifest lists that is not in the folder counts too: see whether it "
    "exists before you read it",
}
_UNTRUSTED_NUDGES = {
    "flip": "a file can change without changing its name or size: what in the manifest would "
    "show it?",
    "swap": "a valid file can still be the wrong one: what does the manifest pin down about it?",
    "exchange": "two files can each hold bytes the manifest knows, and both be wrong: whose "
    "hash should each file match?",
    "extra": "compare the folder's contents with the manifest's list in both directions",
    "missing": "compare the folder's contents with the manifest's list in both directions",
}


def _missed_file_verdict(tamper: str, expected: list[str], got: list[str]) -> Verdict:
    """Explain the first untrusted file the learner left out, or the one it added wrongly."""
    left_out = [name for name in expected if name not in got]
    if not left_out:
        return Verdict(
            False,
            str(expected),
            str(got),
            "only files whose SHA-256 differs from the manifest's entry for them, or that are "
            "missing or not listed, are tampered: the others are trusted",
            "which of the files you named does the manifest still vouch for?",
        )
    if left_out == ["notes.txt"]:
        kind = "extra"
    elif tamper == "flip+extra":
        kind = "flip"
    else:
        kind = tamper
    return Verdict(False, str(expected), str(got), _UNTRUSTED_HINTS[kind], _UNTRUSTED_NUDGES[kind])


def _tamper_case(params: dict) -> Case:
    tamper, encrypted = params["tamper"], params.get("encrypted", False)

    def judge(report: dict) -> Verdict:
        expected = _untrusted_names(tamper, encrypted)
        if "raised" in report:
            return Verdict(
                False,
                str(expected),
                f"FileNotFoundError reading {report['message']}",
                _UNTRUSTED_HINTS["missing"],
                "the manifest lists a file the folder no longer has: what should that make it?",
            )
        got = report["names"]
        if not isinstance(got, list | tuple) or not all(isinstance(name, str) for name in got):
            return Verdict(
                False,
                f"a list of file names, {expected}",
                describe(got),
                "return a list of names (strings), such as the weights file's name",
                "what does the function promise to return?",
            )
        if sorted(got) == expected:
            return Verdict(True)
        if sorted(Path(name).name for name in got) == expected:
            return Verdict(
                False,
                str(expected),
                str(sorted(got)),
                "return the file names, not paths",
                "the right files, written the wrong way: compare with the manifest's keys",
            )
        got = sorted(got)
        if {"manifest.json", "manifest.sig"} & set(got):
            return Verdict(
                False,
                str(expected),
                str(got),
                "manifest.json and manifest.sig are not in the manifest's file list: leave them out",
                "which files describe the others, rather than being described?",
            )
        if tamper == "none":
            return Verdict(
                False,
                "[] (nothing changed)",
                str(got),
                "only files whose SHA-256 differs from the manifest's, or that are missing "
                "or not listed, are tampered",
                "nothing in this folder changed: why did your function distrust a file?",
            )
        return _missed_file_verdict(tamper, expected, got)

    what = _TAMPERING[tamper] + (" (encrypted model)" if encrypted else "")
    return Case(what, Probe(probe_tampered_files, (tamper, encrypted)), judge)


# --- Exercise 2 (debug): a broken input guard --------------------------------------------------------


def _guard_input(kind: str, seed: int):
    """The input of one kind, built from ``seed``; valid ones are random images in [0, 1]."""
    generator = torch.Generator().manual_seed(seed)

    def images(count: int, size: int = 16) -> torch.Tensor:
        return torch.rand(count, 1, size, size, generator=generator)

    batch = images(4)
    with_nan, with_inf = batch.clone(), batch.clone()
    with_nan[2, 0, 5, 5] = float("nan")
    with_inf[1, 0, 3, 7] = math.inf
    inputs = {
        "a valid batch of 8": lambda: images(8),
        "a batch of 64": lambda: images(64),
        "one image (1, 16, 16)": lambda: images(1)[0],
        "a NaN pixel": lambda: with_nan,
        "an infinite pixel": lambda: with_inf,
        "values 0..255": lambda: (batch * 255).round(),
        "a negative pixel": lambda: batch - 0.5,
        "no channel axis (N, 16, 16)": lambda: batch[:, 0],
        "a 32x32 image": lambda: images(2, 32),
        "a batch of 65": lambda: images(65),
        "an empty batch": lambda: images(0),
        "uint8 pixels": lambda: batch.round().to(torch.uint8),  # zeros and ones: in range
        "float64 pixels": lambda: batch.double(),
        "a list": lambda: batch[:2].tolist(),
    }
    return inputs[kind]()


_VALID_INPUTS = ("a valid batch of 8", "a batch of 64", "one image (1, 16, 16)")

# each planted bug shows on its own input; the whole guard is checked on the others
_GUARD_CASES = {
    "uint8 pixels": ["uint8 pixels"],
    "float64 pixels": ["float64 pixels"],
    "one image (1, 16, 16)": ["one image (1, 16, 16)"],
    "an empty batch": ["an empty batch"],
    "values 0..255": ["values 0..255"],
    "a negative pixel": ["a negative pixel"],
    "an infinite pixel": ["an infinite pixel"],
    "a NaN pixel": ["a NaN pixel"],
    "the whole guard": [
        "a valid batch of 8",
        "a batch of 64",
        "a list",
        "no channel axis (N, 16, 16)",
        "a 32x32 image",
        "a batch of 65",
    ],
}


def probe_guard(check_input, kinds: list, seed: int) -> list:
    """Call the learner's guard on each kind of input; report what it returned or raised.

    A refusal is reported by kind (a ValueError or a TypeError, subclasses included, such as
    the chapter's InvalidInput), so that a guard's own exception classes count.
    """
    reports = []
    for kind in kinds:
        try:
            reports.append({"returned": check_input(_guard_input(kind, seed))})
        # a refusal, or the guard tripping over an input it should have refused
        except (ValueError, TypeError, RuntimeError, IndexError, AttributeError) as error:
            reports.append(
                {
                    "raised": type(error).__name__,
                    "refusal": isinstance(error, ValueError | TypeError),
                    "message": str(error),
                }
            )
    return reports


_NOT_REPAIRED = (
    "out-of-range pixels were clipped into [0, 1] and let through: a guard refuses them with "
    "a reason; it never repairs its input"
)
_DTYPE_NEVER_CHECKED = (
    "the dtype is never checked: the model takes float32 pixels; refuse any other dtype "
    "(converting and scaling is the caller's job)"
)
_GUARD_HINTS = {
    "a NaN pixel": "NaN compares False with everything, so a range check on the smallest and "
    "largest pixel lets it through: test that every pixel is a finite number (torch has a "
    "function for that) before the range",
    "an infinite pixel": "an infinite pixel must be refused, not clipped to 1: test that every "
    "pixel is finite before the range",
    "values 0..255": _NOT_REPAIRED,
    "a negative pixel": _NOT_REPAIRED,
    "uint8 pixels": _DTYPE_NEVER_CHECKED,
    "float64 pixels": _DTYPE_NEVER_CHECKED,
    "an empty batch": "an empty batch is an error too: a batch holds 1 to 64 images; refuse it "
    "before any check that reduces over the pixels",
    "no channel axis (N, 16, 16)": "check the shape of each image, (1, 16, 16), on a 4-d batch",
    "a 32x32 image": "check the shape of each image, (1, 16, 16)",
    "a batch of 65": "at most 64 images at a time",
    "a list": "check that the input is a tensor before anything else",
}
_GUARD_NUDGES = {
    "a NaN pixel": "what does a comparison with NaN return? (section 6.1)",
    "an infinite pixel": "what happens to an infinite pixel on its way through the guard?",
    "values 0..255": "does the guard refuse this input, or quietly make it acceptable?",
    "a negative pixel": "does the guard refuse this input, or quietly make it acceptable?",
    "uint8 pixels": "which property of the tensor does the guard never look at?",
    "float64 pixels": "which property of the tensor does the guard never look at?",
    "an empty batch": "what is the smallest pixel of a batch with no images?",
    "one image (1, 16, 16)": "is a single image, without a batch axis, a valid input?",
}


def _guard_verdict(kind: str, report: dict, seed: int) -> Verdict:
    """One input's verdict: refused with a reason, or accepted and returned unchanged."""
    valid = kind in _VALID_INPUTS
    if "raised" in report:
        name, message = report["raised"], str(report["message"])
        if valid:
            return Verdict(
                False,
                f"{kind}: accepted, the batch returned",
                f"{name}: {message}",
                "a single (1, 16, 16) image is valid: give it a batch axis of one before the "
                "shape check"
                if kind.startswith("one image")
                else "this input is valid: accept it",
                _GUARD_NUDGES.get(kind, "which rule of the task does this input break, if any?"),
            )
        if not report.get("refusal", name in ("ValueError", "TypeError")):
            return Verdict(
                False,
                f"{kind}: refused with a ValueError that says what is wrong",
                f"{name}: {message[:120]}",
                "raise a ValueError (or a subclass of it) that says what is wrong, before torch "
                "trips over this input with an error of its own"
                + (f"; {_GUARD_HINTS[kind]}" if kind in ("a list", "an empty batch") else ""),
                "did your guard refuse this input, or did torch fail on it first?",
            )
        if not message.strip():
            return Verdict(
                False,
                f"{kind}: refused with a ValueError that says what is wrong",
                f"a {name} with no message",
                "raise ValueError with the reason (which check failed, and on what), so a caller "
                "can act on it",
                "could a caller who gets this error tell what to fix?",
            )
        return Verdict(True)
    got = report.get("returned")
    if not valid:
        return Verdict(
            False,
            f"{kind}: refused with a ValueError",
            f"accepted, returned {describe(got)}",
            _GUARD_HINTS[kind],
            _GUARD_NUDGES.get(kind, "which rule of the task does this input break?"),
        )
    original = _guard_input(kind, seed)
    expected = original if original.dim() == 4 else original.unsqueeze(0)
    if not isinstance(got, torch.Tensor) or got.shape != expected.shape:
        return Verdict(
            False,
            f"{kind}: a tensor of shape {tuple(expected.shape)}",
            describe(got),
            "return the batch (N, 1, 16, 16); a single image gets a batch axis of one",
            _GUARD_NUDGES.get(kind, "what shape does the model take?"),
        )
    if got.dtype != expected.dtype or not torch.equal(got, expected):
        return Verdict(
            False,
            f"{kind}: the same values",
            "changed values",
            "a guard checks; it does not change the input (no clamping, no rescaling)",
            "compare what the guard returns with what it was given",
        )
    return Verdict(True)


# neutral labels: a debug exercise's first check shows only descriptions, which must not name
# the bug; the input itself shows in expected/got from the second check on
_INPUT_NUMBERS = {
    kind: number
    for number, kind in enumerate(
        [
            "uint8 pixels",
            "one image (1, 16, 16)",
            "an empty batch",
            "values 0..255",
            "a NaN pixel",
            "float64 pixels",
            "a negative pixel",
            "an infinite pixel",
            "a batch of 64",
            "a 32x32 image",
            "a list",
            "a valid batch of 8",
            "no channel axis (N, 16, 16)",
            "a batch of 65",
        ],
        start=1,
    )
}


def _guard_case(params: dict) -> Case:
    name, seed = params.get("case") or params["kind"], params.get("seed", 0)
    kinds = _GUARD_CASES.get(name, [name])  # a named case, or one kind of input on its own

    def judge(reports) -> Verdict:
        for kind, report in zip(kinds, reports, strict=True):
            verdict = _guard_verdict(kind, report, seed)
            if not verdict.passed:
                return verdict
        return Verdict(True)

    if name == "the whole guard":
        description = "the whole guard: valid batches accepted unchanged, malformed ones refused"
    else:
        what = "should be accepted" if name in _VALID_INPUTS else "should be refused"
        description = f"input {_INPUT_NUMBERS.get(name, 0)}: {what}"
    return Case(description, Probe(probe_guard, (kinds, seed)), judge)


# --- Exercise 3 (derive): calibrate an OOD threshold -------------------------------------------------


def probe_threshold(calibrate_ood_threshold, seed: int, false_positive_rate: float):
    """The learner's margin threshold for the validation digits of ``seed``."""
    _, val, _ = _digits(seed)
    with one_thread():
        return calibrate_ood_threshold(_fresh_model(seed), val.inputs.clone(), false_positive_rate)


def _margin_score(logits: torch.Tensor) -> torch.Tensor:
    """The gap between the largest and the second largest softmax probability of each input."""
    top_two = logits.softmax(dim=1).topk(2, dim=1).values
    return top_two[:, 0] - top_two[:, 1]


def _share_below(scores: torch.Tensor, threshold: float) -> float:
    return (scores < threshold).double().mean().item()


def _threshold_case(params: dict) -> Case:
    seed, rate = params["seed"], params["false_positive_rate"]

    def judge(got) -> Verdict:
        is_number = isinstance(got, int | float) and not isinstance(got, bool)
        if not (is_number or isinstance(got, torch.Tensor) and got.numel() == 1):
            return Verdict(
                False,
                "a number (the threshold)",
                describe(got),
                "return the threshold as a float (a one-element tensor converts to one)",
                "what does the function promise to return?",
            )
        threshold = float(got)
        model = _model(seed)
        _, val, test = _digits(seed)
        with torch.no_grad():
            val_logits, test_logits = model(val.inputs), model(test.inputs)
        val_scores, test_scores = _margin_score(val_logits), _margin_score(test_logits)
        flagged = _share_below(val_scores, threshold)
        if threshold > 1:
            return Verdict(
                False,
                "a threshold between 0 and 1",
                f"{threshold:.3g}",
                "take the margin between softmax probabilities, not between raw logits",
                "a difference of two probabilities lies in which range?",
            )
        if abs(_share_below(max_softmax_score(val_logits), threshold) - rate) < 0.01 and (
            abs(flagged - rate) > 0.01
        ):
            return Verdict(
                False,
                f"{rate:.0%} of validation digits with a margin below the threshold",
                f"{flagged:.1%} (your threshold suits the largest probability alone)",
                "score each input by the largest softmax probability minus the second largest, "
                "not by the largest alone",
                "reread what the score is: how many probabilities does it use?",
            )
        if abs(flagged - (1 - rate)) < 0.02 and abs(flagged - rate) > 0.02:
            return Verdict(
                False,
                f"{rate:.0%} of validation digits below the threshold",
                f"{flagged:.1%}",
                "low margins are the ones flagged: the threshold leaves false_positive_rate of "
                "the validation scores below it, not the 1 - false_positive_rate one",
                "are the flagged inputs those with low scores, or high ones?",
            )
        if abs(flagged - rate) > 0.01:
            return Verdict(
                False,
                f"{rate:.0%} of validation digits below the threshold",
                f"{flagged:.1%}",
                "score every validation input by its margin, then take the score that exactly "
                "that share of them falls below: a quantile of the validation scores",
                "the false-positive rate is a share of normal inputs below the threshold: which "
                "statistic of the validation scores has exactly that share below it?",
            )
        on_test = _share_below(test_scores, threshold)
        if abs(on_test - rate) > 0.04:
            return Verdict(
                False,
                f"about {rate:.0%} of test digits flagged",
                f"{on_test:.1%}",
                "calibrate on the validation inputs you are given, with the model in eval mode",
                "which inputs, and which mode of the model, did you calibrate with?",
            )
        return Verdict(True)

    return Case(
        f"false-positive rate {rate:.0%} (seed {seed})",
        Probe(probe_threshold, (seed, rate), prepare=prepare_model),
        judge,
    )


# --- Exercise 4 (derive): the one-step attack under an L2 budget ------------------------------------
# The chapter prints FGSM, the step for a per-pixel (L-infinity) budget; the learner derives the
# step for a budget on each image's Euclidean length, the dual-norm counterpart.


def _attack_batch(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    test = _digits(seed)[2]
    return test.inputs[:64].clone(), test.targets[:64].clone()


def probe_l2_attack(attack, seed: int, epsilon: float) -> dict:
    """The learner's attacked images, and what the attack left behind on the caller's images."""
    x, y = _attack_batch(seed)
    with one_thread():
        attacked = attack(_fresh_model(seed), x, y, epsilon)
    original = _attack_batch(seed)[0]
    is_tensor = isinstance(attacked, torch.Tensor)
    return {
        "attacked": attacked.detach() if is_tensor else attacked,
        "x_changed": not torch.equal(x.detach(), original),
        "x_requires_grad": x.requires_grad,
        "x_has_grad": x.grad is not None,
        "attacked_requires_grad": is_tensor and attacked.requires_grad,
    }


def _input_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    (gradient,) = torch.autograd.grad(nn.functional.cross_entropy(model(x), y), x)
    return gradient


def _step(gradient: torch.Tensor, epsilon: float, *, per_image: bool = True) -> torch.Tensor:
    """The gradient scaled to Euclidean length epsilon, per image (or over the whole batch)."""
    per_row = gradient.flatten(1) if per_image else gradient.flatten().unsqueeze(0)
    lengths = per_row.norm(dim=1).view(-1, 1, 1, 1)
    return epsilon * gradient / lengths.clamp_min(1e-12)  # an all-zero gradient: no step


_STEP_NUDGE = (
    "to first order the loss changes by the dot product of the gradient with the change: "
    "among all changes of a given length, which one makes a dot product largest?"
)


def _side_effect_verdict(report: dict) -> Verdict | None:
    """A failure for an attack that changed, or left gradients on, the caller's images."""
    if report["x_changed"]:
        return Verdict(
            False,
            "x unchanged",
            "x changed in place",
            "the caller's images must stay as they were: attack a copy of them that records "
            "gradients, and return new images",
            "after your attack, are the images the caller passed in still the same?",
        )
    if report["x_requires_grad"] or report["x_has_grad"]:
        return Verdict(
            False,
            "x as it came: no gradient recorded on it, none stored in it",
            "x now requires gradients" + (" and holds a .grad" if report["x_has_grad"] else ""),
            "switch gradients on for a copy of x, not for the caller's tensor itself",
            "what does your attack leave behind on the tensor the caller gave it?",
        )
    if report["attacked_requires_grad"]:
        return Verdict(
            False,
            "images that do not require gradients",
            "images still attached to the graph that made them",
            "detach the attacked images from the computation graph before returning them",
            "would a caller's later backward pass reach back into your attack?",
        )
    return None


def _fgsm_case(params: dict) -> Case:
    seed, epsilon = params["seed"], params["epsilon"]

    def judge(report: dict) -> Verdict:
        model = _model(seed)
        x, y = _attack_batch(seed)
        got = report["attacked"]
        side_effect = _side_effect_verdict(report)
        if side_effect is not None:
            return side_effect
        if not isinstance(got, torch.Tensor) or got.shape != x.shape:
            return Verdict(
                False,
                f"a tensor of shape {tuple(x.shape)}",
                describe(got),
                "return the attacked images, in the same shape as x",
                "what shape do the images you were given have?",
            )
        got = got.float()
        gradient = _input_gradient(model, x, y)
        expected = (x + _step(gradient, epsilon)).clamp(0, 1)
        if torch.allclose(got, expected, atol=1e-5):
            return Verdict(True)
        if not torch.isfinite(got).all():
            return Verdict(
                False,
                "finite pixels",
                "NaN or infinite pixels",
                "an image whose gradient is zero everywhere has no direction to move in: leave "
                "it as it is rather than divide by its zero length",
                "what is the length of an all-zero gradient, and what does dividing by it give?",
            )
        if got.min() < 0 or got.max() > 1:
            return Verdict(
                False,
                "pixels in [0, 1]",
                f"pixels from {got.min():.3f} to {got.max():.3f}",
                "the attacked images must still be valid images: clip them to [0, 1] after "
                "the step",
                "are your attacked images still images the model could be sent?",
            )
        if torch.allclose(got, (x + epsilon * gradient.sign()).clamp(0, 1), atol=1e-5):
            return Verdict(
                False,
                f"each image changed by a vector of length at most {epsilon:g}",
                f"the sign step: every pixel pushed by {epsilon:g}, a change of length up to "
                f"{epsilon * 16:g}",
                "that is the chapter's FGSM step, made for a budget on each pixel; here the "
                "budget is on the length of each image's whole change, and the best step of "
                "that length points along the gradient itself, not along its sign",
                _STEP_NUDGE,
            )
        if torch.allclose(got, (x - _step(gradient, epsilon)).clamp(0, 1), atol=1e-5):
            return Verdict(
                False,
                "each image moved to raise the loss",
                "each image moved to lower the loss",
                "the attack climbs the loss, it does not descend it: add the step, do not "
                "subtract it",
                "which way does an attacker want the loss to go?",
            )
        whole_batch = (x + _step(gradient, epsilon, per_image=False)).clamp(0, 1)
        if torch.allclose(got, whole_batch, atol=1e-5):
            return Verdict(
                False,
                f"each image's change of length {epsilon:g}",
                f"the whole batch's change of length {epsilon:g}",
                "the budget is per image: measure the gradient's length over each image's "
                "pixels, not over the whole batch",
                "is the budget for the batch, or for each image in it?",
            )
        lengths = (got - x).flatten(1).norm(dim=1)
        if lengths.max() > epsilon * 1.0001:
            return Verdict(
                False,
                f"each image changed by a vector of length at most {epsilon:g}",
                f"a change of length up to {lengths.max():.3g}",
                "scale each image's gradient to length epsilon: its own length divides out",
                _STEP_NUDGE,
            )
        return Verdict(
            False,
            "the images moved epsilon along each image's gradient, then clipped",
            f"different images (change lengths {lengths.min():.3g} to {lengths.max():.3g})",
            "the loss is the cross-entropy of the model's logits against y; differentiate it "
            "with respect to the input images, scale each image's gradient to length epsilon, "
            "add it and clip",
            _STEP_NUDGE,
        )

    return Case(
        f"budget {epsilon:g} (Euclidean length per image) on 64 test digits (seed {seed})",
        Probe(probe_l2_attack, (seed, epsilon), prepare=prepare_model),
        judge,
    )


# --- Exercise 5 (experiment): a better OOD detector, on inputs it never sees -------------------------

_OOD_BATCH = 50  # the detector is called on batches of this many mixed inputs


@cache
def _mixed_inputs(seed: int, glyph_seed: int, class_seed: int):
    """Test digits, uniform noise and glyphs, shuffled; and what each one is.

    The glyphs' classes come from ``class_seed``: with a seed other than 0 they are classes
    neither the digit head nor the backbone met (class seed 0 gives the backbone's own
    pretraining classes, which the chapter uses).
    """
    test = _digits(seed)[2].inputs
    noise = torch.rand(300, 1, 16, 16, generator=torch.Generator().manual_seed(glyph_seed))
    glyphs = glyph_dataset(1, classes=300, seed=glyph_seed, class_seed=class_seed).inputs
    inputs = torch.cat([test, noise, glyphs])
    kinds = ["digit"] * len(test) + ["noise"] * len(noise) + ["glyph"] * len(glyphs)
    order = torch.randperm(len(inputs), generator=torch.Generator().manual_seed(seed + 1000))
    return inputs[order], [kinds[i] for i in order.tolist()]


def prepare_detector_case(seed: int, glyph_seed: int, class_seed: int, *_) -> None:
    _model(seed)
    _mixed_inputs(seed, glyph_seed, class_seed)


def probe_ood_detector(
    build_ood_detector, seed: int, glyph_seed: int, class_seed: int, false_positive_rate: float
) -> dict:
    """Time the learner's build, then run its detector on hidden inputs, a batch at a time.

    The learner gets the model, the training digits (no labels) and the validation digits;
    the test digits and the out-of-distribution images are only ever passed to the detector,
    shuffled, in batches.
    """
    train, val, _ = _digits(seed)
    model = _fresh_model(seed)
    with one_thread():
        started = time.perf_counter()
        detector = build_ood_detector(
            model, train.inputs.clone(), val.inputs.clone(), false_positive_rate
        )
        build_seconds = time.perf_counter() - started
        if not callable(detector):
            return {"detector": detector, "build_seconds": build_seconds}
        inputs, _ = _mixed_inputs(seed, glyph_seed, class_seed)
        started = time.perf_counter()
        flags = [
            detector(inputs[start : start + _OOD_BATCH].clone())
            for start in range(0, len(inputs), _OOD_BATCH)
        ]
    return {
        "flags": flags,
        "build_seconds": build_seconds,
        "flag_seconds": time.perf_counter() - started,
    }


_BUILD_BUDGET_SECONDS = 1.5
_FLAG_BUDGET_SECONDS = 1.5
_DIGITS_FLAGGED_SLACK = 0.05  # test digits flagged may exceed the rate by this much
_OOD_CAUGHT_TARGET = 0.85  # of each kind of out-of-distribution input


def _flag_rates(flags: list, kinds: list[str]) -> dict[str, float] | str:
    """The share flagged of each kind of input; a text saying what is wrong if unreadable."""
    sizes = [min(_OOD_BATCH, len(kinds) - start) for start in range(0, len(kinds), _OOD_BATCH)]
    if len(flags) != len(sizes):
        return f"{len(flags)} answers for {len(sizes)} batches"
    for answer, size in zip(flags, sizes, strict=True):
        if not isinstance(answer, torch.Tensor) or answer.shape != (size,):
            return f"{describe(answer)} for a batch of {size}"
    flagged = torch.cat([answer.bool() for answer in flags])
    return {
        kind: flagged[[k == kind for k in kinds]].double().mean().item()
        for kind in ("digit", "noise", "glyph")
    }


def _detector_case(params: dict) -> Case:
    seed, glyph_seed, class_seed = params["seed"], params["glyph_seed"], params["class_seed"]
    rate = params.get("false_positive_rate", 0.05)

    def judge(report: dict) -> Verdict:
        if "flags" not in report:
            return Verdict(
                False,
                "a function (the detector)",
                describe(report.get("detector")),
                "return a function that takes a batch of images and answers one True/False per "
                "image (True: flagged as unlike the training digits)",
                "what does build_ood_detector promise to return: a score, or something that "
                "decides?",
            )
        rates = _flag_rates(report["flags"], _mixed_inputs(seed, glyph_seed, class_seed)[1])
        if isinstance(rates, str):
            return Verdict(
                False,
                f"a bool tensor of shape (N,) for a batch of N (here N = {_OOD_BATCH})",
                rates,
                "the detector answers one True/False per image of the batch it is given, as a "
                "bool tensor",
                "what does your detector return for a batch of 50 images?",
            )
        build, flag = report["build_seconds"], report["flag_seconds"]
        if build > _BUILD_BUDGET_SECONDS or flag > _FLAG_BUDGET_SECONDS:
            return Verdict(
                False,
                f"at most {_BUILD_BUDGET_SECONDS:g} s to build, {_FLAG_BUDGET_SECONDS:g} s to "
                "flag the hidden images",
                f"{build:.1f} s to build, {flag:.1f} s to flag",
                "over the compute budget: no training is needed; one pass of the model (or "
                "none) over the digits you are given is enough, and flagging a batch should "
                "cost one more pass",
                "where does your build, or your detector, spend its time?",
            )
        digits, noise, glyphs = rates["digit"], rates["noise"], rates["glyph"]
        expected = (
            f"at most {rate + _DIGITS_FLAGGED_SLACK:.0%} of hidden test digits flagged, at least "
            f"{_OOD_CAUGHT_TARGET:.0%} of noise and of glyphs"
        )
        got = f"{digits:.1%} of digits, {noise:.1%} of noise, {glyphs:.1%} of glyphs flagged"
        if digits > rate + _DIGITS_FLAGGED_SLACK:
            return Verdict(
                False,
                expected,
                got,
                "too many normal digits flagged: set the threshold on the validation digits, "
                "for the rate you are given, with the very score you flag with (exercise 3)",
                "how did exercise 3 make sure that only a chosen share of normal digits is "
                "flagged?",
            )
        short = [
            name
            for name, caught in (("noise images", noise), ("glyphs", glyphs))
            if caught < _OOD_CAUGHT_TARGET
        ]
        if short:
            return Verdict(
                False,
                expected,
                got,
                f"too few {' and '.join(short)} caught, while "
                f"{digits:.1%} of digits are flagged (you may flag up to {rate:.0%} of the "
                "validation digits): set the threshold to spend the whole false-positive "
                "allowance, or try another score, such as a distance to the nearest training "
                "digits in the backbone's embedding, a cosine distance, or a distance to each "
                "digit class's centre",
                f"which inputs does your score rank as more digit-like than the {rate:.0%} "
                "least digit-like validation digits?",
            )
        return Verdict(True, expected, got)

    return Case(
        f"{_OOD_BATCH}-image batches of hidden test digits, noise and glyphs (seed {seed})",
        Probe(
            probe_ood_detector,
            (seed, glyph_seed, class_seed, rate),
            prepare=prepare_detector_case,
        ),
        judge,
    )


EXERCISES = [
    Exercise(
        id="ch6.tampered_files",
        title="Find the tampered files",
        function_name="find_tampered_files",
        points=1,
        make_case=_tamper_case,
        public_params=[
            {"tamper": t, "encrypted": False}
            for t in ("none", "flip", "extra", "missing", "flip+extra", "exchange")
        ],
        nudge="list every way the folder can differ from what its manifest describes; section 3 "
        "says what load_secure checks before it trusts a file",
        praise="you compared the folder with its manifest both ways: changed, missing and "
        "unlisted files, and nothing else.",
        next_step="rewrite the manifest's hash after flipping a bit, and see why the chapter "
        "signs the manifest.",
        kind="derive",
        minutes=8,
    ),
    Exercise(
        id="ch6.input_guard",
        title="Fix a broken input guard",
        function_name="check_input",
        points=1,
        make_case=_guard_case,
        public_params=[
            {"case": name, "seed": 0}
            for name in (
                "uint8 pixels",
                "one image (1, 16, 16)",
                "an empty batch",
                "values 0..255",
                "a NaN pixel",
                "the whole guard",
            )
        ],
        nudge="send the guard each kind of input of section 6.1 and compare what it does with "
        "what it should do",
        praise="your guard refuses every malformed input with a reason, NaN and empty batches "
        "included, and passes valid ones through untouched.",
        next_step="compare your guard's messages with those of the chapter's InputGuard: could "
        "a caller fix their input from each one?",
        kind="debug",
        minutes=12,
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
        nudge="compute the margin of every validation digit first; then ask which value has "
        "exactly the false-positive rate of those margins below it",
        praise="you computed a score the library does not ship and calibrated its threshold: "
        "the chosen share of normal digits is flagged, on validation data and on test digits.",
        next_step="compare how many glyphs the margin threshold catches with the chapter's "
        "maximum-softmax threshold at the same rate.",
        kind="derive",
        minutes=6,
    ),
    Exercise(
        id="ch6.fgsm",
        title="A one-step attack under an L2 budget",
        function_name="l2_attack",
        points=1,
        make_case=_fgsm_case,
        public_params=[{"seed": 0, "epsilon": 1.0}, {"seed": 3, "epsilon": 0.4}],
        nudge="FGSM's sign comes from the per-pixel budget; with a budget on the length of "
        "the whole change, ask which direction of a fixed length gains the most",
        praise="you derived the step that a length budget calls for: the whole budget, along "
        "each image's own gradient, clipped to valid images.",
        next_step="compare the accuracy under this attack with FGSM's at budgets of equal "
        "length (an L-infinity epsilon e is a length of up to 16e here).",
        kind="derive",
        minutes=7,
    ),
    Exercise(
        id="ch6.ood_detector",
        title="An OOD detector that catches glyphs",
        function_name="build_ood_detector",
        points=1,
        make_case=_detector_case,
        public_params=[  # not the chapter's digits split, glyph seed or glyph classes
            {"seed": 3, "glyph_seed": 3, "class_seed": 2, "false_positive_rate": 0.05}
        ],
        nudge="a confident answer says little about whether an input looks like a digit: look "
        "for a score that measures how far an input lies from the training digits, and "
        "measure it on noise and glyphs of your own before you check",
        praise="your detector keeps its false-positive rate on digits it never saw and catches "
        "nearly all noise and glyphs, within the budget.",
        next_step="measure your score's AUROC against the glyphs and compare it with the "
        "softmax score's.",
        kind="experiment",
        minutes=12,
    ),
]
