"""Stochastic gradient descent, with momentum and Nesterov momentum."""

from __future__ import annotations

import torch

from course_lib.optim._base import (
    ScratchOptimizer,
    accept_torch_only_flags,
    check_lr,
    check_non_negative,
    check_unit_interval,
)


class SGD(ScratchOptimizer):
    r"""Gradient descent with optional (Nesterov) momentum and L2 weight decay.

    For every parameter :math:`\theta` with gradient :math:`g_t` at step :math:`t`:

    .. math::
        g_t &\leftarrow g_t + \lambda\,\theta_{t-1}                 && \text{weight decay } \lambda \\
        b_t &= g_t \text{ at } t = 1, \quad
        b_t = \beta\, b_{t-1} + (1 - \tau)\, g_t \text{ afterwards}    && \text{momentum } \beta,
        \text{ dampening } \tau \\
        d_t &= g_t + \beta\, b_t \text{ (Nesterov)} \quad\text{or}\quad d_t = b_t  \\
        \theta_t &= \theta_{t-1} - \mathrm{lr}\, d_t                     && \text{learning rate}

    With ``momentum=0`` it is plain gradient descent, :math:`\theta_t = \theta_{t-1} - \mathrm{lr}\, g_t`.
    """

    def __init__(
        self,
        params,
        lr=1e-3,
        momentum=0,
        dampening=0,
        weight_decay=0,
        nesterov=False,
        *,
        maximize=False,
        **torch_only_flags,
    ):
        check_lr(lr)
        check_unit_interval("momentum", momentum)
        check_non_negative("weight_decay", weight_decay)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("nesterov=True requires momentum > 0 and dampening=0")
        accept_torch_only_flags(torch_only_flags)
        defaults = dict(
            lr=lr,
            momentum=momentum,
            dampening=dampening,
            weight_decay=weight_decay,
            nesterov=nesterov,
            maximize=maximize,
        )
        super().__init__(params, defaults)

    def _update(self, param: torch.Tensor, grad: torch.Tensor, group: dict, state: dict) -> None:
        if group["weight_decay"] != 0:
            grad = grad.add(param, alpha=group["weight_decay"])
        momentum = group["momentum"]
        if momentum != 0:
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = grad.detach().clone()
            else:
                state["momentum_buffer"].mul_(momentum).add_(grad, alpha=1 - group["dampening"])
            buffer = state["momentum_buffer"]
            grad = grad.add(buffer, alpha=momentum) if group["nesterov"] else buffer
        param.add_(grad, alpha=-group["lr"])
