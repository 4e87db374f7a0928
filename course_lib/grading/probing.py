"""The part of grading that runs next to the learner's code: call it, and report plain data.

A test case has two halves (see ``spec.Case``):

- its *probe* runs where the learner's function lives (the notebook's kernel). It calls the
  function on the case's inputs and returns what came out, as plain data: numbers, strings,
  lists, dicts and tensors. It never decides anything;
- its *judge* runs in the grader's own process. It compares that data with the expected
  answer, which only the grader computes, and writes the feedback.

So a submission that patches the course's grading code inside its kernel changes nothing that
decides its grade: the batch grader sends this module and each chapter's probes to the kernel as
source text and runs them in fresh namespaces, and the kernel sends back only data, which is
decoded here without running any of it (no pickle).

This module uses only the standard library and torch, because the grader ships it as text.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import sys
import sysconfig
import traceback
import types
from pathlib import Path

import torch

MAX_TENSOR_ELEMENTS = 1_000_000  # what one answer may send back


class Opaque:
    """Something the kernel could not send as data (a model, a generator...): its type and text."""

    def __init__(self, type_name: str, text: str):
        self.type_name, self.text = type_name, text

    def __repr__(self) -> str:
        return f"a {self.type_name}" + (f" ({self.text})" if self.text else "")

    def __eq__(self, other) -> bool:
        return isinstance(other, Opaque) and (self.type_name, self.text) == (
            other.type_name,
            other.text,
        )


# --- plain data: encode on one side, decode on the other --------------------------------------------


def encode(value):
    """``value`` as JSON-ready data; tensors, tuples and dicts are tagged so they come back as such."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return _encode_float(value)
    if isinstance(value, torch.Tensor):
        return _encode_tensor(value)
    if isinstance(value, list):
        return [encode(item) for item in value]
    if isinstance(value, tuple):
        return {"__tuple__": [encode(item) for item in value]}
    if isinstance(value, dict) and all(isinstance(key, str) for key in value):
        return {"__dict__": {key: encode(item) for key, item in value.items()}}
    if isinstance(value, Path):
        return {"__path__": str(value)}
    if _is_number(value):  # numpy scalars and the like
        return _number(value)
    return {"__object__": type(value).__name__, "text": _short_text(value)}


def decode(data):
    """The inverse of :func:`encode`; anything the kernel could not send comes back as Opaque."""
    if isinstance(data, list):
        return [decode(item) for item in data]
    if not isinstance(data, dict):
        return data
    if "__float__" in data:
        return float(data["__float__"])
    if "__tensor__" in data:
        return _decode_tensor(data["__tensor__"])
    if "__tuple__" in data:
        return tuple(decode(item) for item in data["__tuple__"])
    if "__dict__" in data:
        return {key: decode(item) for key, item in data["__dict__"].items()}
    if "__path__" in data:
        return Path(data["__path__"])
    if "__object__" in data:
        return Opaque(str(data["__object__"]), str(data.get("text", "")))
    raise ValueError(f"not encoded data: {sorted(data)[:5]}")


def _encode_float(value: float):
    return value if math.isfinite(value) else {"__float__": repr(value)}  # "nan", "inf", "-inf"


def _encode_tensor(tensor: torch.Tensor) -> dict:
    if tensor.numel() > MAX_TENSOR_ELEMENTS:
        raise ValueError(f"a tensor of {tensor.numel():,} elements is too large to report")
    flat = tensor.detach().cpu().flatten()
    values = [_encode_float(x) if isinstance(x, float) else x for x in flat.tolist()]
    return {
        "__tensor__": {"dtype": str(tensor.dtype), "shape": list(tensor.shape), "values": values}
    }


def _decode_tensor(data: dict) -> torch.Tensor:
    dtype = getattr(torch, str(data["dtype"]).removeprefix("torch."))
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"not a dtype: {data['dtype']!r}")
    values = [decode(x) for x in data["values"]]
    return torch.tensor(values, dtype=dtype).reshape(data["shape"])


def _is_number(value) -> bool:
    return hasattr(value, "item") and hasattr(value, "dtype") and getattr(value, "ndim", 1) == 0


def _number(value):
    item = value.item()
    return _encode_float(item) if isinstance(item, float) else item


def _short_text(value) -> str:
    try:
        text = repr(value)
    except Exception:
        return ""
    return text if len(text) <= 80 else text[:77] + "..."


# --- the generic probe -------------------------------------------------------------------------------


def call(function, *arguments):
    """Call the learner's function on ``arguments``; report its answer and which tensors it modified.

    Returns ``{"value": answer, "modified": [indices of tensor arguments changed in place]}``.
    """
    before = [a.clone() if isinstance(a, torch.Tensor) else None for a in arguments]
    value = function(*arguments)
    modified = [
        index
        for index, (argument, copy) in enumerate(zip(arguments, before, strict=True))
        if copy is not None and not torch.equal(argument, copy)
    ]
    return {"value": value, "modified": modified}


# --- running a probe: time limit, the learner's exceptions, the answer as data ------------------------


def run_probe(probe, learner_object, arguments, time_limit: float, prepare=None) -> dict:
    """Run ``probe(learner_object, *arguments)``; return an outcome, always plain data.

    ``prepare(*arguments)``, when given, runs first and outside the time limit (to build a model
    or load data the case needs). Both run on one torch thread. An outcome is ``{"status": "value", "value": ...}`` or
    ``{"status": s, "error": ..., "where": ...}`` with ``s`` one of ``"not attempted"``,
    ``"timeout"``, ``"error"``.
    """
    with one_thread():
        if prepare is not None:
            prepare(*arguments)
        try:
            with _time_limit(time_limit):
                value = probe(learner_object, *arguments)
                return {"status": "value", "value": encode(value)}
        except NotImplementedError:
            return {"status": "not attempted"}
        except _ProbeTimeout:
            return {"status": "timeout"}
        except Exception as exc:  # the learner's code raised: report it as data
            return {
                "status": "error",
                "error": f"{type(exc).__name__}: {exc}",
                "where": _where(exc),
            }


@contextlib.contextmanager
def one_thread():
    """Run on one torch thread, then restore the setting: how probes run, and references.

    The course's networks are small and train fastest on one thread; with several, a grading
    machine running two kernels slowed cases 5-10x, past the time limit. Budgets are stated
    for one thread.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def grade_in_kernel(namespace: dict, payload: dict) -> None:
    """The grading cell's work, in the submission's kernel; it writes the outcomes as JSON.

    ``payload`` comes from the grader: ``modules`` (module name -> source of the modules that
    define the probes), ``jobs`` (one per case: the learner's function name, the probe's and
    the preparation's keys ``"module:function"``, encoded arguments, a time limit), ``cwd``
    and ``results_path``. The modules run here from that source, in fresh namespaces, so
    patches a submission made to the installed grading code are not used. The file is written
    even when the kernel's output stream is busy or lost.
    """
    os.chdir(payload["cwd"])
    functions = _load_probe_modules(payload["modules"])
    outcomes = []
    for job in payload["jobs"]:
        learner_object = namespace.get(job["function_name"])
        if learner_object is None:
            outcomes.append({"status": "missing"})
            continue
        try:
            arguments = decode(job["arguments"])
            prepare = functions[job["prepare"]] if job.get("prepare") else None
            outcome = run_probe(
                functions[job["probe"]], learner_object, arguments, job["time_limit"], prepare
            )
        except Exception as exc:  # the case could not be prepared here
            outcome = {"status": "error", "error": f"the grader's setup failed: {exc}"}
        outcomes.append(outcome)
    Path(payload["results_path"]).write_text(json.dumps(outcomes), encoding="utf-8")


def _load_probe_modules(sources: dict[str, str]) -> dict:
    """Run each module's source in a fresh module object; map "module:function" to functions."""
    functions = {}
    for name, source in sources.items():
        if name == __name__ or name == "course_lib.grading.probing":
            namespace = globals()  # this module, itself sent as source
        else:
            module = types.ModuleType(f"_course_grader_{name.replace('.', '_')}")
            sys.modules[module.__name__] = module  # dataclasses look their module up there
            exec(compile(source, f"<course-grader:{name}>", "exec"), module.__dict__)
            namespace = module.__dict__
        for key, value in namespace.items():
            if callable(value) and not key.startswith("__"):
                functions[f"{name}:{key}"] = value
    return functions


class _ProbeTimeout(Exception):
    pass


@contextlib.contextmanager
def _time_limit(seconds: float):
    """Raise _ProbeTimeout after ``seconds`` (POSIX main thread only; elsewhere no limit)."""
    try:
        previous = signal.signal(signal.SIGALRM, _raise_timeout)
    except (ValueError, AttributeError):  # not the main thread, or no SIGALRM (Windows)
        yield
        return
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _raise_timeout(signum, frame):
    raise _ProbeTimeout


def _where(exc: BaseException) -> str:
    """Point at the learner's line: the last frame outside installed packages and the stdlib."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if _is_learner_code(f.filename)]
    if not frames:
        return "raised inside a library call made by your code"
    frame = frames[-1]
    where = f"raised at line {frame.lineno} of your code"
    return f"{where}: {frame.line}" if frame.line else where


def _is_learner_code(filename: str) -> bool:
    library_roots = {
        sysconfig.get_paths()[key] for key in ("stdlib", "platstdlib", "purelib", "platlib")
    }
    return (
        not filename.startswith(tuple(library_roots))
        and "site-packages" not in filename
        and "/course_lib/" not in filename
        and not filename.startswith("<course-grader")
    )
