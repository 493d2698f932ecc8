"""Slot discovery: which devices this agent offers the master, one slot per device.

``auto`` asks NVML first (the library ``nvidia-smi`` itself uses, so it knows exactly what the driver
sees), falls back to parsing ``nvidia-smi`` when the NVML bindings cannot load the driver library,
and otherwise offers the whole machine as one CPU slot. ``--artificial-slots N`` fabricates N slots
so scheduling can be tested on a laptop.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import uuid as uuid_lib
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

import psutil

from stalwart_agent.errors import SlotDiscoveryError

log = logging.getLogger(__name__)

SlotType = Literal["cuda", "cpu", "artificial"]
SlotTypeChoice = Literal["auto", "cuda", "cpu"]

# A fixed namespace so CPU and artificial slot uuids are the same on every restart of an agent.
_SLOT_NAMESPACE = uuid_lib.UUID("6f1d3c2e-8a4b-5c7d-9e0f-1a2b3c4d5e6f")
_SMI_QUERY = ["--query-gpu=index,uuid,name,memory.total", "--format=csv,noheader,nounits"]
_MIB = 1024 * 1024


@dataclass(frozen=True)
class Slot:
    """One device the master may assign to a trial, as sent in the registration."""

    index: int
    type: SlotType
    uuid: str
    name: str
    memory_mb: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def discover_slots(
    slot_type: SlotTypeChoice = "auto",
    visible_gpus: Sequence[int] | None = None,
    artificial: int = 0,
    *,
    agent_id: str,
) -> list[Slot]:
    """The slots this agent offers; raises ``SlotDiscoveryError`` when the request cannot be met.

    ``agent_id`` makes CPU and artificial slot uuids distinct between agents sharing a machine
    (tests and ``deploy local --agents 2`` run several on one host).
    """
    if artificial < 0:
        raise SlotDiscoveryError("--artificial-slots must be 0 or more")
    if artificial:
        if slot_type != "auto":
            raise SlotDiscoveryError(f"--artificial-slots cannot be combined with --slot-type {slot_type}")
        return artificial_slots(artificial, agent_id)
    if slot_type == "cpu":
        return [cpu_slot(agent_id)]
    gpus = _find_gpus()
    if gpus is not None and visible_gpus is not None:
        gpus = _filter_visible(gpus, visible_gpus)
    if gpus:
        return gpus
    if slot_type == "cuda":
        raise SlotDiscoveryError(
            "--slot-type cuda: no NVIDIA GPU found (NVML did not initialise and nvidia-smi is not on PATH"
            " or lists none)"
            if gpus is None
            else "--slot-type cuda: --visible-gpus leaves no GPU"
        )
    if visible_gpus is not None and gpus is None:
        log.warning("--visible-gpus given but no GPU found; offering one CPU slot")
    return [cpu_slot(agent_id)]


def _find_gpus() -> list[Slot] | None:
    """GPUs from NVML, else from nvidia-smi; ``None`` when neither can see any driver."""
    nvml = _import_nvml()
    if nvml is not None:
        try:
            return nvml_slots(nvml)
        except Exception as exc:  # NVMLError has no stable import path across versions
            log.info("NVML unavailable (%s); trying nvidia-smi", exc)
    text = _query_nvidia_smi()
    if text is None:
        return None
    return parse_nvidia_smi(text)


def _import_nvml() -> ModuleType | None:
    try:
        import pynvml
    except ImportError:
        return None
    module: ModuleType = pynvml
    return module


def _query_nvidia_smi() -> str | None:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        result = subprocess.run([exe, *_SMI_QUERY], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning("nvidia-smi failed to run: %s", exc)
        return None
    if result.returncode != 0:
        # nvidia-smi on a machine without a working driver exits non-zero with a message on stdout.
        log.info("nvidia-smi exited %d: %s", result.returncode, (result.stdout + result.stderr).strip())
        return None
    return result.stdout


def nvml_slots(nvml: Any) -> list[Slot]:
    """One cuda slot per device NVML reports; raises whatever NVML raises when the driver is missing."""
    nvml.nvmlInit()
    try:
        slots = []
        for index in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            memory = nvml.nvmlDeviceGetMemoryInfo(handle)
            slots.append(
                Slot(
                    index=index,
                    type="cuda",
                    uuid=_text(nvml.nvmlDeviceGetUUID(handle)),
                    name=_text(nvml.nvmlDeviceGetName(handle)),
                    memory_mb=int(memory.total) // _MIB,
                )
            )
        return slots
    finally:
        nvml.nvmlShutdown()


def parse_nvidia_smi(text: str) -> list[Slot]:
    """Parse ``nvidia-smi --query-gpu=index,uuid,name,memory.total --format=csv,noheader,nounits``."""
    slots = []
    for line in text.splitlines():
        if not line.strip():
            continue
        fields = [field.strip() for field in line.split(",")]
        if len(fields) < 4:
            raise SlotDiscoveryError(f"cannot parse nvidia-smi output line: {line!r}")
        # A product name could hold a comma; index and uuid lead and memory ends the line.
        index, gpu_uuid, memory = fields[0], fields[1], fields[-1]
        name = ", ".join(fields[2:-1])
        try:
            memory_mb = int(float(memory))
        except ValueError:
            memory_mb = 0  # "[N/A]" on some virtual GPUs
        try:
            slots.append(Slot(index=int(index), type="cuda", uuid=gpu_uuid, name=name, memory_mb=memory_mb))
        except ValueError as exc:
            raise SlotDiscoveryError(f"cannot parse nvidia-smi output line: {line!r}") from exc
    return slots


def _filter_visible(gpus: list[Slot], visible: Sequence[int]) -> list[Slot]:
    found = {gpu.index for gpu in gpus}
    missing = [index for index in visible if index not in found]
    if missing:
        have = ",".join(str(i) for i in sorted(found)) or "none"
        raise SlotDiscoveryError(
            f"--visible-gpus: no GPU with index {','.join(map(str, missing))} (found: {have})"
        )
    return [gpu for gpu in gpus if gpu.index in set(visible)]


def parse_visible_gpus(value: str | None) -> list[int] | None:
    """``"0,1"`` → ``[0, 1]``; ``None`` or empty means every GPU."""
    if value is None or not value.strip():
        return None
    indexes = []
    for part in value.split(","):
        part = part.strip()
        if not part.isdigit():
            raise SlotDiscoveryError(f"--visible-gpus takes GPU indexes such as 0,1; got {value!r}")
        indexes.append(int(part))
    return indexes


def cpu_slot(agent_id: str) -> Slot:
    """The whole machine as one slot, for machines without GPUs."""
    cores = os.cpu_count() or 1
    return Slot(
        index=0,
        type="cpu",
        uuid=str(uuid_lib.uuid5(_SLOT_NAMESPACE, f"{machine_id()}/{agent_id}/cpu")),
        name=f"{_cpu_model()} ({cores} cores)",
        memory_mb=psutil.virtual_memory().total // _MIB,
    )


def artificial_slots(count: int, agent_id: str) -> list[Slot]:
    """``count`` slots with no device behind them, stable per agent id."""
    return [
        Slot(
            index=index,
            type="artificial",
            uuid=str(uuid_lib.uuid5(_SLOT_NAMESPACE, f"{agent_id}/artificial/{index}")),
            name="artificial",
            memory_mb=0,
        )
        for index in range(count)
    ]


def machine_id() -> str:
    """systemd's machine id when there is one (stable across renames), else the hostname."""
    for path in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        try:
            value = Path(path).read_text().strip()
        except OSError:
            continue
        if value:
            return value
    return socket.gethostname()


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "CPU"


def _text(value: str | bytes) -> str:
    # Older nvidia-ml-py releases return bytes, newer ones str; accept both.
    return value.decode() if isinstance(value, bytes) else str(value)
