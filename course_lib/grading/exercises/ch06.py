"""Exercises of chapter 6: deployment hardening (solutions/06_deployment_hardening.ipynb).

Every probe below runs in the learner's kernel and builds what it needs there from the case's
parameters (a model folder, a model from a seed, digits and out-of-distribution images); it
reports what the learner's function did as plain data. The judges, in the grader's process,
rebuild the expected answer from the same parameters and compare.
"""

from __future__ import annotations

import contextlib
import copy
import math
import tempfile
import time
from functools import cache
from pathlib import Path

import torch
from torch import nn

from course_lib.data import digits_splits
from course_lib.glyphs import glyph_dataset
from course_lib.grading.spec import Case, Exercise, Probe, Verdict, describe
from course_lib.hardening import fgsm, max_softmax_score, new_key, save_secure
from course_lib.train import fit
from course_lib.transfer import extract_features, freeze, load_backbone, replace_head, unfreeze

# --- the chapter's model, built from a seed (in the kernel by `prepare`, in the grader by judges) ---


@contextlib.contextmanager
def _one_thread():
    """Run on one torch thread: budgets are stated for one, and a busy machine stalls more."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@cache
def _digits(seed: int):
    return digits_splits(size=16, seed=seed)


@cache
def _model(seed: int) -> nn.Module:
    """Chapter 6's model: the bundled backbone, frozen, with a digit head on cached features."""
    train, _, _ = _digits(seed)
    with _one_thread():
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
}


def _weights_name(encrypted: bool) -> str:
    return "weights.safetensors.enc" if encrypted else "weights.safetensors"


def _untrusted_names(tamper: str, encrypted: bool) -> list[str]:
    """The files a careful reader of the folder must distrust, for each kind of tampering."""
    weights = _weights_name(encrypted)
    names = {"none": [], "extra": ["notes.txt"], "flip+extra": ["notes.txt", weights]}
    return sorted(names.get(tamper, [weights]))


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
    return folder


def probe_tampered_files(find_tampered_files, tamper: str, encrypted: bool):
    """Build a tampered folder here, in a temporary directory; report the learner's answer."""
    with tempfile.TemporaryDirectory() as root:
        folder = _make_folder(Path(root), tamper, encrypted)
        return find_tampered_files(folder)


_TAMPER_HINTS = {
    "flip": "one flipped bit leaves the file's name and size as they were: only its SHA-256, "
    "compared with the manifest's, shows the change. Hash every listed file's bytes",
    "swap": "the weights were replaced by another valid model's file of the same name: compare "
    "every listed file's SHA-256 with the manifest, whatever its name",
    "extra": "a file in the folder that the manifest does not list counts too "
    "(leave out manifest.json and manifest.sig themselves)",
    "missing": "a file the manifest lists that is not in the folder counts too: see whether it "
    "exists before you read it",
    "flip+extra": "report every untrusted file, not only the first one you find, in sorted order",
}
_TAMPER_NUDGES = {
    "flip": "a file can change without changing its name or size: what in the manifest would "
    "show it?",
    "swap": "a valid file can still be the wrong one: what does the manifest pin down about it?",
    "extra": "compare the folder's contents with the manifest's list in both directions",
    "missing": "compare the folder's contents with the manifest's list in both directions",
    "flip+extra": "more than one file can be untrusted at once",
}


def _tamper_case(params: dict) -> Case:
    tamper, encrypted = params["tamper"], params.get("encrypted", False)

    def judge(got) -> Verdict:
        expected = _untrusted_names(tamper, encrypted)
        if not isinstance(got, list | tuple) or not all(isinstance(name, str) for name in got):
            return Verdict(
                False,
                f"a list of file names, {expected}",
                describe(got),
                "return a list of names (strings), such as the weights file's name",
            )
        got = sorted(got)
        if got == expected:
            return Verdict(True)
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
            )
        return Verdict(
            False, str(expected), str(got), _TAMPER_HINTS[tamper], _TAMPER_NUDGES[tamper]
        )

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
    """Call the learner's guard on each kind of input; report what it returned or raised."""
    reports = []
    for kind in kinds:
        try:
            reports.append({"returned": check_input(_guard_input(kind, seed))})
        # a refusal, or the guard tripping over an input it should have refused
        except (ValueError, TypeError, RuntimeError, IndexError, AttributeError) as error:
            reports.append({"raised": type(error).__name__, "message": str(error)})
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
                "the batch, returned",
                f"{name}: {message}",
                "a single (1, 16, 16) image is valid: give it a batch axis of one before the "
                "shape check"
                if kind.startswith("one image")
                else "this input is valid: accept it",
                _GUARD_NUDGES.get(kind, ""),
            )
        if name not in ("ValueError", "TypeError"):
            return Verdict(
                False,
                "a ValueError that says what is wrong",
                f"{name}: {message[:120]}",
                _GUARD_HINTS.get(kind, "refuse it with a ValueError before torch trips over it"),
                _GUARD_NUDGES.get(kind, ""),
            )
        if not message.strip():
            return Verdict(
                False,
                "a ValueError that says what is wrong",
                f"a {name} with no message",
                "raise ValueError with the reason (which check failed, and on what), so a caller "
                "can act on it",
            )
        return Verdict(True)
    got = report.get("returned")
    if not valid:
        return Verdict(
            False,
            "ValueError",
            f"accepted, returned {describe(got)}",
            _GUARD_HINTS[kind],
            _GUARD_NUDGES.get(kind, ""),
        )
    original = _guard_input(kind, seed)
    expected = original if original.dim() == 4 else original.unsqueeze(0)
    if not isinstance(got, torch.Tensor) or got.shape != expected.shape:
        return Verdict(
            False,
            f"a tensor of shape {tuple(expected.shape)}",
            describe(got),
            "return the batch (N, 1, 16, 16); a single image gets a batch axis of one",
            _GUARD_NUDGES.get(kind, ""),
        )
    if got.dtype != expected.dtype or not torch.equal(got, expected):
        return Verdict(
            False,
            "the same values",
            "changed values",
            "a guard checks; it does not change the input (no clamping, no rescaling)",
        )
    return Verdict(True)


def _guard_case(params: dict) -> Case:
    name, seed = params.get("case") or params["kind"], params.get("seed", 0)
    kinds = _GUARD_CASES.get(name, [name])  # a named case, or one kind of input on its own

    def judge(reports) -> Verdict:
        for kind, report in zip(kinds, reports, strict=True):
            verdict = _guard_verdict(kind, report, seed)
            if not verdict.passed:
                if len(kinds) == 1:
                    return verdict
                return Verdict(
                    False, f"{kind}: {verdict.expected}", verdict.got, verdict.hint, verdict.nudge
                )
        return Verdict(True)

    if name == "the whole guard":
        description = "the whole guard: valid batches returned unchanged, malformed ones refused"
    else:
        description = name + (": accepted" if name in _VALID_INPUTS else ": refused")
    return Case(description, Probe(probe_guard, (kinds, seed)), judge)


# --- Exercise 3 (derive): calibrate an OOD threshold -------------------------------------------------


def probe_threshold(calibrate_ood_threshold, seed: int, false_positive_rate: float):
    """The learner's threshold for the validation digits of ``seed``."""
    _, val, _ = _digits(seed)
    with _one_thread():
        return calibrate_ood_threshold(_fresh_model(seed), val.inputs.clone(), false_positive_rate)


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
            )
        threshold = float(got)
        model = _model(seed)
        _, val, test = _digits(seed)
        with torch.no_grad():
            val_scores = max_softmax_score(model(val.inputs))
            test_scores = max_softmax_score(model(test.inputs))
        flagged = (val_scores < threshold).double().mean().item()
        if threshold > 1:
            return Verdict(
                False,
                "a threshold between 0 and 1",
                f"{threshold:.3g}",
                "score with the largest softmax probability of each input, not the raw logits",
                "which score does the chapter's threshold use, and what range does it take?",
            )
        if abs(flagged - (1 - rate)) < 0.02 and abs(flagged - rate) > 0.02:
            return Verdict(
                False,
                f"{rate:.0%} of validation digits below the threshold",
                f"{flagged:.1%}",
                "low scores are the ones flagged: the threshold leaves false_positive_rate of "
                "the validation scores below it, not the 1 - false_positive_rate one",
                "are the flagged inputs those with low scores, or high ones?",
            )
        if abs(flagged - rate) > 0.01:
            return Verdict(
                False,
                f"{rate:.0%} of validation digits below the threshold",
                f"{flagged:.1%}",
                "score every validation input, then take the score that exactly that share of "
                "them falls below (torch's quantile function computes it)",
            )
        on_test = (test_scores < threshold).double().mean().item()
        if abs(on_test - rate) > 0.04:
            return Verdict(
                False,
                f"about {rate:.0%} of test digits flagged",
                f"{on_test:.1%}",
                "calibrate on the validation inputs you are given, with the model in eval mode",
            )
        return Verdict(True)

    return Case(
        f"false-positive rate {rate:.0%} (seed {seed})",
        Probe(probe_threshold, (seed, rate), prepare=prepare_model),
        judge,
    )


# --- Exercise 4 (derive): the fast gradient sign method ----------------------------------------------


def _attack_batch(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    test = _digits(seed)[2]
    return test.inputs[:64].clone(), test.targets[:64].clone()


def probe_fgsm(fgsm_attack, seed: int, epsilon: float) -> dict:
    """The learner's attacked images, and whether the caller's images were changed in place."""
    x, y = _attack_batch(seed)
    with _one_thread():
        attacked = fgsm_attack(_fresh_model(seed), x, y, epsilon)
    original = _attack_batch(seed)[0]
    return {"attacked": attacked, "x_changed": not torch.equal(x, original)}


def _gradient_sign(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    (gradient,) = torch.autograd.grad(nn.functional.cross_entropy(model(x), y), x)
    return gradient.sign()


def _fgsm_case(params: dict) -> Case:
    seed, epsilon = params["seed"], params["epsilon"]

    def judge(report: dict) -> Verdict:
        model = _model(seed)
        x, y = _attack_batch(seed)
        got = report["attacked"]
        if report["x_changed"]:
            return Verdict(
                False,
                "x unchanged",
                "x changed in place",
                "the caller's images must stay as they were: attack a copy of them that records "
                "gradients, and return new images",
            )
        if not isinstance(got, torch.Tensor) or got.shape != x.shape:
            return Verdict(
                False,
                f"a tensor of shape {tuple(x.shape)}",
                describe(got),
                "return the attacked images, in the same shape as x",
            )
        got = got.detach().float()
        expected = fgsm(model, x, y, epsilon)
        if torch.allclose(got, expected, atol=1e-6):
            return Verdict(True)
        if got.min() < 0 or got.max() > 1:
            return Verdict(
                False,
                "pixels in [0, 1]",
                f"pixels from {got.min():.3f} to {got.max():.3f}",
                "the attacked images must still be valid images: clip them to [0, 1]",
                "are your attacked images still images the model could be sent?",
            )
        toward = (x - epsilon * _gradient_sign(model, x, y)).clamp(0, 1)
        if torch.allclose(got, toward, atol=1e-6):
            return Verdict(
                False,
                "each pixel moved to raise the loss",
                "each pixel moved to lower the loss",
                "the attack climbs the loss, it does not descend it: add the step, do not "
                "subtract it",
                "which way does an attacker want the loss to go?",
            )
        largest = (got - x).abs().max().item()
        if largest > epsilon + 1e-6:
            return Verdict(
                False,
                f"no pixel changed by more than {epsilon:g}",
                f"a change of {largest:.3g}",
                "no pixel may move more than epsilon: scale the sign of the gradient, not "
                "the gradient itself",
                "the budget bounds each pixel's change: what step uses all of it, and no more?",
            )
        typical = (got - x).abs().median().item()
        if typical < epsilon / 2:
            return Verdict(
                False,
                f"most pixels moved by epsilon ({epsilon:g})",
                f"a median change of {typical:.2g}",
                "take the sign of the gradient, not the gradient itself: small gradients "
                "must still move their pixel by epsilon",
                "the budget bounds each pixel's change: what step uses all of it, and no more?",
            )
        return Verdict(
            False,
            "the FGSM images",
            "different images",
            "the loss is the cross-entropy of the model's logits against y; differentiate it "
            "with respect to the input images, not the weights",
        )

    return Case(
        f"epsilon {epsilon:g} on 64 test digits (seed {seed})",
        Probe(probe_fgsm, (seed, epsilon), prepare=prepare_model),
        judge,
    )


# --- Exercise 5 (experiment): a better OOD detector, on inputs it never sees -------------------------

_OOD_BATCH = 50  # the detector is called on batches of this many mixed inputs


@cache
def _mixed_inputs(seed: int, glyph_seed: int, class_seed: int):
    """Test digits, uniform noise and unseen glyphs, shuffled; and what each one is."""
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
    with _one_thread():
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


_BUILD_BUDGET_SECONDS = 3.0
_FLAG_BUDGET_SECONDS = 3.0
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
            )
        rates = _flag_rates(report["flags"], _mixed_inputs(seed, glyph_seed, class_seed)[1])
        if isinstance(rates, str):
            return Verdict(
                False,
                f"a bool tensor of shape (N,) for a batch of N (here N = {_OOD_BATCH})",
                rates,
                "the detector answers one True/False per image of the batch it is given",
            )
        build, flag = report["build_seconds"], report["flag_seconds"]
        if build > _BUILD_BUDGET_SECONDS or flag > _FLAG_BUDGET_SECONDS:
            return Verdict(
                False,
                f"at most {_BUILD_BUDGET_SECONDS:g} s to build, {_FLAG_BUDGET_SECONDS:g} s to "
                "flag the hidden images",
                f"{build:.1f} s to build, {flag:.1f} s to flag",
                "over the compute budget: no training is needed; one pass of the model over "
                "the digits you are given is enough",
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
        if noise < _OOD_CAUGHT_TARGET or glyphs < _OOD_CAUGHT_TARGET:
            return Verdict(
                False,
                expected,
                got,
                "the model's confidence (softmax or energy) lets many noise images and glyphs "
                "through: score an input by how close the backbone's embedding of it (the input "
                "of the head) lies to the embeddings of the training digits",
                "a confident answer says little about whether the input looks like a digit: "
                "what else does the model compute about an input, before its head?",
            )
        return Verdict(True)

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
            for t in ("none", "flip", "extra", "missing", "flip+extra")
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
        nudge="the false-positive rate is a share of normal inputs below the threshold: which "
        "statistic of the validation scores has exactly that share below it?",
        praise="your threshold flags the chosen share of normal digits, on validation data and "
        "on test digits it never saw.",
        next_step="calibrate with the energy score instead and compare how many glyphs each "
        "threshold catches.",
        kind="derive",
        minutes=6,
    ),
    Exercise(
        id="ch6.fgsm",
        title="The fast gradient sign method",
        function_name="fgsm_attack",
        points=1,
        make_case=_fgsm_case,
        public_params=[{"seed": 0, "epsilon": 0.05}],
        nudge="to first order, the loss changes by the gradient times the change of each "
        "pixel: with each pixel's change bounded by epsilon, which change raises it most?",
        praise="your attack spends the whole budget on every pixel, in the direction that "
        "raises the loss, and keeps the images valid.",
        next_step="repeat the step ten times with a smaller step, projecting back into the "
        "epsilon-box each time (PGD), and compare the accuracy.",
        kind="derive",
        minutes=7,
    ),
    Exercise(
        id="ch6.ood_detector",
        title="An OOD detector that catches glyphs",
        function_name="build_ood_detector",
        points=1,
        make_case=_detector_case,
        public_params=[{"seed": 0, "glyph_seed": 7, "class_seed": 0, "false_positive_rate": 0.05}],
        nudge="the softmax threshold of exercise 3 catches fewer than half of the glyphs: look "
        "for a score that says how much an input looks like the training digits",
        praise="your detector keeps its false-positive rate on digits it never saw and catches "
        "nearly all noise and glyphs, within the budget.",
        next_step="measure your score's AUROC against the glyphs and compare it with the "
        "softmax score's.",
        kind="experiment",
        minutes=12,
    ),
]
