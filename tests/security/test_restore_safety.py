"""Restoring a checkpoint never runs code its author chose, unless the caller trusts the author.

The threat: another user's trial saves a checkpoint whose state holds a pickle gadget (any
picklable object is accepted by ``save_state``), and a second user's trial warm-starts from it.
Every gadget here writes a marker file when it runs. Each is saved with the real engine, or, for
opcode sequences no object pickles to, written as the skeleton of a real checkpoint with its
digests fixed, as an author who controls their own storage can. A restore must refuse it with
``UnsafeCheckpointError`` naming the type, leave the marker absent, and must neither report the
checkpoint corrupted nor fall back past it. The same bytes loaded with ``trusted=True`` do run
the gadget, so a refusal here is the allowlist at work, not a gadget that never fires.
"""

from __future__ import annotations

import collections
import copyreg
import dataclasses
import datetime
import decimal
import functools
import importlib
import json
import logging
import operator
import os
import pathlib
import pickle
import random
import shlex
import subprocess
import time
import timeit
import uuid as uuid_lib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from torch import nn

import stalwart.core
import stalwart.pytorch
from stalwart.checkpoint import (
    CheckpointWriter,
    UnsafeCheckpointError,
    load_state,
    open_storage,
    read_manifest,
)
from stalwart.checkpoint._manifest import chunk_key, digest_of
from stalwart.checkpoint.storage import StorageBackend
from stalwart.core._checkpoint import CheckpointContext
from stalwart.core._http import AllocationSession

from support import wait_for

pytestmark = pytest.mark.unit
log = logging.getLogger("test")


# --- the gadget corpus --------------------------------------------------------------------------


class Call:
    """Pickles as ``func(*args)``: how an author makes unpickling call what they like."""

    def __init__(self, func: Any, *args: Any) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple[Any, ...]:
        return (self.func, self.args)

    def __call__(self, *args: Any) -> Any:  # pickle wants a reduce function to be callable
        raise AssertionError("only ever pickled")


class Malicious:
    """A class whose construction has a side effect: the target of ``copyreg._reconstructor``."""

    def __init__(self, path: str) -> None:
        Path(path).touch()


class SetstateGadget:
    """An importable class whose ``__setstate__`` has a side effect (NEWOBJ + BUILD)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __setstate__(self, state: dict[str, Any]) -> None:
        Path(state["path"]).touch()


def _touch_code(marker: Path) -> str:
    return f"open({str(marker)!r}, 'w').close()"


def _shell(marker: Path) -> str:
    return f"touch {shlex.quote(str(marker))}"


def _os() -> Call:
    return Call(importlib.import_module, "os")


def _name(obj: Any) -> str:
    return f"{obj.__module__}.{obj.__qualname__}"


# name -> (build the gadget for a marker path, the "module.qualname" restore must refuse)
GADGETS: dict[str, tuple[Callable[[Path], object], str]] = {
    "os.system via __reduce__": (lambda m: Call(os.system, _shell(m)), _name(os.system)),
    # The finding: a module no denylist thought of. (A timeit.Timer only compiles its statement;
    # timeit.timeit runs it.)
    "timeit.timeit (the finding)": (
        lambda m: Call(timeit.timeit, _touch_code(m), "pass", time.perf_counter, 1),
        "timeit.timeit",
    ),
    "subprocess.Popen": (lambda m: Call(subprocess.Popen, ["touch", str(m)]), "subprocess.Popen"),
    "builtins.eval": (lambda m: Call(eval, _touch_code(m)), "builtins.eval"),
    "builtins.exec": (lambda m: Call(exec, _touch_code(m)), "builtins.exec"),
    "getattr chain: getattr(__import__('os'), 'system')(...)": (
        lambda m: Call(Call(getattr, Call(__import__, "os"), "system"), _shell(m)),
        "builtins.getattr",
    ),
    "copyreg._reconstructor with a malicious class": (
        lambda m: Call(copyreg._reconstructor, Malicious, Malicious, str(m)),  # type: ignore[attr-defined]
        "copyreg._reconstructor",
    ),
    "functools.partial": (lambda m: Call(functools.partial(os.system, _shell(m))), "functools.partial"),
    "operator.methodcaller": (
        lambda m: Call(operator.methodcaller("system", _shell(m)), _os()),
        "operator.methodcaller",
    ),
    "operator.attrgetter": (
        lambda m: Call(Call(operator.attrgetter("system"), _os()), _shell(m)),
        "operator.attrgetter",
    ),
    "__setstate__ of an importable class": (lambda m: SetstateGadget(str(m)), _name(SetstateGadget)),
}


def _storage(tmp_path: Path) -> StorageBackend:
    return open_storage({"type": "directory", "container_path": str(tmp_path / "store")})


def _save(storage: StorageBackend, state: Any) -> dict[str, Any]:
    writer = CheckpointWriter(storage)
    uuid = writer.save_state(state, steps_completed=1)
    writer.close()
    return read_manifest(storage, uuid)


def _poisoned(gadget: object) -> dict[str, Any]:
    """A plausible training state with a gadget tucked inside."""
    return {"model": collections.OrderedDict(w=torch.ones(3)), "step": 5, "extra": {"callbacks": [gadget]}}


def _cleanup(result: Any) -> None:
    for item in result["extra"]["callbacks"]:
        if isinstance(item, subprocess.Popen):
            item.wait(timeout=30)


@pytest.mark.parametrize("gadget", list(GADGETS), ids=list(GADGETS))
def test_a_gadget_in_a_checkpoint_never_runs_on_restore_and_the_error_names_its_type(
    tmp_path: Path, gadget: str
) -> None:
    build, refused = GADGETS[gadget]
    storage = _storage(tmp_path)
    marker, control = tmp_path / "pwned", tmp_path / "pwned-when-trusted"
    manifest = _save(storage, _poisoned(build(marker)))

    with pytest.raises(UnsafeCheckpointError) as caught:
        load_state(storage, manifest)
    assert caught.value.name == refused
    assert f"checkpoint {manifest['uuid']} contains a pickled object of type {refused!r}" in str(caught.value)
    assert "trusted=True only for checkpoints you made yourself" in str(caught.value)

    # The same gadget, trusted: it runs (some asynchronously), so the refusal above was real.
    trusted = _save(storage, _poisoned(build(control)))
    _cleanup(load_state(storage, read_manifest(storage, trusted["uuid"]), trusted=True))
    wait_for(control.exists, 20, f"{gadget} to run when trusted (else the test proves nothing)")
    assert not marker.exists()


def test_the_message_offers_allowed_globals_except_for_names_that_are_never_allowed(tmp_path: Path) -> None:
    storage = _storage(tmp_path)
    timer = _save(storage, _poisoned(GADGETS["timeit.timeit (the finding)"][0](tmp_path / "m")))
    pattern = (
        r"contains a pickled object of type 'timeit.timeit', which restore does not load by default; "
        r"pass allowed_globals=\['timeit.timeit'\] or trusted=True only for checkpoints you made yourself"
    )
    with pytest.raises(UnsafeCheckpointError, match=pattern):
        load_state(storage, timer)
    evil = _save(storage, _poisoned(GADGETS["builtins.eval"][0](tmp_path / "m")))
    with pytest.raises(UnsafeCheckpointError, match=r"'builtins.eval'.*; pass trusted=True only") as caught:
        load_state(storage, evil)
    assert "allowed_globals" not in str(caught.value)
    assert not (tmp_path / "m").exists()


def test_allowing_one_name_does_not_allow_what_it_would_call(tmp_path: Path) -> None:
    storage = _storage(tmp_path)
    marker = tmp_path / "pwned"
    manifest = _save(storage, _poisoned(GADGETS["copyreg._reconstructor with a malicious class"][0](marker)))
    with pytest.raises(UnsafeCheckpointError) as caught:
        load_state(storage, manifest, allowed_globals=["copyreg._reconstructor"])
    assert caught.value.name == _name(Malicious)
    gadget = _save(storage, _poisoned(SetstateGadget(str(marker))))
    with pytest.raises(UnsafeCheckpointError, match="SetstateGadget"):
        load_state(storage, gadget, allowed_globals=[_name(Config)])
    assert not marker.exists()


def test_names_that_run_code_cannot_be_allowed_and_allowed_globals_must_be_a_list(tmp_path: Path) -> None:
    storage = _storage(tmp_path)
    manifest = _save(storage, {"w": torch.ones(1)})
    for name in ("builtins.eval", "builtins.exec", "builtins.getattr", "builtins.__import__"):
        with pytest.raises(ValueError, match=rf"{name} would let a pickle run any code"):
            load_state(storage, manifest, allowed_globals=[name])
    with pytest.raises(ValueError, match=r"a list of 'module\.qualname' names"):
        load_state(storage, manifest, allowed_globals="timeit.Timer")
    with pytest.raises(ValueError, match=r"is not a 'module\.qualname' name"):
        load_state(storage, manifest, allowed_globals=["Timer"])


# --- opcode sequences no object pickles to: a hand-written skeleton in a real checkpoint ------------


def _with_skeleton(storage: StorageBackend, manifest: dict[str, Any], skeleton: bytes) -> dict[str, Any]:
    """``manifest`` with its skeleton replaced by ``skeleton``: the chunk is stored under its digest
    and the entry names it, so the checkpoint verifies as its author's."""
    digest = digest_of(skeleton)
    storage.put(chunk_key(digest), skeleton)
    chunk = {"digest": digest, "size": len(skeleton), "stored": len(skeleton)}
    files = [
        {**entry, "size": len(skeleton), "chunks": [chunk]} if entry["type"] == "skeleton" else entry
        for entry in manifest["files"]
    ]
    return {**manifest, "files": files}


# BUILD on the class Counter itself, setting Counter.most_common for the whole process.
PATCH_A_CLASS = b"ccollections\nCounter\n(N}(Vmost_common\nccollections\nOrderedDict\nutb."
# BUILD on a restored tensor: Tensor.__setstate__ would install (False, None, hooks) as its state.
PATCH_A_TENSOR = b"(Vstalwart-array\nVstate/w\ntQ(I00\nNccollections\nOrderedDict\n)Rtb."


def test_build_never_sets_attributes_on_a_class(tmp_path: Path) -> None:
    storage = _storage(tmp_path)
    manifest = _with_skeleton(storage, _save(storage, {"w": torch.ones(2)}), PATCH_A_CLASS)
    original = collections.Counter.most_common
    with pytest.raises(UnsafeCheckpointError, match=r"sets attributes of the class 'collections\.Counter'"):
        load_state(storage, manifest)
    assert collections.Counter.most_common is original
    # An unpickler that only checks which globals are named would have let it through.
    try:
        pickle.loads(PATCH_A_CLASS)
        assert collections.Counter.most_common is collections.OrderedDict  # type: ignore[comparison-overlap]
    finally:
        collections.Counter.most_common = original  # type: ignore[method-assign]


def test_build_never_calls_setstate_on_a_restored_tensor(tmp_path: Path) -> None:
    storage = _storage(tmp_path)
    manifest = _with_skeleton(storage, _save(storage, {"w": torch.ones(2)}), PATCH_A_TENSOR)
    with pytest.raises(UnsafeCheckpointError) as caught:
        load_state(storage, manifest)
    assert caught.value.name == "torch.Tensor"


def test_old_protocol_opcodes_go_through_the_allowlist(tmp_path: Path) -> None:
    storage = _storage(tmp_path)
    saved = _save(storage, {"w": torch.ones(2)})
    marker, control = tmp_path / "pwned", tmp_path / "pwned-when-trusted"
    inst = _with_skeleton(storage, saved, f"(V{_shell(marker)}\nios\nsystem\n.".encode())  # protocol 0 INST
    with pytest.raises(UnsafeCheckpointError) as caught:
        load_state(storage, inst)
    assert caught.value.name == "os.system"
    load_state(
        storage, _with_skeleton(storage, saved, f"(V{_shell(control)}\nios\nsystem\n.".encode()), trusted=True
    )
    assert control.exists() and not marker.exists()
    # EXT1 reads copyreg's process-wide extension cache, which would bypass the allowlist.
    with pytest.raises(UnsafeCheckpointError) as caught:
        load_state(storage, _with_skeleton(storage, saved, b"\x80\x02\x82\x01."))
    assert caught.value.name == "copyreg extension code 1" and "allowed_globals" not in str(caught.value)


# --- what loads by default ------------------------------------------------------------------------


def _training_state() -> dict[str, Any]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 2))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)
    one_cycle = torch.optim.lr_scheduler.OneCycleLR(
        torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1), max_lr=0.1, total_steps=10
    )
    for _ in range(3):
        optimizer.zero_grad()
        model(torch.randn(5, 4)).pow(2).mean().backward()
        optimizer.step()
        scheduler.step()
    generator = torch.Generator().manual_seed(7)
    return {
        "model": model.state_dict(),  # an OrderedDict with a _metadata attribute
        "optimizer": optimizer.state_dict(),  # Adam after steps: step counts and moments
        "lr_scheduler": scheduler.state_dict(),
        "one_cycle": one_cycle.state_dict(),
        "rng": {
            "python": random.getstate(),
            "numpy": np.random.get_state(),
            "torch": torch.get_rng_state(),
            "generators": [generator.get_state()],
        },
        "generator": generator,
        "tensors": {
            "bf16": torch.randn(10).to(torch.bfloat16),
            "half": torch.randn(3, 2).half(),
            "int8": torch.arange(-3, 3, dtype=torch.int8),
            "bool": torch.tensor([True, False]),
            "complex": torch.randn(2, dtype=torch.complex64),
            "param": nn.Parameter(torch.ones(2)),
        },
        "arrays": {
            "f64": np.linspace(0, 1, 5),
            "big_endian": np.arange(6, dtype=">i4").reshape(2, 3),
            "objects": np.array([{"a": 1}, None], dtype=object),
            "structured": np.zeros(2, dtype=[("x", "<f4"), ("y", "<i8")]),
        },
        "plain": {
            "nested": [1, (2.5, "three", None), {"four": [True, b"five", bytearray(b"six")]}],
            "sets": ({1, 2}, frozenset({"a"})),
            "numbers": (complex(1, 2), decimal.Decimal("1.10"), float("inf"), 2**70),
            "ranges": (slice(1, 9, 2), range(3, 7)),
            "ordered": collections.OrderedDict([("b", 1), ("a", 2)]),
            "default": collections.defaultdict(list, {"k": [1]}),
            "deque": collections.deque([1, 2, 3], maxlen=5),
            "counter": collections.Counter("abracadabra"),
            "when": datetime.datetime(2024, 5, 1, 12, tzinfo=datetime.timezone(datetime.timedelta(hours=2))),
            "dates": (datetime.date(2024, 1, 2), datetime.time(3, 4), datetime.timedelta(days=1)),
            "id": uuid_lib.UUID("12345678-1234-5678-1234-567812345678"),
            "paths": (pathlib.PurePosixPath("/data/train"), Path("relative/file.txt")),
            "torch": (torch.float16, torch.Size([2, 3]), torch.device("cpu")),
            "numpy": (np.float32(1.5), np.int64(-3), np.dtype(">f8"), np.float16),
            "ellipsis": ...,
        },
    }


def _same(expected: Any, actual: Any, where: str = "state") -> None:
    if isinstance(expected, torch.Tensor):
        assert type(actual) is type(expected) and actual.dtype == expected.dtype, where
        assert torch.equal(actual, expected), where
    elif isinstance(expected, np.ndarray):
        assert isinstance(actual, np.ndarray) and actual.dtype == expected.dtype, where
        assert actual.tolist() == expected.tolist(), where
    elif isinstance(expected, torch.Generator):
        assert isinstance(actual, torch.Generator), where
        assert torch.equal(actual.get_state(), expected.get_state()), where
    elif isinstance(expected, dict):
        assert type(actual) is type(expected) and list(actual) == list(expected), where
        assert getattr(actual, "_metadata", None) == getattr(expected, "_metadata", None), where
        for key in expected:
            _same(expected[key], actual[key], f"{where}/{key}")
    elif isinstance(expected, list | tuple):
        assert type(actual) is type(expected) and len(actual) == len(expected), where
        for index, (e, a) in enumerate(zip(expected, actual, strict=True)):
            _same(e, a, f"{where}/{index}")
    else:
        assert type(actual) is type(expected) and actual == expected, where


def test_a_training_state_of_tensors_arrays_and_plain_values_restores_by_default(tmp_path: Path) -> None:
    storage = _storage(tmp_path)
    state = _training_state()
    loaded = load_state(storage, _save(storage, state))
    _same(state, loaded)
    assert isinstance(loaded["tensors"]["param"], nn.Parameter)
    assert loaded["plain"]["deque"].maxlen == 5 and loaded["plain"]["default"]["new"] == []

    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 2))
    model.load_state_dict(loaded["model"])
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    optimizer.load_state_dict(loaded["optimizer"])
    assert optimizer.state_dict()["state"][0]["step"].item() == 3
    random.setstate(loaded["rng"]["python"])
    np.random.set_state(loaded["rng"]["numpy"])
    torch.set_rng_state(loaded["rng"]["torch"])


@dataclasses.dataclass
class Config:
    """A harmless class of the test's own, as a user might keep in a state."""

    name: str
    warmup: torch.Tensor


def test_a_caller_who_trusts_a_class_or_the_whole_checkpoint_can_load_it(tmp_path: Path) -> None:
    storage = _storage(tmp_path)
    manifest = _save(storage, {"config": Config("cosine", torch.linspace(0, 1, 4)), "step": 2})
    with pytest.raises(UnsafeCheckpointError) as caught:
        load_state(storage, manifest)
    assert caught.value.name == _name(Config)
    for loaded in (
        load_state(storage, manifest, allowed_globals=[_name(Config)]),
        load_state(storage, manifest, trusted=True),
    ):
        assert isinstance(loaded["config"], Config) and loaded["config"].name == "cosine"
        assert torch.equal(loaded["config"].warmup, torch.linspace(0, 1, 4))


# --- through the Core API and the trainer: refused, not corrupted --------------------------------------


class FakeMaster:
    """Registers checkpoints, answers lookups and records corruption reports."""

    def __init__(self) -> None:
        self.records: dict[str, dict[str, Any]] = {}
        self.reports: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if request.method == "POST" and path.endswith("/corrupt"):
            self.reports.append(path.split("/")[-2])
            return httpx.Response(200, json={"latest_checkpoint": None})
        if request.method == "POST" and path.endswith("/checkpoints"):
            body = json.loads(request.content)
            self.records[body["uuid"]] = {**body, "state": "COMPLETED"}
            return httpx.Response(201, json=body)
        record = self.records.get(path.rsplit("/", 1)[1])
        return httpx.Response(200, json=record) if record else httpx.Response(404, json={"title": "nope"})


def _cluster_context(tmp_path: Path, master: FakeMaster, parent: str | None) -> CheckpointContext:
    return CheckpointContext(
        storage={"type": "shared_fs", "host_path": str(tmp_path), "storage_path": "ckpts"},
        session=AllocationSession("http://master.test", "token", transport=httpx.MockTransport(master)),
        trial_id=8,
        allocation_id="a-2",
        parent_uuid=parent,
        is_chief=True,
        log=log,
    )


def test_a_warm_start_from_a_poisoned_checkpoint_fails_loudly_and_reports_nothing(tmp_path: Path) -> None:
    master = FakeMaster()
    marker = tmp_path / "pwned"
    author = _cluster_context(tmp_path, master, None)
    older = author.save_state({"w": torch.zeros(2)}, steps_completed=1)
    poisoned = author.save_state(_poisoned(Call(timeit.timeit, _touch_code(marker))), steps_completed=2)
    author.close()

    victim = _cluster_context(tmp_path, master, poisoned)
    with pytest.raises(UnsafeCheckpointError, match=f"checkpoint {poisoned} contains .*'timeit.timeit'"):
        victim.load_latest_state(map_location="cpu")
    assert not marker.exists()
    assert master.reports == [] and master.records[poisoned]["state"] == "COMPLETED"
    with pytest.raises(UnsafeCheckpointError):
        victim.load_state(poisoned)
    assert victim.load_state(older)["w"].tolist() == [0.0, 0.0]
    victim.close()


@pytest.fixture
def off_cluster(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Callable[[str | None], Any]:
    for name in [n for n in os.environ if n.startswith("STALWART_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("STALWART_LOCAL_DIR", str(tmp_path / "local"))

    def init(latest: str | None = None) -> Any:
        monkeypatch.setenv("STALWART_LATEST_CHECKPOINT", latest or "")
        return stalwart.core.init()

    return init


def test_off_cluster_a_refused_checkpoint_is_not_skipped_for_a_fresh_start(
    off_cluster: Callable[[str | None], Any], tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    with off_cluster(None) as core:
        core.checkpoint.save_state({"w": torch.ones(2)}, steps_completed=1)
        poisoned = core.checkpoint.save_state(
            _poisoned(SetstateGadget(str(marker))), steps_completed=2, metadata={"note": "x"}
        )
        with pytest.raises(UnsafeCheckpointError, match="SetstateGadget"):
            core.checkpoint.load_latest_state()
        found = core.checkpoint.load_latest_state(allowed_globals=[_name(SetstateGadget)])
        assert found is not None and found[0] == poisoned and marker.exists()


def _trainer(core: Any, **kw: Any) -> stalwart.pytorch.Trainer:
    torch.manual_seed(0)
    model = nn.Linear(4, 2)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    inputs, targets = torch.randn(16, 4), torch.randint(0, 2, (16,))
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(inputs, targets), batch_size=4)
    return stalwart.pytorch.Trainer(
        core,
        model,
        optimizer,
        data,
        loss_fn=nn.functional.cross_entropy,
        lr_scheduler=torch.optim.lr_scheduler.StepLR(optimizer, step_size=1),
        checkpoint_policy="none",
        **kw,
    )


def test_the_trainer_resumes_its_own_state_by_default_and_refuses_a_poisoned_one(
    off_cluster: Callable[[str | None], Any], tmp_path: Path
) -> None:
    with off_cluster(None) as core:
        first = _trainer(core).fit(max_length=stalwart.pytorch.Batch(3))
    assert first.checkpoint is not None
    with off_cluster(first.checkpoint) as core:
        resumed = _trainer(core).fit(max_length=stalwart.pytorch.Batch(6))
    assert resumed.batches_trained == 6 and resumed.checkpoint != first.checkpoint

    marker = tmp_path / "pwned"
    with off_cluster(None) as core:
        state = core.checkpoint.load_state(resumed.checkpoint)
        state["lr_scheduler"]["hook"] = Call(os.system, _shell(marker))
        poisoned = core.checkpoint.save_state(state, steps_completed=6)
    with off_cluster(poisoned) as core, pytest.raises(UnsafeCheckpointError, match=repr(_name(os.system))):
        _trainer(core).fit(max_length=stalwart.pytorch.Batch(9))
    assert not marker.exists()
