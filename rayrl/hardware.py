"""What the machine offers: bf16 only where the hardware has it, and the memory left.

bf16 halves memory traffic and, on CPUs with AVX512-BF16 or AMX and on recent GPUs,
runs matrix products natively. Elsewhere it is emulated: on an AVX2-only CPU a bf16
matrix product measured 0.3 GFLOP/s against 123 GFLOP/s in float32 (2 cores,
2048 x 2048), which turned a one-second learner pass into minutes. So "auto" dtypes
pick bf16 only where it is native and float32 otherwise. `memory_available_fraction`
tells the roles whether to give freed memory back after a pass (`release_memory`).
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


def memory_available_fraction(
    cgroup_root: str = "/sys/fs/cgroup", self_cgroup: str = "/proc/self/cgroup"
) -> float:
    """Memory this process could still take, as a fraction of what it may take in all: the
    machine's (`MemAvailable` over `MemTotal`), or its container's where a cgroup limit is
    tighter (v2 `memory.max`, v1 `memory.limit_in_bytes`, of this process's cgroup, of
    any cgroup above it, or of the mounted root; reclaimable page cache counts as
    available, as the kernel counts it). 1.0 where neither can be read."""
    try:
        info = {
            line.split(":")[0]: int(line.split()[1]) * 1024
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith(("MemTotal:", "MemAvailable:"))
        }
        total, available = info["MemTotal"], info["MemAvailable"]
    except (OSError, KeyError, ValueError, IndexError):  # not Linux
        return 1.0
    limit = _cgroup_memory(Path(cgroup_root), self_cgroup)
    if limit is not None and limit[0] < total:
        total, available = limit[0], min(available, limit[0] - limit[1])
    return max(0.0, min(1.0, available / total)) if total > 0 else 1.0


def _cgroup_memory(root: Path, self_cgroup: str) -> tuple[int, int] | None:
    """(limit, usage less reclaimable page cache) of the memory cgroup that leaves this
    process the least room: its own or any ancestor up to the mount's root (a limit set on
    a pod or a slice binds the cgroups below it). None where no limit can be read."""
    try:
        lines = Path(self_cgroup).read_text().splitlines()
    except OSError:
        lines = []
    own = {"v2": "/", "v1": "/"}
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":
            own["v2"] = path
        elif "memory" in controllers.split(","):
            own["v1"] = path
    layouts = (
        ("v2", root, "memory.max", "memory.current", "inactive_file"),
        ("v1", root / "memory", "memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file"),
    )
    for version, base, limit_name, usage_name, cache_key in layouts:
        own_folder = base / own[version].lstrip("/")
        found = [
            got
            for folder in (own_folder, *own_folder.parents)  # up to `base`, which is among them
            if folder.is_relative_to(base)
            and (got := _cgroup_limit(folder, limit_name, usage_name, cache_key)) is not None
        ]
        if found:
            return min(found, key=lambda got: got[0] - got[1])
    return None


def _cgroup_limit(folder: Path, limit_name: str, usage_name: str, cache_key: str) -> tuple[int, int] | None:
    """(limit, usage less reclaimable page cache) of one cgroup folder; None without a limit."""
    try:
        limit = int((folder / limit_name).read_text().strip())  # "max": no limit, raises
        usage = int((folder / usage_name).read_text().strip())
    except (OSError, ValueError):
        return None
    cache = 0
    try:
        for line in (folder / "memory.stat").read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == cache_key:
                cache = int(value)
    except (OSError, ValueError):
        pass
    return limit, max(0, usage - cache)
