"""Nonlinear conjugate gradient, for smooth full-batch problems (closure-based, like LBFGS)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.optim import Optimizer

from course_lib.optim._base import check_lr

__all__ = ["ConjugateGradient"]

VARIANTS = ("PR+", "FR")


class ConjugateGradient(Optimizer):
    r"""Nonlinear conjugate gradient with a strong-Wolfe line search and restarts.

    Each search direction mixes the new steepest-descent direction with the previous one:

    .. math::
        d_0 &= -g_0, \qquad x_{k+1} = x_k + \alpha_k d_k \quad (\alpha_k \text{ from the line search}) \\
        d_{k+1} &= -g_{k+1} + \beta_{k+1} d_k, \qquad
        \beta^{FR} = \frac{g_{k+1}^\top g_{k+1}}{g_k^\top g_k}, \qquad
        \beta^{PR+} = \max\!\left(0, \frac{g_{k+1}^\top (g_{k+1} - g_k)}{g_k^\top g_k}\right)

    On a quadratic with exact line searches the directions are conjugate and the minimum of
    an n-dimensional problem is reached in at most n iterations. On other functions the
    method restarts (:math:`d = -g`) every n iterations, when :math:`\beta^{PR+}` clips to 0,
    and whenever :math:`d` is not a descent direction.

    The step :math:`\alpha_k` satisfies the strong Wolfe conditions
    :math:`f(x + \alpha d) \le f(x) + c_1 \alpha\, g^\top d` and
    :math:`|\nabla f(x + \alpha d)^\top d| \le c_2\, |g^\top d|`. A small ``c2`` makes the line
    search nearly exact (more evaluations per iteration); the default 0.4 is scipy's.

    Like ``torch.optim.LBFGS``, one call to ``step(closure)`` runs up to ``max_iter``
    iterations; ``closure`` must zero the gradients, compute the loss, call ``backward()``
    and return the loss. It is a full-batch method: with noisy mini-batch gradients the
    line search and the conjugacy both break down.
    """

    def __init__(
        self,
        params,
        lr: float = 1,
        variant: str = "PR+",
        max_iter: int = 100,
        tolerance_grad: float = 1e-7,
        tolerance_change: float = 1e-12,
        line_search: str | None = "strong_wolfe",
        c1: float = 1e-4,
        c2: float = 0.4,
        max_evaluations_per_search: int = 25,
    ):
        check_lr(lr)
        if variant not in VARIANTS:
            raise ValueError(f"Invalid variant: variant={variant!r} (choose one of {VARIANTS})")
        if line_search not in ("strong_wolfe", None):
            raise ValueError(
                f"Invalid line_search: line_search={line_search!r} (use 'strong_wolfe' or None)"
            )
        if max_iter < 1:
            raise ValueError(f"Invalid max_iter: max_iter={max_iter} (must be >= 1)")
        if not 0 < c1 < c2 < 1:
            raise ValueError(f"Invalid c1, c2: c1={c1}, c2={c2} (need 0 < c1 < c2 < 1)")
        defaults = dict(
            lr=lr,
            variant=variant,
            max_iter=max_iter,
            tolerance_grad=tolerance_grad,
            tolerance_change=tolerance_change,
            line_search=line_search,
            c1=c1,
            c2=c2,
            max_evaluations_per_search=max_evaluations_per_search,
        )
        super().__init__(params, defaults)
        if len(self.param_groups) != 1:
            raise ValueError("ConjugateGradient supports one parameter group only (like LBFGS)")
        self._params = self.param_groups[0]["params"]
        self.evaluations = 0  # function-and-gradient evaluations so far, over all steps
        self.iterations = 0

    # --- flat views of all parameters -------------------------------------------------

    def _flat_params(self) -> torch.Tensor:
        return torch.cat([p.detach().reshape(-1) for p in self._params])

    def _flat_grad(self) -> torch.Tensor:
        return torch.cat(
            [
                (p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
                for p in self._params
            ]
        )

    def _set_flat_params(self, flat: torch.Tensor) -> None:
        offset = 0
        for p in self._params:
            p.copy_(flat[offset : offset + p.numel()].view_as(p))
            offset += p.numel()

    def _evaluate(self, closure, x: torch.Tensor) -> tuple[float, torch.Tensor]:
        """f(x) and its gradient: one evaluation."""
        self._set_flat_params(x)
        with torch.enable_grad():
            loss = float(closure().detach())
        self.evaluations += 1
        return loss, self._flat_grad()

    # --- the method ---------------------------------------------------------------------

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor:
        """Run up to ``max_iter`` CG iterations; return the loss at the start."""
        if closure is None:
            raise ValueError(
                "ConjugateGradient needs a closure: step(closure), as torch.optim.LBFGS"
            )
        group = self.param_groups[0]
        x = self._flat_params()
        f, g = self._evaluate(closure, x)
        first_loss = torch.tensor(f)
        state = self.state.get("cg", {})
        d = state.get("direction", -g)
        previous_f = state.get("previous_loss")
        since_restart = state.get("since_restart", 0)

        for _ in range(group["max_iter"]):
            if g.abs().max() <= group["tolerance_grad"]:
                break
            slope = torch.dot(g, d).item()
            if slope >= 0:  # not a descent direction: restart with steepest descent
                d, slope, since_restart = -g, -torch.dot(g, g).item(), 0
            alpha = self._initial_step(f, previous_f, g, slope, group["lr"])
            if group["line_search"] == "strong_wolfe":
                alpha, f_new, g_new = self._strong_wolfe(closure, x, d, f, slope, alpha, group)
            else:
                f_new, g_new = self._evaluate(closure, x + alpha * d)
            x = x + alpha * d
            self.iterations += 1
            since_restart += 1
            if abs(f_new - f) < group["tolerance_change"] and since_restart > 1:
                f, g = f_new, g_new
                break
            beta = self._beta(g, g_new, group["variant"])
            if since_restart >= x.numel():  # a restart every n iterations
                beta, since_restart = 0.0, 0
            d = -g_new + beta * d
            previous_f, f, g = f, f_new, g_new

        self._set_flat_params(x)
        self.state["cg"] = {
            "direction": d,
            "previous_loss": previous_f,
            "since_restart": since_restart,
        }
        return first_loss

    @staticmethod
    def _beta(g: torch.Tensor, g_new: torch.Tensor, variant: str) -> float:
        g_norm2 = torch.dot(g, g).item()
        if variant == "FR":
            return torch.dot(g_new, g_new).item() / g_norm2
        return max(0.0, torch.dot(g_new, g_new - g).item() / g_norm2)

    @staticmethod
    def _initial_step(
        f: float, previous_f: float | None, g: torch.Tensor, slope: float, lr: float
    ) -> float:
        """First trial step: assume this iteration decreases f as much as the last one did."""
        if previous_f is None:  # first iteration: a step of length about lr along -g
            return lr * min(1.0, 1.01 / g.norm().item())
        return lr * min(1.0, 1.01 * 2 * (f - previous_f) / slope)

    def _strong_wolfe(self, closure, x, d, f0, slope0, alpha, group):
        """Nocedal & Wright, Algorithm 3.5: bracket a step, then zoom (Algorithm 3.6)."""
        c1, c2 = group["c1"], group["c2"]
        budget = group["max_evaluations_per_search"]
        previous = (0.0, f0, slope0, None)  # (alpha, f, slope, gradient)
        for i in range(budget):
            f_a, g_a = self._evaluate(closure, x + alpha * d)
            slope_a = torch.dot(g_a, d).item()
            current = (alpha, f_a, slope_a, g_a)
            if f_a > f0 + c1 * alpha * slope0 or (i > 0 and f_a >= previous[1]):
                return self._zoom(
                    closure, x, d, f0, slope0, previous, current, c1, c2, budget - i - 1
                )
            if abs(slope_a) <= -c2 * slope0:
                return alpha, f_a, g_a
            if slope_a >= 0:
                return self._zoom(
                    closure, x, d, f0, slope0, current, previous, c1, c2, budget - i - 1
                )
            next_alpha = _cubic_minimizer(previous[:3], current[:3])
            low, high = alpha + 0.01 * (alpha - previous[0]), 10 * alpha  # extrapolate
            previous, alpha = current, min(max(next_alpha, low), high) if next_alpha else high
        return previous[0], previous[1], previous[3]

    def _zoom(self, closure, x, d, f0, slope0, low, high, c1, c2, budget):
        """Shrink [low, high] (low: lowest f so far that satisfies the decrease condition)."""
        for _ in range(max(budget, 1)):
            a_low, a_high = low[0], high[0]
            width = a_high - a_low
            alpha = _cubic_minimizer(low[:3], high[:3])
            safe_low, safe_high = sorted((a_low + 0.1 * width, a_high - 0.1 * width))
            if alpha is None or not safe_low <= alpha <= safe_high:
                alpha = 0.5 * (a_low + a_high)
            f_a, g_a = self._evaluate(closure, x + alpha * d)
            slope_a = torch.dot(g_a, d).item()
            current = (alpha, f_a, slope_a, g_a)
            if f_a > f0 + c1 * alpha * slope0 or f_a >= low[1]:
                high = current
            else:
                if abs(slope_a) <= -c2 * slope0:
                    return alpha, f_a, g_a
                if slope_a * width >= 0:
                    high = low
                low = current
        if low[3] is None:  # never left alpha = 0: take the last point tried
            return current[0], current[1], current[3]
        return low[0], low[1], low[3]


def _cubic_minimizer(a: tuple[float, float, float], b: tuple[float, float, float]) -> float | None:
    """Minimizer of the cubic through (alpha, f, f') at two points; None when it has none."""
    (x1, f1, g1), (x2, f2, g2) = a, b
    if x1 == x2:
        return None
    d1 = g1 + g2 - 3 * (f1 - f2) / (x1 - x2)
    radicand = d1 * d1 - g1 * g2
    if radicand < 0:
        return None
    d2 = (1 if x2 > x1 else -1) * radicand**0.5
    denominator = g2 - g1 + 2 * d2
    if denominator == 0:
        return None
    return x2 - (x2 - x1) * (g2 + d2 - d1) / denominator
