"""How the ranks of a multi-process save meet without collectives: through the storage itself.

Each non-chief rank, once its chunks are durable, creates ``shards/<uuid>/rank-<n>.json`` (its
file entries). The chief polls for all of them, merges them into the one manifest and commits it;
the other ranks poll for that manifest. If the chief fails, it leaves ``shards/<uuid>/aborted.json``
so the others stop waiting. Every wait has a deadline; GC removes shard records left behind.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from stalwart.checkpoint._manifest import abort_key, read_manifest, shard_key
from stalwart.checkpoint.storage import StorageBackend, StorageError, StorageNotFound
from stalwart.core._errors import CheckpointError, CheckpointNotFound


def _backoff(delay: float) -> float:
    time.sleep(delay)
    return min(delay * 2, 1.0)


def gather_shards(
    storage: StorageBackend, uuid: str, world_size: int, timeout: float
) -> list[dict[str, Any]]:
    """On the chief: every other rank's record of save ``uuid``, in rank order."""
    deadline = time.monotonic() + timeout
    records: dict[int, dict[str, Any]] = {}
    delay = 0.05
    while True:
        for rank in range(1, world_size):
            if rank in records:
                continue
            try:
                records[rank] = json.loads(storage.get(shard_key(uuid, rank)))
            except StorageNotFound:
                continue
            except (StorageError, ValueError) as exc:
                raise CheckpointError(f"checkpoint {uuid}: cannot read rank {rank}'s part: {exc}") from exc
        if len(records) == world_size - 1:
            return [records[rank] for rank in sorted(records)]
        if time.monotonic() + delay > deadline:
            missing = sorted(set(range(1, world_size)) - set(records))
            raise CheckpointError(
                f"checkpoint {uuid}: ranks {missing} did not save their part within {timeout:.0f} s"
            )
        delay = _backoff(delay)


def await_commit(storage: StorageBackend, uuid: str, timeout: float) -> dict[str, Any]:
    """On a non-chief rank: the manifest once the chief has committed it."""
    deadline = time.monotonic() + timeout
    delay = 0.05
    while True:
        try:
            return read_manifest(storage, uuid)
        except CheckpointNotFound:
            pass
        try:
            reason = json.loads(storage.get(abort_key(uuid))).get("reason")
        except (StorageNotFound, ValueError, AttributeError):
            reason = None
        if reason is not None:
            raise CheckpointError(f"checkpoint {uuid}: rank 0 could not commit it: {reason}")
        if time.monotonic() + delay > deadline:
            raise CheckpointError(f"checkpoint {uuid}: rank 0 did not commit it within {timeout:.0f} s")
        delay = _backoff(delay)


def abort(
    storage: StorageBackend,
    uuid: str,
    reason: str,
    log: logging.Logger | logging.LoggerAdapter[logging.Logger],
) -> None:
    """On the chief, after its part of save ``uuid`` failed: tell the other ranks to stop waiting."""
    try:
        storage.put_new(abort_key(uuid), json.dumps({"reason": reason}).encode())
    except StorageError as exc:
        log.warning("checkpoint %s: cannot tell the other ranks it failed: %s", uuid, exc)
