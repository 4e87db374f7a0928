"""course_lib: the helper library of the finetune-course notebooks. Four rooms:

The toolkit, what a learner reuses in their own projects:
    optim/          from-scratch optimizers with torch.optim's names, checked against it
    landscapes      2-D test surfaces; trajectory: an optimizer's path on one; viz: figures
    data            scikit-learn's digits as tensors, splits, subsets; glyphs: procedural images
    models, augment small networks; augmentations as transforms
    train           the training loop, its callbacks and checks, the learning-rate finder
    transfer        a pretrained backbone, a new head, freezing, per-block learning rates
    photos, photo_classifier
                    your own photos: read safely, split, fine-tuned on, predicted
    hardening/      safe loading, signing, encryption, a model registry, input guards, export
    ddp/            data-parallel training with torchrun (chapter 7)
    reproducibility, device, widgets
                    seeds, the device to use, a named group of widgets
The lessons (``course_lib.lessons``): each chapter's experiments and widget logic.
Grading (``course_lib.grading``): the engine, and the exercises by chapter.
The tools (``course_lib.tools``): the ``course`` command, notebook refresh, tests' plugins.

Names importable from here (they load on first use, so ``course doctor`` still runs, and says
what is wrong, when torch itself cannot be imported):

    seed_everything(seed)   make a run repeatable                       (toolkit)
    pick_device()           cuda > mps > cpu, or what COURSE_DEVICE says (toolkit)
    Controls                a named group of widgets                    (toolkit)
    check_environment()     is this environment ready for the course?   (tools, chapter 0)
    chapter_map()           the chapters as a Markdown table            (tools, chapter 0)
    descend_parabola(), descent_figure(), descent_controls(), describe_descent()
                            chapter 0's first widget                    (lessons, chapter 0)
"""

from importlib import import_module

__version__ = "0.1.0"

_PUBLIC = {
    "seed_everything": "course_lib.reproducibility",
    "pick_device": "course_lib.device",
    "check_environment": "course_lib.tools.doctor",
    "chapter_map": "course_lib.tools.chapters",
    "Controls": "course_lib.widgets",
    "descend_parabola": "course_lib.lessons.ch00_first_steps",
    "descent_figure": "course_lib.lessons.ch00_first_steps",
    "descent_controls": "course_lib.lessons.ch00_first_steps",
    "describe_descent": "course_lib.lessons.ch00_first_steps",
}
__all__ = [*_PUBLIC, "__version__"]


def __getattr__(name: str):
    if name in _PUBLIC:
        return getattr(import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'course_lib' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
