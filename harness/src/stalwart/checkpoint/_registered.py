"""Reading a checkpoint the master registered: its storage and the manifest the master holds."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from stalwart._masking import without_masked
from stalwart.core._errors import CheckpointError

if TYPE_CHECKING:
    from stalwart.checkpoint.storage import StorageBackend
    from stalwart.client.models import Checkpoint


def open_registered(ckpt: Checkpoint) -> tuple[StorageBackend, dict[str, Any]]:
    """The storage and manifest of a registered checkpoint; close the storage when done.

    Masked credentials are no credentials: this machine's own (environment, role) apply.
    """
    from stalwart.checkpoint import open_storage, read_manifest
    from stalwart.checkpoint._manifest import validate_manifest

    if ckpt.state == "DELETED":
        raise CheckpointError(f"checkpoint {ckpt.uuid} was deleted; its storage is gone")
    storage = open_storage(without_masked(ckpt.storage))
    try:
        manifest = ckpt.raw.get("manifest")
        if isinstance(manifest, dict) and "format" in manifest:
            return storage, validate_manifest(manifest, ckpt.uuid)
        return storage, read_manifest(storage, ckpt.uuid)
    except BaseException:
        storage.close()
        raise


def download_registered(ckpt: Checkpoint, output: Path | None = None) -> Path:
    """Restore a registered checkpoint's files, every chunk verified, into ``output``
    (Determined's default ``checkpoints/UUID``); returns the directory written."""
    from stalwart.checkpoint import restore_directory

    storage, manifest = open_registered(ckpt)
    target = output if output is not None else Path("checkpoints") / ckpt.uuid
    try:
        restore_directory(storage, manifest, target)
    finally:
        storage.close()
    return target
