"""Data-parallel training with torch.distributed: chapter 5's fine-tuning on several processes.

    train       the script torchrun starts once per worker (``-m course_lib.ddp.train``);
                ``train(config)`` without torchrun is the single-process reference
    launcher    torchrun from Python, in its own process group; nothing outlives a run
    runs        a run and its reference side by side; the largest parameter difference
    costs       compute against all-reduce time per step, as the model grows

The same code runs on CPUs (gloo) and GPUs (nccl, one GPU per worker). Names load on first
use, so that ``python -m course_lib.ddp.train`` does not import the script twice.
"""

from importlib import import_module

_PUBLIC = {
    "course_lib.ddp.train": (
        "TrainingConfig",
        "MISTAKES",
        "FAIL_AT_VARIABLE",
        "training_data",
        "fine_tuning_model",
        "backend_and_device",
        "check_resumable",
    ),
    "course_lib.ddp.launcher": (
        "LaunchResult",
        "SHARED_STORE_FIX",
        "WorkerFailed",
        "PortInUse",
        "launch",
        "torchrun_command",
        "usable_cores",
        "process_alive",
    ),
    "course_lib.ddp.runs": (
        "FLOAT_TOLERANCE",
        "Run",
        "run_workers",
        "run_single",
        "largest_difference",
        "rank_batches",
        "committed_steps",
    ),
    "course_lib.ddp.costs": (
        "CostRow",
        "measure_costs",
        "compute_per_example",
        "crossover_batch",
        "speedup_bound",
    ),
}
_MODULE_OF = {name: module for module, names in _PUBLIC.items() for name in names}
__all__ = list(_MODULE_OF)


def __getattr__(name: str):
    if name in _MODULE_OF:
        return getattr(import_module(_MODULE_OF[name]), name)
    raise AttributeError(f"module 'course_lib.ddp' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
