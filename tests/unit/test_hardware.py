""" "auto" dtypes pick bf16 only where the hardware has it."""

from pathlib import Path

import pytest

from rayrl import hardware
from rayrl.config import ConfigStore


def test_auto_follows_the_cpu_flags(monkeypatch):
    native = any(f in Path("/proc/cpuinfo").read_text().split() for f in ("avx512_bf16", "amx_bf16"))
    assert hardware.cpu_has_native_bf16() is native
    assert hardware.resolve_dtype("auto", "cpu") == ("bfloat16" if native else "float32")
    assert hardware.resolve_dtype("float16", "cpu") == "float16"  # explicit choices stand
    monkeypatch.setattr(hardware, "cpu_has_native_bf16", lambda: True)
    assert hardware.resolve_dtype("auto", "cpu") == "bfloat16"


def test_defaults_are_auto():
    config = ConfigStore()
    assert config.inference.dtype == "auto" and config.learner.autocast_dtype == "auto"


@pytest.mark.parametrize("name", ["auto", "float32"])
def test_autocast_is_a_no_op_in_float32(name, monkeypatch):
    import torch

    from rayrl.actors import modeling

    monkeypatch.setattr(hardware, "cpu_has_native_bf16", lambda: False)
    with modeling.autocast(torch.device("cpu"), name):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
    if name == "auto":
        monkeypatch.setattr(hardware, "cpu_has_native_bf16", lambda: True)
        with modeling.autocast(torch.device("cpu"), name):
            assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
