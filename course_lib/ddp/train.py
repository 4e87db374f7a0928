"""Chapter 5's fine-tuning, data-parallel: the script torchrun starts once per worker.

    torchrun --standalone --nproc-per-node=2 -m course_lib.ddp.train --out runs/ddp

It is written the way PyTorch's DDP tutorials write it: ``init_process_group``, the model
wrapped in ``DistributedDataParallel``, a ``DistributedSampler`` with ``set_epoch`` each
epoch, logging and checkpointing on rank 0 only, and ``destroy_process_group`` in a
``finally`` block. The same file runs on CPUs (the gloo backend) and on GPUs (nccl, one GPU
per worker, chosen by ``LOCAL_RANK``).

Each step of a data-parallel run with W workers and a global batch of B examples:

    every rank r computes g_r = d/dw mean(loss over its B/W examples)
    all-reduce:  g = (g_0 + ... + g_{W-1}) / W   (= the gradient of the mean loss over all B)
    every rank applies the same optimizer step with g, so the replicas stay identical.

``train(config)`` is the whole run. Called without a process group (one ordinary process) it
is the single-process reference: the same data order, model and optimizer, on the whole
batch of B.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from course_lib.data import Split, digits_splits
from course_lib.device import pick_device
from course_lib.files import write_atomically
from course_lib.transfer import freeze, load_backbone, replace_head, unfreeze

__all__ = [
    "TrainingConfig",
    "MISTAKES",
    "CHECKPOINT_FILE",
    "RESULT_FILE",
    "LOG_FILE",
    "DATA_FILE",
    "FAIL_AT_VARIABLE",
    "training_data",
    "fine_tuning_model",
    "backend_and_device",
    "check_resumable",
    "train",
    "main",
]

CHECKPOINT_FILE = "checkpoint.pt"  # the latest committed state, written atomically by rank 0
RESULT_FILE = "result.pt"  # the final trained parameters and the step history
# the training digits, saved by run_workers so that each worker need not build them again
DATA_FILE = "data.pt"
LOG_FILE = "log.jsonl"  # every step rank 0 computed, attempt by attempt (also uncommitted ones)
# "RANK:STEP": that rank exits with status 1 just before that step, on the first attempt only
FAIL_AT_VARIABLE = "COURSE_DDP_FAIL_AT"
PID_DIR_VARIABLE = "COURSE_DDP_PID_DIR"  # set by the launcher: each worker leaves its pid there
MISTAKES = ("none", "no-set-epoch", "seed-per-rank")


@dataclass(frozen=True)
class TrainingConfig:
    """What to train: ``global_batch`` examples per step in all, split evenly over the workers.

    ``mistake`` plants a classic bug on purpose: ``"no-set-epoch"`` forgets
    ``sampler.set_epoch`` (every epoch repeats epoch 0's order), ``"seed-per-rank"`` gives
    each rank's sampler its own seed (the ranks' shards overlap and miss examples).
    """

    out: str
    examples: int = 256
    global_batch: int = 64
    epochs: int = 2
    lr: float = 0.05
    momentum: float = 0.9
    seed: int = 0
    checkpoint_every: int = 2
    mistake: str = "none"

    def __post_init__(self) -> None:
        for name in ("examples", "global_batch", "epochs", "checkpoint_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive whole number, got {value!r}")
        if self.examples % self.global_batch:
            raise ValueError(
                f"examples ({self.examples}) must be a multiple of global_batch "
                f"({self.global_batch}), so that every step sees a full batch"
            )
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if self.mistake not in MISTAKES:
            raise ValueError(f"mistake must be one of {MISTAKES}, got {self.mistake!r}")

    @property
    def steps(self) -> int:
        """Optimizer steps of the whole run: epochs x (examples / global_batch)."""
        return self.epochs * (self.examples // self.global_batch)

    def to_argv(self) -> list[str]:
        """The command-line arguments that rebuild this config in ``main``."""
        argv = []
        for field in fields(self):
            argv += [f"--{field.name.replace('_', '-')}", str(getattr(self, field.name))]
        return argv

    @classmethod
    def from_argv(cls, argv: Sequence[str] | None = None) -> TrainingConfig:
        parser = argparse.ArgumentParser(
            prog="torchrun ... -m course_lib.ddp.train", description=__doc__.splitlines()[0]
        )
        for field in fields(cls):
            flag = f"--{field.name.replace('_', '-')}"
            if field.name == "out":
                parser.add_argument(flag, required=True, help="folder for checkpoint and result")
            else:
                kind = type(field.default)
                parser.add_argument(flag, type=kind, default=field.default)
        return cls(**vars(parser.parse_args(argv)))


def training_data(examples: int = 256) -> Split:
    """The first ``examples`` training digits of chapter 5, as (N, 1, 16, 16) images."""
    train, _, _ = digits_splits(size=16, seed=0)
    if not 1 <= examples <= len(train):
        raise ValueError(f"examples must be between 1 and {len(train)}, got {examples}")
    return Split(train.inputs[:examples], train.targets[:examples])


def _training_data(out: Path, examples: int) -> Split:
    """The training digits, from ``DATA_FILE`` in ``out`` when the launcher left them there."""
    cached = out / DATA_FILE
    if cached.exists():
        inputs, targets = torch.load(cached, weights_only=True)
        if len(targets) == examples:
            return Split(inputs, targets)
    return training_data(examples)


def fine_tuning_model(seed: int = 0) -> nn.Module:
    """Chapter 5's fine-tuning: the bundled backbone, a new 10-class head, layer4 + fc trained.

    Every BatchNorm layer stays frozen (its parameters and running statistics), layer4's
    included: in train mode each rank would normalise with the statistics of its own shard
    of the batch, and the run would no longer equal one process on the whole batch.
    (``nn.SyncBatchNorm.convert_sync_batchnorm(model)`` computes the statistics over all
    ranks instead, on GPUs only: on CPUs it raises in training mode. It costs two blocking
    collectives per BatchNorm layer per step, an all-gather of the statistics in forward and
    an all-reduce in backward. On CPUs, keep BatchNorm frozen.)
    """
    torch.manual_seed(seed)  # the same new head on every rank
    model = replace_head(load_backbone("bundled"), 10)
    freeze(model)
    unfreeze(model, "layer4", "fc")
    for module in model.layer4.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            freeze(module)
    return model


def backend_and_device(local_rank: int = 0) -> tuple[str, torch.device]:
    """``("nccl", cuda:LOCAL_RANK)`` when the course would use a GPU, else ``("gloo", cpu)``.

    ``pick_device`` decides, so ``COURSE_DEVICE=cpu`` runs on gloo on a GPU machine too.
    Apple's MPS has no collective backend: those runs use the CPU.
    """
    if pick_device().type == "cuda":
        return "nccl", torch.device("cuda", local_rank)
    return "gloo", torch.device("cpu")


def train(
    config: TrainingConfig, *, device: torch.device | None = None, echo: bool = False
) -> dict:
    """Run (or resume) the training; return rank 0's result (each rank returns its own view).

    Under torchrun (a process group is initialised) the model is wrapped in DDP and each rank
    reads its shard through a DistributedSampler. Without a process group this is one
    process, world size 1, on the same order of examples. Rank 0 writes ``CHECKPOINT_FILE``
    every ``config.checkpoint_every`` steps, atomically, and ``RESULT_FILE`` at the end; when
    a checkpoint exists (a restarted run), every rank loads it and continues after its last
    committed step.

    Returns ``{"params": {name: tensor}, "history": [{"step", "epoch", "loss", "attempt"}],
    "world_size": W}``: the trained parameters (those with ``requires_grad``) and one record
    per committed step. ``echo`` prints rank 0's log lines (the torchrun script does).
    """
    device = device or torch.device("cpu")
    distributed = dist.is_available() and dist.is_initialized()
    rank = dist.get_rank() if distributed else 0
    world = dist.get_world_size() if distributed else 1
    if config.global_batch % world:
        raise ValueError(
            f"global_batch ({config.global_batch}) must divide evenly over {world} workers"
        )
    if device.type == "cuda":
        _exact_gpu_arithmetic()
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    data = _training_data(out, config.examples)
    model = fine_tuning_model(config.seed).to(device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(trainable, lr=config.lr, momentum=config.momentum)
    start, history = _resume(out / CHECKPOINT_FILE, model, optimizer, device, config)
    network = _wrap(model, device) if distributed else model
    sampler = DistributedSampler(
        TensorDataset(data.inputs, data.targets),
        num_replicas=world,
        rank=rank,
        shuffle=True,
        seed=config.seed + (rank if config.mistake == "seed-per-rank" else 0),
    )
    loader = DataLoader(sampler.dataset, batch_size=config.global_batch // world, sampler=sampler)
    steps_per_epoch = len(loader)
    loss_fn = nn.CrossEntropyLoss()
    attempt = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    for epoch in range(start // steps_per_epoch, config.epochs):
        if config.mistake != "no-set-epoch":
            sampler.set_epoch(epoch)  # a new shuffle each epoch, the same on every rank
        for index, (inputs, targets) in enumerate(loader):
            step = epoch * steps_per_epoch + index
            if step < start:
                continue  # committed before a restart
            _fail_here_if_asked(rank, step, attempt, distributed)
            started = time.perf_counter()
            loss = loss_fn(network(inputs.to(device)), targets.to(device))
            optimizer.zero_grad()
            loss.backward()  # DDP all-reduces (averages) the gradients here
            optimizer.step()
            record = {
                "step": step,
                "epoch": epoch,
                "loss": _mean_over_ranks(loss.detach(), distributed),
                "attempt": attempt,
                "seconds": time.perf_counter() - started,  # rank 0's step, all-reduce included
            }
            history.append(record)
            if rank == 0:
                _log(out, record, echo)
                if (step + 1) % config.checkpoint_every == 0 or step + 1 == config.steps:
                    _save_checkpoint(
                        out / CHECKPOINT_FILE, model, optimizer, step + 1, history, config
                    )
    result = {
        "params": {
            n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad
        },
        "history": history,
        "world_size": world,
    }
    if rank == 0:
        write_atomically(out / RESULT_FILE, lambda file: torch.save(result, file))
    return result


def _wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """DDP broadcasts rank 0's parameters at construction, then averages gradients in buckets."""
    if device.type == "cuda":
        return DistributedDataParallel(model, device_ids=[device.index])
    return DistributedDataParallel(model)


def _exact_gpu_arithmetic() -> None:
    """Full float32 on GPUs, the same kernels each run: cuDNN convolutions use TF32 by default
    (``cudnn.allow_tf32``), which would move a comparison with one process far above 1e-5."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def _resumable(config: TrainingConfig) -> dict:
    """What a checkpoint must agree on to be resumed: the config, less where it is kept."""
    return {k: v for k, v in asdict(config).items() if k != "out"}


def check_resumable(config: TrainingConfig) -> None:
    """Refuse (ValueError, one sentence) a checkpoint in ``config.out`` from another config."""
    path = Path(config.out) / CHECKPOINT_FILE
    if path.exists():
        saved = torch.load(path, map_location="cpu", weights_only=True).get("config")
        _refuse_mismatch(saved, config)


def _refuse_mismatch(saved: dict | None, config: TrainingConfig) -> None:
    wanted = _resumable(config)
    if saved != wanted:
        differ = sorted(k for k in wanted if (saved or {}).get(k) != wanted[k])
        raise ValueError(
            f"{config.out} holds a checkpoint of another run (it differs in "
            f"{', '.join(differ) or 'its config'}); give a new --out folder, or delete it"
        )


def _resume(
    path: Path, model: nn.Module, optimizer, device, config: TrainingConfig
) -> tuple[int, list[dict]]:
    """Load the last checkpoint if there is one: (steps already committed, their history).

    A checkpoint written by another config (batch, learning rate, ...) is refused."""
    if not path.exists():
        return 0, []
    state = torch.load(path, map_location=device, weights_only=True)
    _refuse_mismatch(state.get("config"), config)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    return state["step"], list(state["history"])


def _save_checkpoint(
    path: Path, model, optimizer, step: int, history: list[dict], config: TrainingConfig
) -> None:
    state = {
        "config": _resumable(config),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "step": step,
        "history": history,
    }
    write_atomically(path, lambda file: torch.save(state, file))


def _mean_over_ranks(loss: torch.Tensor, distributed: bool) -> float:
    """The loss on the whole global batch: the mean of the ranks' means (equal shard sizes)."""
    if distributed:
        loss = loss.clone()
        dist.all_reduce(loss, op=dist.ReduceOp.SUM)
        loss /= dist.get_world_size()
    return float(loss)


def _log(out: Path, record: dict, echo: bool) -> None:
    if echo:
        print(
            f"attempt {record['attempt']} step {record['step']} epoch {record['epoch']} "
            f"loss {record['loss']:.4f}",
            flush=True,
        )
    with open(out / LOG_FILE, "a", encoding="utf-8") as file:
        file.write(json.dumps(record) + "\n")


def _fail_here_if_asked(rank: int, step: int, attempt: int, distributed: bool) -> None:
    """Simulate a crash (``COURSE_DDP_FAIL_AT=RANK:STEP``) on the first attempt only.

    Every rank first meets at a barrier, so that all of them have finished (and rank 0 has
    logged) the step before: the demonstration then reads the same on every run.
    """
    wanted_rank, _, wanted_step = os.environ.get(FAIL_AT_VARIABLE, "").partition(":")
    if attempt != 0 or wanted_step != str(step):
        return
    if distributed:
        dist.barrier()
    if wanted_rank == str(rank):
        print(f"rank {rank}: simulated crash before step {step}", file=sys.stderr, flush=True)
        os._exit(1)  # no clean-up, no finally: as if the process had been killed


def _leave_pid() -> None:
    """Tell the launcher this worker's pid, so that it can end a worker torchrun leaves behind."""
    folder = os.environ.get(PID_DIR_VARIABLE)
    if folder and Path(folder).is_dir():
        (Path(folder) / str(os.getpid())).touch()


def _die_with_parent() -> None:
    """On Linux, have the kernel send SIGTERM to this worker if torchrun itself dies."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
        except OSError:
            pass


def main(argv: Sequence[str] | None = None) -> int:
    """The worker: one per rank, started by torchrun (which sets RANK, WORLD_SIZE, LOCAL_RANK)."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        print(
            "course_lib.ddp.train is started by torchrun, not directly: run `course ddp "
            "--workers 2`, or `torchrun --standalone --nproc-per-node=2 -m course_lib.ddp.train "
            "--out DIR`.",
            file=sys.stderr,
        )
        return 2
    config = TrainingConfig.from_argv(argv)
    _die_with_parent()
    _leave_pid()
    backend, device = backend_and_device(int(os.environ.get("LOCAL_RANK", "0")))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend, timeout=timedelta(seconds=120))
    try:
        result = train(config, device=device, echo=True)
        if dist.get_rank() == 0:
            print(json.dumps({"steps": len(result["history"]), "config": asdict(config)}))
    except RuntimeError as error:
        if _lost_a_peer(error):  # not this worker's fault: torchrun ends it, names the other
            time.sleep(_PEER_LOSS_WAIT_SECONDS)
        raise
    finally:
        dist.destroy_process_group()
    return 0


_PEER_LOSS_WAIT_SECONDS = 10.0


def _lost_a_peer(error: RuntimeError) -> bool:
    """A collective failed because another worker went away (gloo: "... by peer")."""
    text = str(error)
    return "by peer" in text or "Connection refused" in text or "Broken pipe" in text


if __name__ == "__main__":
    sys.exit(main())
