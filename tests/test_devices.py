"""Device and dtype policy, with CUDA presence simulated so the CUDA rules are tested on any machine."""

from __future__ import annotations

import pytest
import torch

from janus_sdk.devices import resolve_device, resolve_dtype
from janus_sdk.errors import ConfigError

CPU = torch.device("cpu")
CUDA = torch.device("cuda")


@pytest.fixture
def no_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture
def fake_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two GPUs with native bf16, without initialising CUDA."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)


@pytest.mark.usefixtures("no_cuda")
def test_devices_without_cuda() -> None:
    assert resolve_device("auto") == CPU
    assert resolve_device(" CPU ") == CPU
    assert resolve_device(CPU) == CPU
    for spec in ("cuda", "cuda:0", torch.device("cuda", 1)):
        with pytest.raises(ConfigError, match=r"no CUDA GPU.*use 'cpu' or 'auto'"):
            resolve_device(spec)


@pytest.mark.usefixtures("fake_cuda")
def test_devices_with_cuda() -> None:
    assert resolve_device("auto") == CUDA
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(ConfigError, match="has 2 CUDA GPU"):
        resolve_device("cuda:2")


def test_unknown_device() -> None:
    with pytest.raises(ConfigError, match=r"unknown device 'gpu0'.*'auto', 'cpu', 'cuda'"):
        resolve_device("gpu0")


def test_dtype_names_and_aliases() -> None:
    for names, dtype in (
        (("float32", "fp32", "FP32", "torch.float32"), torch.float32),
        (("bfloat16", "bf16"), torch.bfloat16),
    ):
        for name in names:
            assert resolve_dtype(name, CPU) == dtype
    assert resolve_dtype(torch.bfloat16, CPU) == torch.bfloat16
    assert resolve_dtype("fp16", CUDA) == torch.float16


def test_auto_dtype_per_device(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_dtype("auto", CPU) == torch.float32
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert resolve_dtype("auto", CUDA) == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    assert resolve_dtype("auto", CUDA) == torch.float16  # emulated bf16 is not good enough for auto


def test_float16_on_cpu_is_refused_with_the_reason() -> None:
    for spec in ("float16", "fp16", torch.float16):
        with pytest.raises(ConfigError, match=r"no float16 kernels.*use bfloat16.*or float32"):
            resolve_dtype(spec, CPU)


def test_unknown_dtypes_list_the_valid_names() -> None:
    with pytest.raises(ConfigError) as info:
        resolve_dtype("float8", CPU)
    for name in ("'auto'", "'float32'", "'fp32'", "'bfloat16'", "'bf16'", "'float16'", "'fp16'"):
        assert name in str(info.value)
    with pytest.raises(ConfigError, match=r"torch\.int8 is not supported"):
        resolve_dtype(torch.int8, CPU)
