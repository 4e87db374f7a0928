"""Per-parameter learning rates from the history of squared gradients: Adagrad, RMSprop, Adadelta."""

from __future__ import annotations

import torch

from course_lib.optim._base import (
    ScratchOptimizer,
    accept_torch_only_flags,
    check_lr,
    check_non_negative,
    check_unit_interval,
)


class Adagrad(ScratchOptimizer):
    r"""Adagrad: divide each coordinate's step by the root of its summed squared gradients.

    .. math::
        g_t &\leftarrow g_t + \lambda\,\theta_{t-1} \\
        \mathrm{lr}_t &= \mathrm{lr} / (1 + (t - 1)\,\eta)                     && \text{lr decay } \eta \\
        s_t &= s_{t-1} + g_t^2, \quad s_0 = \text{initial\_accumulator\_value} \\
        \theta_t &= \theta_{t-1} - \mathrm{lr}_t\, g_t / (\sqrt{s_t} + \epsilon)

    Coordinates with large past gradients take smaller steps. Because :math:`s_t` only grows,
    the effective learning rate only shrinks: fine for convex problems, often too timid for
    deep networks (RMSprop's fix: average instead of sum).
    """

    def __init__(
        self,
        params,
        lr=1e-2,
        lr_decay=0,
        weight_decay=0,
        initial_accumulator_value=0,
        eps=1e-10,
        *,
        maximize=False,
        **torch_only_flags,
    ):
        check_lr(lr)
        check_non_negative("lr_decay", lr_decay)
        check_non_negative("weight_decay", weight_decay)
        check_non_negative("initial_accumulator_value", initial_accumulator_value)
        check_non_negative("eps", eps)
        accept_torch_only_flags(torch_only_flags)
        defaults = dict(
            lr=lr,
            lr_decay=lr_decay,
            weight_decay=weight_decay,
            eps=eps,
            maximize=maximize,
            initial_accumulator_value=initial_accumulator_value,
        )
        super().__init__(params, defaults)

    def _update(self, param: torch.Tensor, grad: torch.Tensor, group: dict, state: dict) -> None:
        if not state:
            state["step"] = 0
            state["sum"] = torch.full_like(param, group["initial_accumulator_value"])
        state["step"] += 1
        if group["weight_decay"] != 0:
            grad = grad.add(param, alpha=group["weight_decay"])
        decayed_lr = group["lr"] / (1 + (state["step"] - 1) * group["lr_decay"])
        state["sum"].addcmul_(grad, grad, value=1)
        std = state["sum"].sqrt().add_(group["eps"])
        param.addcdiv_(grad, std, value=-decayed_lr)


class RMSprop(ScratchOptimizer):
    r"""RMSprop: divide by the root of a moving average of squared gradients.

    .. math::
        g_t &\leftarrow g_t + \lambda\,\theta_{t-1} \\
        v_t &= \alpha\, v_{t-1} + (1 - \alpha)\, g_t^2 \\
        \bar g_t &= \alpha\, \bar g_{t-1} + (1 - \alpha)\, g_t,\quad
        \tilde v_t = v_t - \bar g_t^2 \quad \text{(centered; otherwise } \tilde v_t = v_t) \\
        b_t &= \beta\, b_{t-1} + g_t / (\sqrt{\tilde v_t} + \epsilon), \quad
        \theta_t = \theta_{t-1} - \mathrm{lr}\, b_t \quad \text{(with momentum } \beta > 0) \\
        \theta_t &= \theta_{t-1} - \mathrm{lr}\, g_t / (\sqrt{\tilde v_t} + \epsilon) \quad
        \text{(without)}

    The moving average forgets old gradients, so the step size no longer decays to zero
    as in Adagrad. ``centered`` divides by an estimate of the gradient's variance instead.
    """

    def __init__(
        self,
        params,
        lr=1e-2,
        alpha=0.99,
        eps=1e-8,
        weight_decay=0,
        momentum=0,
        centered=False,
        *,
        maximize=False,
        **torch_only_flags,
    ):
        check_lr(lr)
        check_unit_interval("alpha", alpha)
        check_unit_interval("momentum", momentum)
        check_non_negative("eps", eps)
        check_non_negative("weight_decay", weight_decay)
        accept_torch_only_flags(torch_only_flags)
        defaults = dict(
            lr=lr,
            alpha=alpha,
            eps=eps,
            weight_decay=weight_decay,
            momentum=momentum,
            centered=centered,
            maximize=maximize,
        )
        super().__init__(params, defaults)

    def _update(self, param: torch.Tensor, grad: torch.Tensor, group: dict, state: dict) -> None:
        alpha = group["alpha"]
        if not state:
            state["step"] = 0
            state["square_avg"] = torch.zeros_like(param)
            if group["momentum"] > 0:
                state["momentum_buffer"] = torch.zeros_like(param)
            if group["centered"]:
                state["grad_avg"] = torch.zeros_like(param)
        state["step"] += 1
        if group["weight_decay"] != 0:
            grad = grad.add(param, alpha=group["weight_decay"])
        square_avg = state["square_avg"]
        square_avg.mul_(alpha).addcmul_(grad, grad, value=1 - alpha)
        if group["centered"]:
            state["grad_avg"].lerp_(grad, 1 - alpha)  # = alpha * avg + (1 - alpha) * g
            avg = square_avg.addcmul(state["grad_avg"], state["grad_avg"], value=-1).sqrt_()
        else:
            avg = square_avg.sqrt()
        avg = avg.add_(group["eps"])
        if group["momentum"] > 0:
            buffer = state["momentum_buffer"]
            buffer.mul_(group["momentum"]).addcdiv_(grad, avg)
            param.add_(buffer, alpha=-group["lr"])
        else:
            param.addcdiv_(grad, avg, value=-group["lr"])


class Adadelta(ScratchOptimizer):
    r"""Adadelta: RMSprop whose step is scaled by a moving average of past *updates*.

    .. math::
        g_t &\leftarrow g_t + \lambda\,\theta_{t-1} \\
        v_t &= \rho\, v_{t-1} + (1 - \rho)\, g_t^2 \\
        \Delta_t &= \frac{\sqrt{u_{t-1} + \epsilon}}{\sqrt{v_t + \epsilon}}\; g_t \\
        u_t &= \rho\, u_{t-1} + (1 - \rho)\, \Delta_t^2 \\
        \theta_t &= \theta_{t-1} - \mathrm{lr}\, \Delta_t

    The ratio of the two root-mean-squares gives the update the units of the parameter;
    the original paper has no learning rate (``lr=1.0``, torch's default) and presents that
    as needing no tuning. In practice lr still matters: on chapter 2's digits network the
    best lr is about 10, and lr 1 scores about 1.7 times worse. Because :math:`u_0 = 0`,
    the first step is :math:`\mathrm{lr}\,\sqrt{\epsilon}/\sqrt{1 - \rho + \epsilon/g_1^2}
    \approx \mathrm{lr}\,\sqrt{\epsilon}/\sqrt{1 - \rho}`, about 0.003 lr with the
    defaults, whatever the gradient's size.
    """

    def __init__(
        self,
        params,
        lr=1.0,
        rho=0.9,
        eps=1e-6,
        weight_decay=0,
        *,
        maximize=False,
        **torch_only_flags,
    ):
        check_lr(lr)
        check_unit_interval("rho", rho)
        check_non_negative("eps", eps)
        check_non_negative("weight_decay", weight_decay)
        accept_torch_only_flags(torch_only_flags)
        defaults = dict(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay, maximize=maximize)
        super().__init__(params, defaults)

    def _update(self, param: torch.Tensor, grad: torch.Tensor, group: dict, state: dict) -> None:
        rho, eps = group["rho"], group["eps"]
        if not state:
            state["step"] = 0
            state["square_avg"] = torch.zeros_like(param)
            state["acc_delta"] = torch.zeros_like(param)
        state["step"] += 1
        if group["weight_decay"] != 0:
            grad = grad.add(param, alpha=group["weight_decay"])
        state["square_avg"].mul_(rho).addcmul_(grad, grad, value=1 - rho)
        std = state["square_avg"].add(eps).sqrt_()
        delta = state["acc_delta"].add(eps).sqrt_().div_(std).mul_(grad)
        state["acc_delta"].mul_(rho).addcmul_(delta, delta, value=1 - rho)
        param.add_(delta, alpha=-group["lr"])
