"""Slot discovery. No GPU exists on the build machines, so the GPU itself is what is faked here:
NVML through a stand-in ``pynvml`` module implementing the documented calls, and ``nvidia-smi``
through a script on PATH printing output captured from real machines in the documented format.
Everything around them (parsing, filtering, fallbacks, errors) is the real code.
"""

from __future__ import annotations

import os
import stat
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from stalwart_agent import slots as slots_module
from stalwart_agent.errors import SlotDiscoveryError
from stalwart_agent.slots import Slot, discover_slots, nvml_slots, parse_nvidia_smi, parse_visible_gpus

pytestmark = pytest.mark.unit

H100_UUIDS = [
    "GPU-5f3e2a1b-7c4d-4e9f-8a1b-2c3d4e5f6a7b",
    "GPU-0b6d8e21-94a7-4c3e-b5f1-9d2e7a6c4b10",
]
# `nvidia-smi --query-gpu=index,uuid,name,memory.total --format=csv,noheader,nounits` on a
# two-H100 machine: ", " between fields, memory in MiB.
NVIDIA_SMI_OUTPUT = (
    f"0, {H100_UUIDS[0]}, NVIDIA H100 80GB HBM3, 81559\n1, {H100_UUIDS[1]}, NVIDIA H100 80GB HBM3, 81559\n"
)


class FakeNVMLError(Exception):
    """What pynvml raises when libnvidia-ml.so is missing (NVMLError_LibraryNotFound)."""


def fake_pynvml(gpus: list[tuple[str, str, int]], *, as_bytes: bool = False, fail: bool = False) -> Any:
    """A module object with NVML's documented calls over ``(uuid, name, memory bytes)`` devices."""
    module = types.ModuleType("pynvml")
    calls: list[str] = []

    def encode(text: str) -> str | bytes:
        return text.encode() if as_bytes else text

    def nvmlInit() -> None:
        calls.append("init")
        if fail:
            raise FakeNVMLError("NVML Shared Library Not Found")

    def nvmlShutdown() -> None:
        calls.append("shutdown")

    module.nvmlInit = nvmlInit  # type: ignore[attr-defined]
    module.nvmlShutdown = nvmlShutdown  # type: ignore[attr-defined]
    module.nvmlDeviceGetCount = lambda: len(gpus)  # type: ignore[attr-defined]
    module.nvmlDeviceGetHandleByIndex = lambda i: ("handle", i)  # type: ignore[attr-defined]
    module.nvmlDeviceGetUUID = lambda h: encode(gpus[h[1]][0])  # type: ignore[attr-defined]
    module.nvmlDeviceGetName = lambda h: encode(gpus[h[1]][1])  # type: ignore[attr-defined]
    module.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(  # type: ignore[attr-defined]
        total=gpus[h[1]][2], free=gpus[h[1]][2], used=0
    )
    module.calls = calls  # type: ignore[attr-defined]
    return module


H100_BYTES = 85520809984  # what NVML reports as .total for an H100 80GB HBM3 (81559 MiB)


@pytest.mark.parametrize("as_bytes", [False, True], ids=["str-uuids", "bytes-uuids"])
def test_nvml_reports_each_gpu_with_uuid_name_and_memory(as_bytes: bool) -> None:
    nvml = fake_pynvml([(u, "NVIDIA H100 80GB HBM3", H100_BYTES) for u in H100_UUIDS], as_bytes=as_bytes)

    found = nvml_slots(nvml)

    assert found == [
        Slot(index=i, type="cuda", uuid=H100_UUIDS[i], name="NVIDIA H100 80GB HBM3", memory_mb=81559)
        for i in range(2)
    ]
    assert nvml.calls == ["init", "shutdown"]


def test_auto_prefers_nvml_and_filters_visible_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    nvml = fake_pynvml([(u, "NVIDIA H100 80GB HBM3", H100_BYTES) for u in H100_UUIDS])
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    monkeypatch.setattr(slots_module, "_query_nvidia_smi", _must_not_run)

    found = discover_slots("auto", [1], agent_id="a")

    assert [(s.index, s.uuid) for s in found] == [(1, H100_UUIDS[1])]


def test_visible_gpu_that_does_not_exist_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml([(H100_UUIDS[0], "H100", H100_BYTES)]))

    with pytest.raises(SlotDiscoveryError, match=r"no GPU with index 3 \(found: 0\)"):
        discover_slots("cuda", [3], agent_id="a")


def test_nvidia_smi_output_is_parsed() -> None:
    assert parse_nvidia_smi(NVIDIA_SMI_OUTPUT) == [
        Slot(index=i, type="cuda", uuid=H100_UUIDS[i], name="NVIDIA H100 80GB HBM3", memory_mb=81559)
        for i in range(2)
    ]


def test_nvidia_smi_tolerates_commas_in_names_and_unknown_memory() -> None:
    found = parse_nvidia_smi(f"0, {H100_UUIDS[0]}, Vendor GPU, rev 2, [N/A]\n\n")
    assert found == [Slot(index=0, type="cuda", uuid=H100_UUIDS[0], name="Vendor GPU, rev 2", memory_mb=0)]


def test_nvidia_smi_garbage_is_an_error() -> None:
    with pytest.raises(SlotDiscoveryError, match="cannot parse nvidia-smi"):
        parse_nvidia_smi("No devices were found here\n")


def test_falls_back_to_nvidia_smi_on_path_when_nvml_cannot_load(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml([], fail=True))
    smi = tmp_path / "nvidia-smi"
    smi.write_text(f"#!/bin/sh\ncat <<'OUT'\n{NVIDIA_SMI_OUTPUT}OUT\n")
    smi.chmod(smi.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")

    found = discover_slots("cuda", None, agent_id="a")

    assert [s.uuid for s in found] == H100_UUIDS
    assert {s.type for s in found} == {"cuda"}


def test_failing_nvidia_smi_means_no_gpu(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml([], fail=True))
    smi = tmp_path / "nvidia-smi"
    smi.write_text(
        "#!/bin/sh\necho 'NVIDIA-SMI has failed because it could not communicate with the driver'\nexit 9\n"
    )
    smi.chmod(smi.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")

    assert [s.type for s in discover_slots("auto", None, agent_id="a")] == ["cpu"]
    with pytest.raises(SlotDiscoveryError, match="--slot-type cuda: no NVIDIA GPU found"):
        discover_slots("cuda", None, agent_id="a")


def test_without_gpus_auto_offers_one_stable_cpu_slot(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(slots_module, "_import_nvml", lambda: None)
    monkeypatch.setattr(slots_module, "_query_nvidia_smi", lambda: None)

    first = discover_slots("auto", None, agent_id="a")
    again = discover_slots("auto", None, agent_id="a")
    other_agent = discover_slots("auto", None, agent_id="b")

    assert len(first) == 1 and first[0].type == "cpu" and first[0].memory_mb > 0
    assert first == again
    assert first[0].uuid != other_agent[0].uuid


def test_cuda_without_gpus_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(slots_module, "_import_nvml", lambda: None)
    monkeypatch.setattr(slots_module, "_query_nvidia_smi", lambda: None)

    with pytest.raises(SlotDiscoveryError, match="no NVIDIA GPU found"):
        discover_slots("cuda", None, agent_id="a")


def test_cpu_slot_type_never_looks_for_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(slots_module, "_import_nvml", _must_not_run)
    assert [s.type for s in discover_slots("cpu", None, agent_id="a")] == ["cpu"]


def test_artificial_slots_are_distinct_and_stable_per_agent() -> None:
    a = discover_slots("auto", None, 3, agent_id="a")
    assert [(s.index, s.type) for s in a] == [(0, "artificial"), (1, "artificial"), (2, "artificial")]
    assert len({s.uuid for s in a}) == 3
    assert a == discover_slots("auto", None, 3, agent_id="a")
    assert not {s.uuid for s in a} & {s.uuid for s in discover_slots("auto", None, 3, agent_id="b")}


def test_artificial_slots_do_not_combine_with_a_forced_slot_type() -> None:
    with pytest.raises(SlotDiscoveryError, match="cannot be combined"):
        discover_slots("cuda", None, 2, agent_id="a")


def test_visible_gpus_parsing() -> None:
    assert parse_visible_gpus(None) is None
    assert parse_visible_gpus(" ") is None
    assert parse_visible_gpus("0, 2") == [0, 2]
    with pytest.raises(SlotDiscoveryError, match="GPU indexes"):
        parse_visible_gpus("GPU-abc")


def _must_not_run(*args: object) -> None:
    raise AssertionError("should not be called")
