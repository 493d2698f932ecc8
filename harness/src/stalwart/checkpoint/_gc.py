"""Freeing storage: delete manifests, then sweep the chunks no manifest references any more.

A sweep lists the manifests first and then each chunk directory just before deleting in it, and
keeps every unreferenced chunk younger than the grace period. A save in progress writes or
touches each of its chunks before it commits its manifest, so its chunks are young (or, once it
has committed, referenced) whenever a sweep looks at them, provided a save takes less than the
grace period.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass

from stalwart.checkpoint._manifest import check_uuid, is_digest, manifest_key
from stalwart.checkpoint.storage import CHUNKS, MANIFESTS, SHARDS, StorageBackend, StorageNotFound

logger = logging.getLogger("stalwart.checkpoint")

_MANIFEST_NAME = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\.json$")


@dataclass(frozen=True)
class SweepReport:
    """What a sweep did: chunks and leftovers deleted, chunks kept, bytes freed; ``young`` counts
    the unreferenced chunks and leftovers kept only because they were younger than the grace
    period (a later sweep must come back for them)."""

    deleted: int
    kept: int
    bytes_freed: int
    young: int = 0


def delete_manifests(storage: StorageBackend, uuids: Iterable[str]) -> int:
    """Delete the manifests of these checkpoints (a missing one counts as deleted); return how many.

    Their chunks stay until :func:`sweep_chunks` finds them unreferenced.

    Example::

        delete_manifests(storage, ["1b4e28ba-2fa1-11d2-883f-0016d3cca427"])
    """
    count = 0
    for uuid in uuids:
        storage.delete(manifest_key(check_uuid(uuid)))
        count += 1
    return count


def referenced_digests(storage: StorageBackend) -> set[str]:
    """Every chunk digest some committed manifest references."""
    digests: set[str] = set()
    for obj in storage.list(MANIFESTS):
        name = obj.key.removeprefix(MANIFESTS)
        if not _MANIFEST_NAME.match(name):
            continue
        try:
            manifest = json.loads(storage.get(obj.key))
        except StorageNotFound:
            continue  # deleted since the listing
        except ValueError:
            # Nothing can be restored from it anyway; its chunks are only kept by other manifests.
            logger.warning(
                "sweep: manifest %s in %s is not valid JSON; ignored", obj.key, storage.description
            )
            continue
        for entry in manifest.get("files") or ():
            for chunk in entry.get("chunks") or ():
                digests.add(chunk.get("digest"))
    return digests


def sweep_chunks(storage: StorageBackend, *, grace_seconds: float, now: float | None = None) -> SweepReport:
    """Delete chunks no manifest references and older than ``grace_seconds``, and leftovers of
    unfinished saves (shard records, temporary files) older than that.

    Storage errors propagate: a sweep that cannot read every manifest must not delete anything
    based on a partial view.

    Example::

        report = sweep_chunks(storage, grace_seconds=3600)
        print(report.deleted, report.bytes_freed)
    """
    now = time.time() if now is None else now
    cutoff = now - grace_seconds
    referenced = referenced_digests(storage)
    deleted = kept = freed = young = 0
    for first in range(256):
        # One directory at a time, deleting right after listing, keeps each mtime we act on fresh.
        for obj in storage.list(f"{CHUNKS}{first:02x}/"):
            digest = obj.key.rpartition("/")[2]
            if is_digest(digest) and digest in referenced:
                kept += 1
                continue
            if obj.mtime >= cutoff:
                kept += 1
                young += 1
                continue
            storage.delete(obj.key)
            deleted += 1
            freed += obj.size
    # Chunk directories hold their own temporary files, swept above; these are the other leftovers.
    for prefix in (SHARDS, MANIFESTS):
        for obj in storage.list(prefix):
            leftover = prefix == SHARDS or not _MANIFEST_NAME.match(obj.key.removeprefix(MANIFESTS))
            if leftover and obj.mtime >= cutoff:
                young += 1
            elif leftover:
                storage.delete(obj.key)
                deleted += 1
                freed += obj.size
    logger.info(
        "sweep of %s: %d deleted (%d bytes), %d chunks kept", storage.description, deleted, freed, kept
    )
    return SweepReport(deleted=deleted, kept=kept, bytes_freed=freed, young=young)
