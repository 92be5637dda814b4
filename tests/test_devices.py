"""blspeech.devices.resolve_device: the one place --device is checked."""

from __future__ import annotations

import pytest
import torch

from blspeech.devices import resolve_device
from blspeech.errors import UserError


def test_cpu_and_default():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu"), local_rank=1) == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device(None).type == expected


@pytest.mark.parametrize("device, message", [("bogus", "unknown device 'bogus'"),
                                             ("meta", "unsupported device 'meta'")])
def test_bad_devices_are_user_errors(device, message):
    with pytest.raises(UserError, match=message):
        resolve_device(device)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda():
    with pytest.raises(UserError, match="CUDA is not available; use --device cpu"):
        resolve_device("cuda:0")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_index_from_local_rank():
    n = torch.cuda.device_count()
    assert resolve_device("cuda", local_rank=n - 1) == torch.device("cuda", n - 1)
    with pytest.raises(UserError, match="lower --nproc-per-node"):
        resolve_device("cuda", local_rank=n)
    with pytest.raises(UserError, match="choose another index"):
        resolve_device(f"cuda:{n}")
