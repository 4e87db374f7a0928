"""Momentum plus per-parameter scaling, with bias correction: Adam, AdamW, Adamax, NAdam.

A note on ``lerp_``: ``m.lerp_(g, 1 - beta1)`` computes ``m + (1 - beta1) * (g - m)``, which is
the moving average ``beta1 * m + (1 - beta1) * g`` written the way torch.optim writes it.
Written that way, our results match torch's bit for bit.
"""

from __future__ import annotations

import torch

from course_lib.optim._base import (
    ScratchOptimizer,
    accept_torch_only_flags,
    check_betas,
    check_lr,
    check_non_negative,
)


class Adam(ScratchOptimizer):
    r"""Adam: momentum (first moment) divided by the root of RMSprop's second moment.

    .. math::
        g_t &\leftarrow g_t + \lambda\,\theta_{t-1}
            \quad\text{(L2; with decoupled\_weight\_decay: } \theta_{t-1} \leftarrow
            (1 - \mathrm{lr}\,\lambda)\,\theta_{t-1}\text{ instead)} \\
        m_t &= \beta_1 m_{t-1} + (1 - \beta_1)\, g_t, \qquad
        v_t = \beta_2 v_{t-1} + (1 - \beta_2)\, g_t^2 \\
        \hat m_t &= m_t / (1 - \beta_1^t), \qquad
        \hat v_t = v_t / (1 - \beta_2^t) \qquad \text{(bias correction)} \\
        \hat v_t &\leftarrow \max(\hat v_{t-1}^{\max}, \hat v_t) \quad\text{(amsgrad)} \\
        \theta_t &= \theta_{t-1} - \mathrm{lr}\, \hat m_t / (\sqrt{\hat v_t} + \epsilon)

    :math:`m_0 = v_0 = 0` pulls both averages towards zero early on: at :math:`t = 1`,
    :math:`m_1 = 0.1\, g_1` and :math:`v_1 = 0.001\, g_1^2` for the default betas. Bias
    correction undoes exactly that, so the first step is :math:`\mathrm{lr}\,\mathrm{sign}(g_1)`.
    Forgetting it for :math:`m` alone makes the first step 10 times too small; forgetting
    it for both makes it :math:`0.1 / \sqrt{0.001} \approx 3.2` times too large.
    """

    def __init__(
        self,
        params,
        lr=1e-3,
        betas=(0.9, 0.999),
        eps=1e-8,
        weight_decay=0,
        amsgrad=False,
        *,
        maximize=False,
        decoupled_weight_decay=False,
        **torch_only_flags,
    ):
        check_lr(lr)
        check_betas(betas)
        check_non_negative("eps", eps)
        check_non_negative("weight_decay", weight_decay)
        accept_torch_only_flags(torch_only_flags)
        defaults = dict(
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            amsgrad=amsgrad,
            maximize=maximize,
            decoupled_weight_decay=decoupled_weight_decay,
        )
        super().__init__(params, defaults)

    def _update(self, param: torch.Tensor, grad: torch.Tensor, group: dict, state: dict) -> None:
        beta1, beta2 = group["betas"]
        lr, weight_decay = group["lr"], group["weight_decay"]
        if not state:
            state["step"] = 0
            state["exp_avg"] = torch.zeros_like(param)
            state["exp_avg_sq"] = torch.zeros_like(param)
            if group["amsgrad"]:
                state["max_exp_avg_sq"] = torch.zeros_like(param)
        state["step"] += 1
        step = state["step"]

        if weight_decay != 0:
            if group["decoupled_weight_decay"]:
                param.mul_(1 - lr * weight_decay)
            else:
                grad = grad.add(param, alpha=weight_decay)

        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        exp_avg.lerp_(grad, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)

        bias_correction1 = 1 - beta1**step
        bias_correction2_sqrt = (1 - beta2**step) ** 0.5
        if group["amsgrad"]:
            torch.maximum(state["max_exp_avg_sq"], exp_avg_sq, out=state["max_exp_avg_sq"])
            second_moment = state["max_exp_avg_sq"]
        else:
            second_moment = exp_avg_sq
        denom = (second_moment.sqrt() / bias_correction2_sqrt).add_(group["eps"])
        param.addcdiv_(exp_avg, denom, value=-lr / bias_correction1)


class AdamW(Adam):
    r"""Adam with decoupled weight decay (Loshchilov & Hutter):

    .. math::
        \theta_{t-1} \leftarrow (1 - \mathrm{lr}\,\lambda)\,\theta_{t-1}
        \quad\text{then the Adam step, with no } \lambda\theta \text{ added to } g_t.

    With plain Adam, an L2 term added to the gradient is divided by :math:`\sqrt{\hat v_t}`
    like the rest, so weights with large gradients are barely decayed. Decoupling shrinks
    every weight by the same factor.
    """

    def __init__(
        self,
        params,
        lr=1e-3,
        betas=(0.9, 0.999),
        eps=1e-8,
        weight_decay=1e-2,
        amsgrad=False,
        *,
        maximize=False,
        **torch_only_flags,
    ):
        super().__init__(
            params,
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            amsgrad=amsgrad,
            maximize=maximize,
            decoupled_weight_decay=True,
            **torch_only_flags,
        )


class Adamax(ScratchOptimizer):
    r"""Adamax: Adam with the infinity norm in place of the root mean square.

    .. math::
        g_t &\leftarrow g_t + \lambda\,\theta_{t-1} \\
        m_t &= \beta_1 m_{t-1} + (1 - \beta_1)\, g_t \\
        u_t &= \max(\beta_2\, u_{t-1},\; |g_t| + \epsilon) \\
        \theta_t &= \theta_{t-1} - \frac{\mathrm{lr}}{1 - \beta_1^t}\, \frac{m_t}{u_t}

    :math:`u_t` needs no bias correction: a maximum is not pulled towards its zero start.
    """

    def __init__(
        self,
        params,
        lr=2e-3,
        betas=(0.9, 0.999),
        eps=1e-8,
        weight_decay=0,
        *,
        maximize=False,
        **torch_only_flags,
    ):
        check_lr(lr)
        check_betas(betas)
        check_non_negative("eps", eps)
        check_non_negative("weight_decay", weight_decay)
        accept_torch_only_flags(torch_only_flags)
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, maximize=maximize)
        super().__init__(params, defaults)

    def _update(self, param: torch.Tensor, grad: torch.Tensor, group: dict, state: dict) -> None:
        beta1, beta2 = group["betas"]
        if not state:
            state["step"] = 0
            state["exp_avg"] = torch.zeros_like(param)
            state["exp_inf"] = torch.zeros_like(param)
        state["step"] += 1
        if group["weight_decay"] != 0:
            grad = grad.add(param, alpha=group["weight_decay"])
        exp_avg, exp_inf = state["exp_avg"], state["exp_inf"]
        exp_avg.lerp_(grad, 1 - beta1)
        torch.maximum(exp_inf.mul_(beta2), grad.abs().add_(group["eps"]), out=exp_inf)
        step_size = group["lr"] / (1 - beta1 ** state["step"])
        param.addcdiv_(exp_avg, exp_inf, value=-step_size)


class NAdam(ScratchOptimizer):
    r"""NAdam: Adam with Nesterov momentum (Dozat), with a warming-up momentum schedule.

    .. math::
        \beta_{1,t} &= \beta_1 \left(1 - \tfrac12\, 0.96^{\,t\,\psi}\right)
            \qquad \text{(momentum\_decay } \psi\text{)} \\
        m_t &= \beta_1 m_{t-1} + (1 - \beta_1)\, g_t, \qquad
        v_t = \beta_2 v_{t-1} + (1 - \beta_2)\, g_t^2 \\
        \theta_t &= \theta_{t-1}
            - \mathrm{lr}\, \frac{1 - \beta_{1,t}}{1 - \prod_{i \le t} \beta_{1,i}}\,
              \frac{g_t}{\sqrt{v_t / (1 - \beta_2^t)} + \epsilon}
            - \mathrm{lr}\, \frac{\beta_{1,t+1}}{1 - \prod_{i \le t+1} \beta_{1,i}}\,
              \frac{m_t}{\sqrt{v_t / (1 - \beta_2^t)} + \epsilon}

    The second term looks one step ahead with the *next* momentum :math:`\beta_{1,t+1}`, as
    Nesterov's method evaluates the gradient after the momentum step. The momentum warms up
    slowly: with the default :math:`\psi = 0.004`, :math:`\beta_{1,t}` is about
    :math:`0.45` at the first step and still about :math:`0.46` after 200 steps; it nears
    :math:`\beta_1` only after tens of thousands of steps.
    """

    def __init__(
        self,
        params,
        lr=2e-3,
        betas=(0.9, 0.999),
        eps=1e-8,
        weight_decay=0,
        momentum_decay=4e-3,
        decoupled_weight_decay=False,
        *,
        maximize=False,
        **torch_only_flags,
    ):
        check_lr(lr)
        check_betas(betas)
        check_non_negative("eps", eps)
        check_non_negative("weight_decay", weight_decay)
        check_non_negative("momentum_decay", momentum_decay)
        accept_torch_only_flags(torch_only_flags)
        defaults = dict(
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            maximize=maximize,
            momentum_decay=momentum_decay,
            decoupled_weight_decay=decoupled_weight_decay,
        )
        super().__init__(params, defaults)

    def _update(self, param: torch.Tensor, grad: torch.Tensor, group: dict, state: dict) -> None:
        beta1, beta2 = group["betas"]
        lr, weight_decay, psi = group["lr"], group["weight_decay"], group["momentum_decay"]
        if not state:
            state["step"] = 0
            # torch keeps this running product in float32; so do we, to match it bit for bit.
            state["mu_product"] = torch.ones((), dtype=torch.float32)
            state["exp_avg"] = torch.zeros_like(param)
            state["exp_avg_sq"] = torch.zeros_like(param)
        state["step"] += 1
        step = state["step"]

        if weight_decay != 0:
            if group["decoupled_weight_decay"]:
                param.mul_(1 - lr * weight_decay)
            else:
                grad = grad.add(param, alpha=weight_decay)

        mu = beta1 * (1.0 - 0.5 * (0.96 ** (step * psi)))
        mu_next = beta1 * (1.0 - 0.5 * (0.96 ** ((step + 1) * psi)))
        state["mu_product"] *= mu
        mu_product = state["mu_product"].item()
        mu_product_next = mu_product * mu_next

        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        exp_avg.lerp_(grad, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        denom = exp_avg_sq.div(1 - beta2**step).sqrt().add_(group["eps"])
        param.addcdiv_(grad, denom, value=-lr * (1.0 - mu) / (1.0 - mu_product))
        param.addcdiv_(exp_avg, denom, value=(-lr * mu_next) / (1.0 - mu_product_next))
