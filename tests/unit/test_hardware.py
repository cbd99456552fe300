"""What the machine offers: "auto" dtypes pick bf16 only where the hardware has it; the
memory left, as `release_memory="auto"` reads it."""

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


def meminfo() -> tuple[int, int]:
    info = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in open("/proc/meminfo")}
    return info["MemTotal"], info["MemAvailable"]


def test_memory_left_is_the_machines_without_a_cgroup_limit(tmp_path):
    (tmp_path / "job").mkdir()
    (tmp_path / "job" / "memory.max").write_text("max\n")  # no limit
    (tmp_path / "job" / "memory.current").write_text("123\n")
    (tmp_path / "self").write_text("0::/job\n")
    total, available = meminfo()
    got = hardware.memory_available_fraction(str(tmp_path), str(tmp_path / "self"))
    assert got == pytest.approx(available / total, abs=0.05)


GIB, MIB = 2**30, 2**20


@pytest.mark.parametrize(
    "folder, files, self_cgroup, expected",
    [
        # v2, this process's own cgroup; page cache that can be reclaimed counts as free
        (
            "job",
            {"memory.max": GIB, "memory.current": 900 * MIB, "memory.stat": f"inactive_file {100 * MIB}"},
            "0::/job",
            (GIB - 800 * MIB) / GIB,
        ),
        # v1 mounted at the container's own cgroup: the path /proc/self/cgroup names is not there
        (
            "memory",
            {
                "memory.limit_in_bytes": 2 * GIB,
                "memory.usage_in_bytes": GIB,
                "memory.stat": f"total_inactive_file {GIB // 2}",
            },
            "4:memory:/process_api/abc\n0::/",
            0.75,
        ),
    ],
    ids=["v2", "v1"],
)
def test_memory_left_is_the_containers_under_a_tighter_cgroup_limit(
    tmp_path, folder, files, self_cgroup, expected
):
    (tmp_path / folder).mkdir()
    for name, value in files.items():
        (tmp_path / folder / name).write_text(f"{value}\n")
    (tmp_path / "self").write_text(self_cgroup + "\n")
    got = hardware.memory_available_fraction(str(tmp_path), str(tmp_path / "self"))
    assert got == pytest.approx(expected)


def test_memory_left_is_bound_by_a_limit_set_above_this_processs_cgroup(tmp_path):
    # a pod-level limit: the pod's cgroup has 1 GiB with 768 MiB used; the container's own
    # cgroup below it has a looser limit, and a sibling container uses part of the pod's
    pod, own = tmp_path / "pod", tmp_path / "pod" / "ctr"
    own.mkdir(parents=True)
    (pod / "memory.max").write_text(f"{GIB}\n")
    (pod / "memory.current").write_text(f"{768 * MIB}\n")
    (own / "memory.max").write_text(f"{2 * GIB}\n")
    (own / "memory.current").write_text(f"{512 * MIB}\n")
    (tmp_path / "self").write_text("0::/pod/ctr\n")
    got = hardware.memory_available_fraction(str(tmp_path), str(tmp_path / "self"))
    assert got == pytest.approx(0.25)
    # without the pod's limit the container's own binds (these machines have more than
    # its 1.5 GiB left)
    (pod / "memory.max").write_text("max\n")
    got = hardware.memory_available_fraction(str(tmp_path), str(tmp_path / "self"))
    assert got == pytest.approx(0.75)


def test_release_memory_auto_trims_only_when_memory_is_short(monkeypatch):
    import torch

    from rayrl.actors import modeling

    trims = []
    monkeypatch.setattr(modeling, "_trim_heap", lambda: trims.append(1))
    cpu = torch.device("cpu")
    for left, expected in ((0.9, 0), (0.1, 1)):
        trims.clear()
        monkeypatch.setattr(modeling, "memory_available_fraction", lambda left=left: left)
        modeling.release_memory(cpu, "auto")
        assert len(trims) == expected
    trims.clear()
    modeling.release_memory(cpu, True)  # always, whatever is left
    modeling.release_memory(cpu, False)  # never
    modeling.release_memory(torch.device("meta"), "auto")  # off the CPU: nothing to trim
    assert len(trims) == 1
    assert ConfigStore.from_dict({}).learner.release_memory == "auto"
