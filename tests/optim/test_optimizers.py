"""Bad arguments, conjugate gradient against scipy, and the quadratic n-step property."""

import numpy as np
import pytest
import torch
from scipy.optimize import minimize, rosen, rosen_der

from course_lib import optim
from course_lib.optim.conjugate_gradient import ConjugateGradient

PARAMS = [torch.zeros(3, requires_grad=True)]


@pytest.mark.parametrize("name", optim.TORCH_NAMESAKES)
def test_negative_lr_is_refused_naming_lr(name):
    with pytest.raises(ValueError, match="lr=-0.1"):
        getattr(optim, name)(PARAMS, lr=-0.1)


@pytest.mark.parametrize("momentum", [-0.1, 1.0, 1.5])
@pytest.mark.parametrize("name", ["SGD", "RMSprop"])
def test_momentum_outside_unit_interval_is_refused(name, momentum):
    with pytest.raises(ValueError, match=f"momentum={momentum}"):
        getattr(optim, name)(PARAMS, lr=0.1, momentum=momentum)


@pytest.mark.parametrize(
    "betas, bad",
    [((1.0, 0.999), "betas\\[0\\]"), ((0.9, -0.1), "betas\\[1\\]"), ((0.9, 1.0), "betas\\[1\\]")],
)
@pytest.mark.parametrize("name", ["Adam", "AdamW", "Adamax", "NAdam"])
def test_betas_outside_unit_interval_are_refused(name, betas, bad):
    with pytest.raises(ValueError, match=bad):
        getattr(optim, name)(PARAMS, betas=betas)


@pytest.mark.parametrize("kwargs", [{"momentum": 0}, {"momentum": 0.9, "dampening": 0.1}])
def test_nesterov_needs_momentum_and_no_dampening(kwargs):
    with pytest.raises(ValueError, match="nesterov"):
        optim.SGD(PARAMS, lr=0.1, nesterov=True, **kwargs)


@pytest.mark.parametrize("name, argument", [("RMSprop", "alpha"), ("Adadelta", "rho")])
def test_averaging_factors_outside_unit_interval(name, argument):
    with pytest.raises(ValueError, match=f"{argument}=1.2"):
        getattr(optim, name)(PARAMS, **{argument: 1.2})


def test_torch_implementation_switches_are_refused_not_ignored():
    optim.Adam(PARAMS, foreach=None, fused=None, capturable=False, differentiable=False)
    with pytest.raises(ValueError, match="foreach=True is a torch.optim implementation switch"):
        optim.Adam(PARAMS, foreach=True)
    with pytest.raises(TypeError, match="unexpected keyword argument 'betas1'"):
        optim.Adam(PARAMS, betas1=0.9)


def test_defaults_match_torch_optim():
    import inspect

    for name in optim.TORCH_NAMESAKES:
        ours = inspect.signature(getattr(optim, name).__init__).parameters
        theirs = inspect.signature(getattr(torch.optim, name).__init__).parameters
        for argument, parameter in ours.items():
            if (
                parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY)
                and argument in theirs
            ):
                assert parameter.default == theirs[argument].default, (name, argument)
        positional = [a for a, p in ours.items() if p.kind == p.POSITIONAL_OR_KEYWORD]
        assert positional == list(theirs)[: len(positional)], name


def rosenbrock_problem(dtype=torch.float64):
    x = torch.tensor([-1.2, 1.0], dtype=dtype, requires_grad=True)
    return x, lambda: (1 - x[0]) ** 2 + 100 * (x[1] - x[0] ** 2) ** 2


def minimize_with_cg(x, objective, **kwargs):
    optimizer = ConjugateGradient([x], **kwargs)

    def closure():
        optimizer.zero_grad()
        loss = objective()
        loss.backward()
        return loss

    optimizer.step(closure)
    closure()  # gradient at the final point, for the assertion (not counted)
    return optimizer


def test_cg_reaches_scipy_minimum_on_rosenbrock_within_1_2x_its_evaluations():
    reference = minimize(rosen, [-1.2, 1.0], jac=rosen_der, method="CG", options={"gtol": 1e-5})
    assert reference.success and reference.nit == 36 and reference.nfev == 78
    x, objective = rosenbrock_problem()
    cg = minimize_with_cg(x, objective, max_iter=1000, tolerance_grad=1e-5)
    assert x.grad.abs().max() <= 1e-5
    np.testing.assert_allclose(x.detach().numpy(), reference.x, atol=1e-5)
    assert cg.evaluations <= 1.2 * reference.nfev, (
        f"{cg.evaluations} evaluations vs scipy's {reference.nfev}"
    )


def test_fletcher_reeves_variant_also_converges():
    x, objective = rosenbrock_problem()
    minimize_with_cg(x, objective, variant="FR", max_iter=1000, tolerance_grad=1e-5)
    np.testing.assert_allclose(x.detach().numpy(), [1.0, 1.0], atol=1e-4)


def random_quadratic(n, condition_number, seed=0):
    generator = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, dtype=torch.float64, generator=generator))
    eigenvalues = torch.logspace(0, np.log10(condition_number), n, dtype=torch.float64)
    a = q @ torch.diag(eigenvalues) @ q.T
    b = torch.randn(n, dtype=torch.float64, generator=generator)
    return a, b


# The n-step property assumes exact line searches: a tight curvature condition gives them.
EXACT_LINE_SEARCH = {"c1": 1e-10, "c2": 1e-9}


@pytest.mark.parametrize("n, condition_number", [(2, 10), (5, 100), (10, 100)])
def test_cg_solves_an_n_dimensional_quadratic_in_at_most_n_iterations(n, condition_number):
    a, b = random_quadratic(n, condition_number)
    x = torch.zeros(n, dtype=torch.float64, requires_grad=True)
    cg = minimize_with_cg(
        x, lambda: 0.5 * x @ a @ x - b @ x, max_iter=n, tolerance_grad=1e-12, **EXACT_LINE_SEARCH
    )
    assert cg.iterations <= n
    np.testing.assert_allclose(x.detach(), torch.linalg.solve(a, b), atol=1e-8)


def test_cg_is_as_accurate_as_textbook_linear_cg_where_rounding_shows():
    """n = 20, condition 100: after n steps even exact-step CG is ~1e-5 off (finite precision).

    Ours must be no worse than textbook CG; an inexact line search would be far worse
    (about 3e-2 with the default c2 = 0.4).
    """
    n = 20
    a, b = random_quadratic(n, 100)
    x = torch.zeros(n, dtype=torch.float64, requires_grad=True)
    minimize_with_cg(
        x, lambda: 0.5 * x @ a @ x - b @ x, max_iter=n, tolerance_grad=1e-12, **EXACT_LINE_SEARCH
    )
    textbook, g = torch.zeros(n, dtype=torch.float64), -b.clone()
    d = -g
    for _ in range(n):  # linear CG with the exact step length
        alpha = -(g @ d) / (d @ a @ d)
        textbook = textbook + alpha * d
        g_new = a @ textbook - b
        d = -g_new + (g_new @ g_new) / (g @ g) * d
        g = g_new
    solution = torch.linalg.solve(a, b)
    ours_error = (x.detach() - solution).abs().max().item()
    textbook_error = (textbook - solution).abs().max().item()
    assert ours_error <= 3 * textbook_error, (ours_error, textbook_error)


def test_cg_needs_a_closure_and_valid_arguments():
    with pytest.raises(ValueError, match="needs a closure"):
        ConjugateGradient(PARAMS).step()
    with pytest.raises(ValueError, match="variant='HS'"):
        ConjugateGradient(PARAMS, variant="HS")
    with pytest.raises(ValueError, match="lr=-1"):
        ConjugateGradient(PARAMS, lr=-1)
    with pytest.raises(ValueError, match="line_search='armijo'"):
        ConjugateGradient(PARAMS, line_search="armijo")
