"""The checkpoint engine: a content-addressed chunk store with manifests, an asynchronous writer
and storage backends (filesystem, S3).

Example::

    from stalwart.checkpoint import CheckpointWriter, load_state, open_storage, read_manifest

    storage = open_storage({"type": "directory", "container_path": "/tmp/ckpt"})
    writer = CheckpointWriter(storage)
    uuid = writer.save_state({"weights": torch.ones(3)}, steps_completed=1)
    writer.close()
    state = load_state(storage, read_manifest(storage, uuid))
"""

from stalwart.checkpoint._gc import SweepReport, delete_manifests, sweep_chunks
from stalwart.checkpoint._manifest import DEFAULT_CHUNK_SIZE, FORMAT, read_manifest
from stalwart.checkpoint._reader import export_safetensors, load_state, restore_directory, verify_checkpoint
from stalwart.checkpoint._unpickle import UnsafeCheckpointError
from stalwart.checkpoint._writer import CheckpointWriter
from stalwart.checkpoint.storage import (
    StorageBackend,
    StorageError,
    StorageNotFound,
    StoredObject,
    open_storage,
)

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "FORMAT",
    "CheckpointWriter",
    "StorageBackend",
    "StorageError",
    "StorageNotFound",
    "StoredObject",
    "SweepReport",
    "UnsafeCheckpointError",
    "delete_manifests",
    "export_safetensors",
    "load_state",
    "open_storage",
    "read_manifest",
    "restore_directory",
    "sweep_chunks",
    "verify_checkpoint",
]
