"""Each scratch optimizer against its torch.optim namesake: 200 float32 steps, same model and data.

The goal is bit-identical parameters; anything above 1e-6 fails. `python -m course_lib.tools.parity`
prints the achieved max difference per optimizer.
"""

import pytest

from course_lib.tools.parity import CONFIGS, max_parameter_difference

CASES = [(name, kwargs) for name, settings in CONFIGS.items() for kwargs in settings]


@pytest.mark.parametrize(
    "name, kwargs",
    CASES,
    ids=[f"{n}-{'-'.join(f'{k}={v}' for k, v in kw.items()) or 'defaults'}" for n, kw in CASES],
)
def test_scratch_optimizer_matches_torch_optim(name, kwargs):
    difference = max_parameter_difference(name, kwargs, steps=200)
    assert difference <= 1e-6, f"{name}({kwargs}): max abs diff {difference:.3g} after 200 steps"


def test_parity_harness_would_notice_a_different_update():
    """Guard against a harness that compares an optimizer with itself."""
    from course_lib import optim

    class SlightlyOffSGD(optim.SGD):
        def _update(self, param, grad, group, state):
            super()._update(param, grad * 1.001, group, state)

    difference = max_parameter_difference(
        "SGD", {"lr": 0.05}, steps=20, scratch_class=SlightlyOffSGD
    )
    assert difference > 1e-6


def test_second_param_group_with_its_own_lr_is_honoured():
    difference = max_parameter_difference("Adam", {"lr": 1e-3}, steps=50, second_group={"lr": 1e-2})
    assert difference <= 1e-6
