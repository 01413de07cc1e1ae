"""experiments.runtime.hardware: torch's NVML-based CUDA check is turned off only where NVML's
library cannot be loaded, and CUDA's availability reads the same either way."""

from __future__ import annotations

import ctypes
import os

import pytest
import torch

from experiments.runtime import hardware
from experiments.runtime.hardware import NVML_CHECK, resolve_hardware, skip_a_failing_nvml_check


def _nvml_loads() -> bool:
    try:
        ctypes.CDLL(hardware.NVML_LIBRARY)
    except OSError:
        return False
    return True


@pytest.mark.skipif(_nvml_loads(), reason="this machine has NVML: the check stays on")
def test_without_nvml_the_check_is_off_and_cuda_reads_the_same(monkeypatch):
    monkeypatch.setenv(NVML_CHECK, "1")  # as Lightning's import leaves it
    with_nvml_check = torch.cuda.is_available()
    resolve_hardware({"accelerator": "cpu", "devices": 1})
    assert torch.cuda.is_available() == with_nvml_check
    assert os.environ[NVML_CHECK] == "0"


def test_a_loadable_nvml_keeps_the_check_on(monkeypatch):
    monkeypatch.setenv(NVML_CHECK, "1")
    monkeypatch.setattr(hardware, "NVML_LIBRARY", "libc.so.6")  # a library every Linux has
    assert skip_a_failing_nvml_check() is False
    assert os.environ[NVML_CHECK] == "1"


def test_a_user_setting_is_left_alone(monkeypatch):
    monkeypatch.setenv(NVML_CHECK, "0")
    assert skip_a_failing_nvml_check() is False
    monkeypatch.delenv(NVML_CHECK)  # Lightning, imported already, does not set it again
    assert skip_a_failing_nvml_check() is False
