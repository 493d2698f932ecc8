"""CUDA tensors through the checkpoint engine: snapshot into pinned host buffers, restore to a device.

Runs only where a CUDA device exists (bench/gpu.sh runs it on a lent GPU machine); skipped here.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from stalwart.checkpoint import CheckpointWriter, load_state, open_storage, read_manifest, verify_checkpoint

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (none here)"),
]


def _state() -> dict[str, object]:
    gen = torch.Generator(device="cuda").manual_seed(0)
    return {
        "model": {
            "w": torch.randn(1024, 1024, device="cuda", generator=gen),
            "b16": torch.randn(4096, device="cuda", generator=gen).to(torch.bfloat16),
            "half": torch.randn(333, device="cuda", generator=gen).half(),
            "t": torch.randn(64, 64, device="cuda", generator=gen).t(),  # non-contiguous view
            "idx": torch.arange(10, device="cuda"),
        },
        "cpu": torch.ones(3),
        "step": 7,
    }


def test_cuda_state_round_trips_to_cuda_and_cpu(tmp_path: Path) -> None:
    storage = open_storage({"type": "directory", "container_path": str(tmp_path)})
    state = _state()
    writer = CheckpointWriter(storage)
    uuid = writer.save_state(state, steps_completed=7)
    # The snapshot is taken before save_state returns: changing the GPU tensors now changes nothing.
    state["model"]["w"].add_(1.0)  # type: ignore[index]
    writer.wait()
    writer.close()
    manifest = read_manifest(storage, uuid)
    verify_checkpoint(storage, manifest)
    on_gpu = load_state(storage, manifest, map_location="cuda")
    on_cpu = load_state(storage, manifest, map_location="cpu")
    expected = _state()
    for name, tensor in expected["model"].items():  # type: ignore[union-attr]
        assert on_gpu["model"][name].device.type == "cuda"
        assert on_gpu["model"][name].dtype == tensor.dtype
        assert torch.equal(on_gpu["model"][name], tensor)
        assert torch.equal(on_cpu["model"][name], tensor.cpu())
    assert on_gpu["step"] == 7
