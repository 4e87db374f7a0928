import random

import numpy as np
import pytest
import torch

from course_lib import seed_everything


def draws():
    return random.random(), np.random.rand(), torch.rand(2).tolist()


def test_same_seed_gives_the_same_numbers_in_python_numpy_and_torch():
    seed_everything(123)
    first = draws()
    seed_everything(123)
    assert draws() == first


def test_another_seed_gives_other_numbers():
    seed_everything(1)
    first = draws()
    seed_everything(2)
    assert draws() != first


def test_deterministic_mode_is_switched_on_and_can_be_left_off():
    before = torch.are_deterministic_algorithms_enabled()
    try:
        torch.use_deterministic_algorithms(False)
        seed_everything(0, deterministic=False)
        assert not torch.are_deterministic_algorithms_enabled()
        seed_everything(0)
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.backends.cudnn.benchmark is False
    finally:
        torch.use_deterministic_algorithms(before, warn_only=True)


@pytest.mark.parametrize("seed", [-1, 2**32])
def test_out_of_range_seed_is_refused_with_the_range(seed):
    with pytest.raises(ValueError, match=r"between 0 and 2\*\*32 - 1"):
        seed_everything(seed)


@pytest.mark.parametrize("seed", [1.5, "0", None, True])
def test_non_integer_seed_is_refused(seed):
    with pytest.raises(TypeError, match="seed must be an integer"):
        seed_everything(seed)
