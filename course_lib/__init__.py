"""course_lib: the helper library of the finetune-course notebooks.

Public names (import them from here):

    seed_everything(seed)   make a run repeatable
    pick_device()           cuda > mps > cpu, or what COURSE_DEVICE says
    check_environment()     the doctor's report: is this environment ready for the course?
    chapter_map()           the chapters as a Markdown table, with time estimates
    Controls                a named group of widgets, for wiring sliders to functions
    descend_parabola(), descent_figure(), descent_controls(), describe_descent()
                            chapter 0's first widget: gradient descent on a parabola

Names load on first use, so ``course doctor`` still runs, and says what is wrong, when
torch itself cannot be imported.
"""

from importlib import import_module

__version__ = "0.1.0"

_PUBLIC = {
    "seed_everything": "course_lib.reproducibility",
    "pick_device": "course_lib.device",
    "check_environment": "course_lib.doctor",
    "chapter_map": "course_lib.chapters",
    "Controls": "course_lib.widgets",
    "descend_parabola": "course_lib.first_steps",
    "descent_figure": "course_lib.first_steps",
    "descent_controls": "course_lib.first_steps",
    "describe_descent": "course_lib.first_steps",
}
__all__ = [*_PUBLIC, "__version__"]


def __getattr__(name: str):
    if name in _PUBLIC:
        return getattr(import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'course_lib' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
