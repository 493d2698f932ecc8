"""What every checkpoint storage backend promises the chunk store, checked on each backend alike.

The backends come from ``open_storage`` with a real ``checkpoint_storage`` section: a temporary
directory for ``shared_fs``, a fresh bucket on a real moto S3 server for ``s3``.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from stalwart.checkpoint.storage import StorageBackend, StorageError, StorageNotFound, open_storage

from support import wait_for

pytestmark = pytest.mark.integration

LARGE = 17 * 1024 * 1024  # above the S3 backend's default multipart threshold (16 MiB)


@pytest.fixture(params=["shared_fs", "s3"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StorageBackend]:
    if request.param == "s3":
        server = request.getfixturevalue("s3_server")
        config = server.storage_config(server.new_bucket(), prefix="team-a/checkpoints")
    else:
        config = {"type": "shared_fs", "host_path": str(tmp_path), "storage_path": "checkpoints"}
    backend = open_storage(config)
    yield backend
    backend.close()


def _mtime(storage: StorageBackend, key: str) -> float:
    (found,) = [item for item in storage.list(key) if item.key == key]
    return found.mtime


def test_put_then_get_returns_the_same_bytes(storage: StorageBackend) -> None:
    storage.put("chunks/ab/abc", b"hello chunk")
    storage.put("manifests/m.json", memoryview(b'{"format": "stalwart-checkpoint/1"}'))

    assert storage.get("chunks/ab/abc") == b"hello chunk"
    assert storage.get("manifests/m.json") == b'{"format": "stalwart-checkpoint/1"}'


def test_put_of_an_empty_value_round_trips(storage: StorageBackend) -> None:
    storage.put("chunks/00/empty", b"")

    assert storage.exists("chunks/00/empty")
    assert storage.get("chunks/00/empty") == b""


def test_put_replaces_an_existing_value(storage: StorageBackend) -> None:
    storage.put("shards/u/rank-1.json", b"first version, longer than the second")
    storage.put("shards/u/rank-1.json", b"second")

    assert storage.get("shards/u/rank-1.json") == b"second"


def test_put_new_creates_once_and_refuses_the_second_time(storage: StorageBackend) -> None:
    assert storage.put_new("manifests/u.json", b"committed") is True
    assert storage.put_new("manifests/u.json", b"impostor") is False

    assert storage.get("manifests/u.json") == b"committed"


def test_only_one_of_racing_put_new_calls_wins(storage: StorageBackend) -> None:
    if storage.description.startswith("s3://"):
        pytest.skip("moto checks If-None-Match without a lock, so a race would test moto, not the backend")
    barrier = threading.Barrier(8)

    def commit(writer: int) -> bool:
        barrier.wait()
        return storage.put_new("manifests/race.json", f"writer {writer}".encode())

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(commit, range(8)))

    assert results.count(True) == 1
    assert storage.get("manifests/race.json") == f"writer {results.index(True)}".encode()


def test_exists_tells_present_from_absent(storage: StorageBackend) -> None:
    storage.put("chunks/ab/present", b"x")

    assert storage.exists("chunks/ab/present")
    assert not storage.exists("chunks/ab/absent")
    assert not storage.exists("chunks/cd/absent")


def test_touch_advances_the_modification_time_and_keeps_the_bytes(storage: StorageBackend) -> None:
    storage.put("chunks/ab/reused", b"chunk bytes")
    before = _mtime(storage, "chunks/ab/reused")

    # S3 keeps LastModified to the second, so poll until a touch lands in a later second.
    wait_for(
        lambda: storage.touch("chunks/ab/reused") and _mtime(storage, "chunks/ab/reused") > before,
        10,
        "touch to advance the modification time",
        interval=0.2,
    )
    assert storage.get("chunks/ab/reused") == b"chunk bytes"


def test_touch_of_a_missing_key_is_false_and_creates_nothing(storage: StorageBackend) -> None:
    assert storage.touch("chunks/ab/gone") is False
    assert not storage.exists("chunks/ab/gone")


def test_delete_removes_the_key_and_a_missing_key_is_success(storage: StorageBackend) -> None:
    storage.put("manifests/doomed.json", b"{}")

    storage.delete("manifests/doomed.json")
    storage.delete("manifests/doomed.json")
    storage.delete("manifests/never-there.json")

    assert not storage.exists("manifests/doomed.json")
    with pytest.raises(StorageNotFound):
        storage.get("manifests/doomed.json")


def test_list_returns_every_key_under_the_prefix_with_size_and_mtime(storage: StorageBackend) -> None:
    started = time.time()
    storage.put("chunks/ab/ab01", b"1" * 10)
    storage.put("chunks/ab/ab02", b"2" * 20)
    storage.put("chunks/cd/cd01", b"3" * 30)
    storage.put("manifests/u.json", b"{}")

    chunks = {item.key: item for item in storage.list("chunks/")}
    assert {key: item.size for key, item in chunks.items()} == {
        "chunks/ab/ab01": 10,
        "chunks/ab/ab02": 20,
        "chunks/cd/cd01": 30,
    }
    for item in chunks.values():
        assert started - 60 < item.mtime < time.time() + 60  # the epoch, not some other clock
    assert {item.key for item in storage.list("chunks/ab/ab0")} == {"chunks/ab/ab01", "chunks/ab/ab02"}
    assert {item.key for item in storage.list("")} == {*chunks, "manifests/u.json"}
    assert list(storage.list("shards/")) == []


def test_get_of_a_missing_key_raises_not_found_naming_it(storage: StorageBackend) -> None:
    with pytest.raises(StorageNotFound, match=r"manifests/missing\.json") as raised:
        storage.get("manifests/missing.json")

    assert isinstance(raised.value, StorageError)
    assert "\n" not in str(raised.value)


def test_large_value_round_trips(storage: StorageBackend) -> None:
    value = os.urandom(LARGE)

    storage.put("chunks/ff/large", memoryview(value))

    assert storage.get("chunks/ff/large") == value
    assert [item.size for item in storage.list("chunks/ff/large")] == [LARGE]


def test_puts_from_a_thread_pool_all_land(storage: StorageBackend) -> None:
    values = {f"chunks/{n:02x}/{n:064x}": os.urandom(64 * 1024 + n) for n in range(24)}

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda item: storage.put(*item), values.items()))
        fetched = dict(zip(values, pool.map(storage.get, values), strict=True))

    assert fetched == values
