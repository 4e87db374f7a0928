"""Nonlinear conjugate gradient, for smooth full-batch problems (closure-based, like LBFGS)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch.optim import Optimizer

from course_lib.optim._base import check_lr

__all__ = ["ConjugateGradient"]

VARIANTS = ("PR+", "FR")


class ConjugateGradient(Optimizer):
    r"""Nonlinear conjugate gradient with a strong-Wolfe line search and restarts.

    Each search direction mixes the new steepest-descent direction with the previous one,
    with a coefficient :math:`\gamma` chosen afresh at each iteration (as in chapter 2;
    :math:`\beta` is kept for momentum, and ``lr`` is only the first trial step):

    .. math::
        d_0 &= -g_0, \qquad x_{k+1} = x_k + \alpha_k d_k \quad (\alpha_k \text{ from the line search}) \\
        d_{k+1} &= -g_{k+1} + \gamma_{k+1} d_k, \qquad
        \gamma^{FR} = \frac{g_{k+1}^\top g_{k+1}}{g_k^\top g_k}, \qquad
        \gamma^{PR+} = \max\!\left(0, \frac{g_{k+1}^\top (g_{k+1} - g_k)}{g_k^\top g_k}\right)

    On a quadratic with exact line searches the directions are conjugate and the minimum of
    an n-dimensional problem is reached in at most n iterations. On other functions the
    method restarts (:math:`d = -g`) every n iterations, when :math:`\gamma^{PR+}` clips to 0,
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
                start = _Trial(0.0, f, slope, None)
                line = _Line(closure, x, d, start, group["c1"], group["c2"])
                found = self._strong_wolfe(line, alpha, group["max_evaluations_per_search"])
                alpha, f_new, g_new = found.alpha, found.phi, found.gradient
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

    def _strong_wolfe(self, line: _Line, alpha: float, budget: int) -> _Trial:
        """Nocedal & Wright, Algorithm 3.5: bracket a step, then zoom (Algorithm 3.6).

        Along the line, phi(alpha) = f(x + alpha d) and phi'(alpha) = grad f(x + alpha d) . d.
        The strong Wolfe conditions ask for sufficient decrease, phi(alpha) <= phi(0) + c1
        alpha phi'(0), and a flat enough slope, |phi'(alpha)| <= c2 |phi'(0)|.
        """
        previous = line.start
        for i in range(budget):
            trial = self._try(line, alpha)
            if not line.decreases_enough(trial) or (i > 0 and trial.phi >= previous.phi):
                return self._zoom(line, low=previous, high=trial, budget=budget - i - 1)
            if line.flat_enough(trial):
                return trial
            if trial.slope >= 0:
                return self._zoom(line, low=trial, high=previous, budget=budget - i - 1)
            next_alpha = _cubic_minimizer(previous, trial)
            low, high = alpha + 0.01 * (alpha - previous.alpha), 10 * alpha  # extrapolate
            previous, alpha = trial, min(max(next_alpha, low), high) if next_alpha else high
        return previous

    def _zoom(self, line: _Line, low: _Trial, high: _Trial, budget: int) -> _Trial:
        """Shrink the bracket [low, high]; ``low`` is the best point so far that decreases enough."""
        for _ in range(max(budget, 1)):
            width = high.alpha - low.alpha
            alpha = _cubic_minimizer(low, high)
            safe_low, safe_high = sorted((low.alpha + 0.1 * width, high.alpha - 0.1 * width))
            if alpha is None or not safe_low <= alpha <= safe_high:
                alpha = 0.5 * (low.alpha + high.alpha)
            trial = self._try(line, alpha)
            if not line.decreases_enough(trial) or trial.phi >= low.phi:
                high = trial
            else:
                if line.flat_enough(trial):
                    return trial
                if trial.slope * width >= 0:
                    high = low
                low = trial
        if low.gradient is None:  # never left alpha = 0: take the last point tried
            return trial
        return low

    def _try(self, line: _Line, alpha: float) -> _Trial:
        """Evaluate f and its gradient at x + alpha d: one evaluation."""
        loss, gradient = self._evaluate(line.closure, line.x + alpha * line.d)
        return _Trial(alpha, loss, torch.dot(gradient, line.d).item(), gradient)


class _Trial(NamedTuple):
    """A point of the line search: alpha, phi(alpha), phi'(alpha) and the full gradient there."""

    alpha: float
    phi: float
    slope: float
    gradient: torch.Tensor | None  # None at alpha = 0, where the search starts


@dataclass(frozen=True)
class _Line:
    """The line x + alpha d that the search walks, where it starts, and the Wolfe constants."""

    closure: Callable[[], torch.Tensor]
    x: torch.Tensor
    d: torch.Tensor
    start: _Trial
    c1: float
    c2: float

    def decreases_enough(self, trial: _Trial) -> bool:
        """Sufficient decrease (Armijo): phi(alpha) <= phi(0) + c1 alpha phi'(0)."""
        return trial.phi <= self.start.phi + self.c1 * trial.alpha * self.start.slope

    def flat_enough(self, trial: _Trial) -> bool:
        """Strong curvature condition: |phi'(alpha)| <= c2 |phi'(0)| (phi'(0) < 0)."""
        return abs(trial.slope) <= -self.c2 * self.start.slope


def _cubic_minimizer(a: _Trial, b: _Trial) -> float | None:
    """Minimizer of the cubic through (alpha, phi, phi') at two points; None when it has none."""
    x1, f1, g1 = a.alpha, a.phi, a.slope
    x2, f2, g2 = b.alpha, b.phi, b.slope
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
