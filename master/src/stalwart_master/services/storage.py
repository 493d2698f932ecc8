"""Where an experiment's checkpoints live, decided by the master alone.

An experiment's storage is its config's ``checkpoint_storage`` (merged with the cluster defaults at
creation) or, for ``{name: ...}``, a storage the operator defined in ``STALWART_STORAGE_NAMED``,
whose credentials never leave the master except to that experiment's runs. Nothing a trial
reports changes it: a checkpoint registered with any other storage is refused, rows keep the
master's copy without credentials, and GC opens only what this module resolves, once
``check_reachable`` agrees the master may touch it:

- an S3 ``endpoint_url`` must be on ``STALWART_STORAGE_ENDPOINT_ALLOWLIST`` (no endpoint means
  AWS itself), so no config makes a worker send signed requests to an address of its choosing;
- a filesystem path (``shared_fs`` host_path/storage_path, ``directory`` container_path) must lie
  under the data dir's ``checkpoints``, ``STALWART_STORAGE_SHARED_FS_ROOTS`` or a path the operator
  configured, after symlinks are resolved on the worker.
Storages the operator wrote (named ones and the default) count as allowed.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from stalwart._masking import is_secret_key
from stalwart_master.errors import Conflict, ErrorList
from stalwart_master.expconf.model import LOCATION_KEYS
from stalwart_master.settings import Settings, get_settings

INVALID_TITLE = "Invalid experiment config"
_FILESYSTEM_TYPES = ("shared_fs", "directory")
_DEFAULT_PORTS = {"http": 80, "https": 443}


class StorageRefused(Exception):
    """The master will not touch this storage: an endpoint or path outside what the operator allows."""


class UnknownStorage(Conflict):
    """An experiment names a storage this cluster does not (or no longer) define."""


@dataclass(frozen=True)
class Problem:
    """One reason a storage is refused: the field at fault and a sentence about it."""

    field: str
    message: str


# --- resolving ------------------------------------------------------------------------------------


def _settings(settings: Settings | None) -> Settings:
    return settings if settings is not None else get_settings()


def _default_storage(settings: Settings) -> dict[str, Any]:
    return dict(settings.effective_experiment_defaults().get("checkpoint_storage") or {})


def experiment_storage(config: Mapping[str, Any], settings: Settings | None = None) -> dict[str, Any]:
    """The whole storage section, credentials included, for an experiment's stored config: what
    its runs write to and what GC opens. Raises ``UnknownStorage`` for a name the cluster lacks."""
    settings = _settings(settings)
    section = dict(config.get("checkpoint_storage") or _default_storage(settings))
    if not _is_named(section):
        return section
    name = str(section.get("name"))
    definition = settings.storage.named.get(name)
    if definition is None:
        raise UnknownStorage(f"checkpoint storage {name!r} is not defined on this cluster")
    # The operator's definition says where and with which keys; the experiment how (policy, chunks).
    where = {k: v for k, v in definition.items() if k == "type" or k in LOCATION_KEYS}
    how = {k: v for k, v in section.items() if k not in ("type", "name") and k not in LOCATION_KEYS}
    return {**where, **how, "name": name}


def _is_named(section: Mapping[str, Any]) -> bool:
    # Validated configs say ``type: named``; an operator's default may be just ``{name: ...}``.
    return section.get("type") == "named" or ("name" in section and not section.get("type"))


def public_storage(storage: Mapping[str, Any]) -> dict[str, Any]:
    """Where a storage is, without credentials: what a checkpoint row keeps and users see."""
    kept = ("type", "name", *LOCATION_KEYS)
    return {k: v for k, v in storage.items() if k in kept and v is not None and not is_secret_key(k)}


# --- comparing ------------------------------------------------------------------------------------


def _path(*parts: Any) -> str:
    return os.path.normpath(os.path.join(*(str(p) for p in parts if p)))


def filesystem_path(storage: Mapping[str, Any]) -> str | None:
    """The directory a filesystem storage keeps its bytes in, normalised; None for object stores."""
    kind = storage.get("type")
    if kind == "shared_fs" and storage.get("host_path"):
        return _path(storage["host_path"], storage.get("storage_path"))
    if kind == "directory" and storage.get("container_path"):
        return _path(storage["container_path"])
    return None


def endpoint_origin(url: str) -> str | None:
    """``scheme://host:port[/path]`` in one spelling, or None for a URL no allowlist can hold
    (not http(s), no host, user info, query or fragment)."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if scheme not in _DEFAULT_PORTS or not host or parts.username is not None or parts.password is not None:
        return None
    if parts.query or parts.fragment:
        return None
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{port or _DEFAULT_PORTS[scheme]}{parts.path.rstrip('/')}"


def location(storage: Mapping[str, Any]) -> tuple[str, ...]:
    """What decides where bytes go, in one spelling: two storages with the same location are one
    chunk store whatever their policy, chunking or credentials."""
    kind = str(storage.get("type") or "")
    if kind in _FILESYSTEM_TYPES:
        return (kind, filesystem_path(storage) or "")
    if kind == "s3":
        endpoint = storage.get("endpoint_url")
        origin = (endpoint_origin(str(endpoint)) or str(endpoint)) if endpoint else ""
        prefix = str(storage.get("prefix") or "").strip("/")
        return (kind, str(storage.get("bucket") or ""), prefix, origin)
    return (kind, str(storage.get("name") or ""))


def same_location(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    return location(a) == location(b)


# --- what the master may touch --------------------------------------------------------------------


def _operator_storages(settings: Settings) -> list[Mapping[str, Any]]:
    return [_default_storage(settings), *settings.storage.named.values()]


def allowed_roots(settings: Settings | None = None) -> list[str]:
    """Directories under which the master and its workers may act on a filesystem storage."""
    settings = _settings(settings)
    roots = [_path(settings.data_dir.resolve() / "checkpoints")]
    roots += [_path(root) for root in settings.storage.shared_fs_roots]
    roots += [p for s in _operator_storages(settings) if (p := filesystem_path(s))]
    return list(dict.fromkeys(roots))


def allowed_endpoints(settings: Settings | None = None) -> set[str]:
    """S3 endpoints (normalised origins) the master and its workers may contact."""
    settings = _settings(settings)
    urls: list[str] = list(settings.storage.endpoint_allowlist)
    urls += [str(s["endpoint_url"]) for s in _operator_storages(settings) if s.get("endpoint_url")]
    return {origin for url in urls if (origin := endpoint_origin(url))}


def _under(path: str, roots: Iterable[str]) -> bool:
    return any(os.path.commonpath([path, root]) == root for root in roots if os.path.isabs(root))


def problems(storage: Mapping[str, Any], settings: Settings | None = None) -> list[Problem]:
    """Why the master may not touch ``storage`` (nothing when it may); paths compared as written."""
    settings = _settings(settings)
    kind = storage.get("type")
    found: list[Problem] = []
    if kind == "s3":
        endpoint = str(storage.get("endpoint_url") or "")
        if endpoint and endpoint_origin(endpoint) not in allowed_endpoints(settings):
            found.append(
                Problem(
                    "endpoint_url",
                    f"{endpoint} is not an S3 endpoint this cluster allows "
                    "(the operator lists them in STALWART_STORAGE_ENDPOINT_ALLOWLIST)",
                )
            )
    elif kind in _FILESYSTEM_TYPES:
        path = filesystem_path(storage)
        if path is None or not _under(path, allowed_roots(settings)):
            field = "host_path" if kind == "shared_fs" else "container_path"
            found.append(
                Problem(
                    field,
                    f"{path} is outside the directories this cluster keeps checkpoints in "
                    "(the operator lists them in STALWART_STORAGE_SHARED_FS_ROOTS)",
                )
            )
    elif kind != "named":
        found.append(Problem("type", f"checkpoint storage type {kind!r} is not supported"))
    return found


def check_experiment_storage(config: Mapping[str, Any], settings: Settings | None = None) -> None:
    """At experiment creation: the storage exists and the master may touch it, or ``Invalid``
    naming ``checkpoint_storage.<field>``."""
    settings = _settings(settings)
    errors = ErrorList()
    section = config.get("checkpoint_storage") or {}
    if _is_named(section) and section.get("name") not in settings.storage.named:
        known = ", ".join(sorted(settings.storage.named)) or "none"
        errors.add("checkpoint_storage.name", f"no storage of this name on this cluster (defined: {known})")
    else:
        for problem in problems(experiment_storage(config, settings), settings):
            errors.add(f"checkpoint_storage.{problem.field}", problem.message)
    errors.raise_if_any(title=INVALID_TITLE)


def check_reachable(storage: Mapping[str, Any], settings: Settings | None = None) -> None:
    """Right before the master or a worker opens ``storage``: raises ``StorageRefused`` unless it
    may. A filesystem path is also checked with its symlinks resolved here, so a link planted
    inside an allowed root cannot lead a sweep elsewhere."""
    settings = _settings(settings)
    refused = problems(storage, settings)
    if not refused and (path := filesystem_path(storage)) is not None:
        real_roots = [os.path.realpath(root) for root in allowed_roots(settings)]
        if not _under(os.path.realpath(path), real_roots):
            refused = [Problem("host_path", f"{path} leads outside the allowed directories")]
    if refused:
        raise StorageRefused("; ".join(f"{p.field}: {p.message}" for p in refused))


# --- registration ---------------------------------------------------------------------------------


def registered_storage(
    config: Mapping[str, Any], claimed: Mapping[str, Any], settings: Settings | None = None
) -> dict[str, Any]:
    """What a checkpoint row keeps: the experiment's storage without credentials, provided the
    trial's claim names the same place. Raises ``Invalid`` at ``storage`` otherwise."""
    resolved = experiment_storage(config, settings)
    if not same_location(claimed, resolved):
        errors = ErrorList()
        errors.add(
            "storage",
            "is not this experiment's checkpoint storage; register with the checkpoint_storage "
            "of the trial's info",
        )
        errors.raise_if_any(title="Invalid checkpoint")
    return public_storage(resolved)
