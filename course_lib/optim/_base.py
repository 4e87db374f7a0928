"""What every from-scratch optimizer shares: argument checks and the step loop."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.optim import Optimizer

_TORCH_ONLY_FLAGS = {"foreach": None, "fused": None, "capturable": False, "differentiable": False}


def check_lr(lr: float) -> None:
    if not lr >= 0.0:
        raise ValueError(f"Invalid learning rate: lr={lr} (must be >= 0)")


def check_non_negative(name: str, value: float) -> None:
    if not value >= 0.0:
        raise ValueError(f"Invalid {name}: {name}={value} (must be >= 0)")


def check_unit_interval(name: str, value: float) -> None:
    """Averaging factors (momentum, betas, alpha, rho) must lie in [0, 1)."""
    if not 0.0 <= value < 1.0:
        raise ValueError(f"Invalid {name}: {name}={value} (must be in [0, 1))")


def check_betas(betas: tuple[float, float]) -> None:
    if len(betas) != 2:
        raise ValueError(f"Invalid betas: betas={betas} (must be a pair (beta1, beta2))")
    for index, beta in enumerate(betas):
        check_unit_interval(f"betas[{index}]", beta)


def accept_torch_only_flags(flags: dict) -> None:
    """torch.optim's implementation switches are accepted only at their default values.

    The scratch optimizers are the plain single-tensor loop (torch's ``foreach=False``
    path); asking for a fused or multi-tensor kernel is an error, not silently ignored.
    """
    for name, value in flags.items():
        if name not in _TORCH_ONLY_FLAGS:
            raise TypeError(f"unexpected keyword argument {name!r}")
        if value not in (None, False):
            raise ValueError(
                f"{name}={value!r} is a torch.optim implementation switch; the course's "
                "from-scratch optimizers run the plain single-tensor loop only"
            )


class ScratchOptimizer(Optimizer):
    """A ``torch.optim.Optimizer`` whose subclasses only write ``_update``: one parameter, one step."""

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        """Update every parameter that has a gradient; return the closure's loss, if given."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is None:
                    continue
                if param.grad.is_sparse:
                    raise RuntimeError(f"{type(self).__name__} does not support sparse gradients")
                grad = -param.grad if group["maximize"] else param.grad
                self._update(param, grad, group, self.state[param])
        return loss

    def _update(self, param: torch.Tensor, grad: torch.Tensor, group: dict, state: dict) -> None:
        raise NotImplementedError
