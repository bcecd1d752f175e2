"""Shared test fixtures: device parametrisation that skips CUDA without a GPU."""
from __future__ import annotations

import pytest
import torch

import em_accel


def _cuda_ok() -> bool:
    return torch.cuda.is_available() and em_accel.cuda_available()


CUDA = pytest.param("cuda", marks=[pytest.mark.cuda,
                                   pytest.mark.skipif(not _cuda_ok(), reason="needs a CUDA GPU")])
DEVICES = ["cpu", CUDA]


@pytest.fixture(params=DEVICES)
def device(request) -> str:
    return request.param
