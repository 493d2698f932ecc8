"""Contexts: the model code tarball an experiment runs, checked here before the master stores it."""

from stalwart_master.contexts.archive import (
    ACCEPTED_CONTENT_TYPES,
    ArchiveOverLimit,
    ArchiveTooLarge,
    ContextArchive,
    UnsafeArchive,
    UnsupportedContentType,
    check_content_length,
    check_content_type,
    inspect_context,
    receive_context,
)

__all__ = [
    "ACCEPTED_CONTENT_TYPES",
    "ArchiveOverLimit",
    "ArchiveTooLarge",
    "ContextArchive",
    "UnsafeArchive",
    "UnsupportedContentType",
    "check_content_length",
    "check_content_type",
    "inspect_context",
    "receive_context",
]
