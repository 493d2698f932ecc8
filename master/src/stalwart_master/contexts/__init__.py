"""Contexts: the model code tarball an experiment runs, checked here before the master stores it."""

from stalwart_master.contexts.archive import (
    ArchiveTooLarge,
    ContextArchive,
    UnsafeArchive,
    check_content_length,
    inspect_context,
    receive_context,
)

__all__ = [
    "ArchiveTooLarge",
    "ContextArchive",
    "UnsafeArchive",
    "check_content_length",
    "inspect_context",
    "receive_context",
]
