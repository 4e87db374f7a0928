import pytest
import torch

from course_lib import pick_device


@pytest.fixture
def no_accelerator(monkeypatch):
    monkeypatch.delenv("COURSE_DEVICE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


def test_cpu_when_there_is_no_accelerator(no_accelerator):
    assert pick_device() == torch.device("cpu")


def test_cuda_is_preferred_over_mps(no_accelerator, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert pick_device() == torch.device("cuda")


def test_mps_is_preferred_over_cpu(no_accelerator, monkeypatch):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert pick_device() == torch.device("mps")


def test_environment_variable_overrides_the_choice(no_accelerator, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("COURSE_DEVICE", "cpu")
    assert pick_device() == torch.device("cpu")


def test_unknown_device_name_is_a_clear_value_error(no_accelerator, monkeypatch):
    monkeypatch.setenv("COURSE_DEVICE", "gpu please")
    with pytest.raises(ValueError, match="COURSE_DEVICE='gpu please' is not a device"):
        pick_device()


def test_asking_for_a_missing_gpu_says_what_is_available(no_accelerator, monkeypatch):
    monkeypatch.setenv("COURSE_DEVICE", "cuda")
    with pytest.raises(RuntimeError, match=r"no such CUDA device \(available: cpu\)"):
        pick_device()


def test_asking_for_a_gpu_index_beyond_the_count(no_accelerator, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setenv("COURSE_DEVICE", "cuda:1")
    with pytest.raises(RuntimeError, match="no such CUDA device"):
        pick_device()
    monkeypatch.setenv("COURSE_DEVICE", "cuda:0")
    assert pick_device() == torch.device("cuda:0")


def test_asking_for_mps_without_it(no_accelerator, monkeypatch):
    monkeypatch.setenv("COURSE_DEVICE", "mps")
    with pytest.raises(RuntimeError, match="Metal backend is not available"):
        pick_device()
