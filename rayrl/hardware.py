"""What the machine computes well: bf16 only where the hardware has it.

bf16 halves memory traffic and, on CPUs with AVX512-BF16 or AMX and on recent GPUs,
runs matrix products natively. Elsewhere it is emulated: on an AVX2-only CPU a bf16
matrix product measured 0.3 GFLOP/s against 123 GFLOP/s in float32 (2 cores,
2048 x 2048), which turned a one-second learner pass into minutes. So "auto" dtypes
pick bf16 only where it is native and float32 otherwise.
"""

from __future__ import annotations

import functools
from pathlib import Path

_BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


@functools.cache
def cpu_has_native_bf16() -> bool:
    """Whether this machine's CPU computes bf16 natively (AVX512-BF16 or AMX)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: assume not, float32 is always right
        return False
    flags = next(
        (line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), []
    )
    return any(flag in flags for flag in _BF16_CPU_FLAGS)


def native_bf16(device_type: str) -> bool:
    """Whether bf16 is native on `device_type` ("cpu" or "cuda") of this machine."""
    if device_type == "cuda":
        import torch

        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return cpu_has_native_bf16()


def resolve_dtype(name: str, device_type: str) -> str:
    """`name`, or for "auto" "bfloat16" where it is native on `device_type`, else "float32"."""
    if name != "auto":
        return name
    return "bfloat16" if native_bf16(device_type) else "float32"
