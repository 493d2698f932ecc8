"""Where the SDK and CLI find the master URL and the token for it.

Tokens live in ``<config dir>/auth.json`` as ``{master_url: {"username", "token"}}`` with mode
0600, so a login from the CLI also serves scripts and notebooks. The config dir is
``platformdirs.user_config_dir("stalwart")`` unless ``STALWART_CONFIG_DIR`` names another.
``STALWART_TOKEN`` overrides the cache (CI jobs, trial containers).

Example::

    from stalwart.client import auth

    master = auth.resolve_master(None)  # -m value, else $STALWART_MASTER, $DET_MASTER, the default
    cached = auth.load_token(master)
    print(cached.username if cached else "not logged in")
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "DEFAULT_MASTER",
    "CachedToken",
    "auth_file",
    "config_dir",
    "env_password",
    "forget_token",
    "load_token",
    "resolve_master",
    "resolve_token",
    "resolve_user",
    "save_token",
]

DEFAULT_MASTER = "http://127.0.0.1:8080"


@dataclass(frozen=True)
class CachedToken:
    """A token and the user name it was issued to; ``username`` is empty for a ``STALWART_TOKEN``."""

    username: str
    token: str


def resolve_master(master: str | None) -> str:
    """The master URL to talk to: the explicit value, else ``$STALWART_MASTER``, else Determined's
    ``$DET_MASTER`` (so a Determined user's shell setup works unchanged), else the default.

    A bare ``host:port`` gets ``http://`` so the cache key is the same however the user typed it.

    Example::

        resolve_master("gpu-box:8080")  # -> "http://gpu-box:8080"
    """
    url = (
        master or os.environ.get("STALWART_MASTER") or os.environ.get("DET_MASTER") or DEFAULT_MASTER
    ).strip()
    if "://" not in url:
        url = f"http://{url}"
    return url.rstrip("/")


def resolve_user(user: str | None) -> str | None:
    """The user to act as: the explicit value (``-u``), else ``$STALWART_USER``, else ``$DET_USER``;
    None means whoever the cached token belongs to."""
    return user or os.environ.get("STALWART_USER") or os.environ.get("DET_USER") or None


def env_password() -> str | None:
    """A password from the environment: ``$STALWART_PASSWORD``, else Determined's ``$DET_PASS``."""
    return os.environ.get("STALWART_PASSWORD") or os.environ.get("DET_PASS") or None


def config_dir() -> Path:
    """The directory holding ``auth.json``; ``$STALWART_CONFIG_DIR`` wins over the platform default."""
    override = os.environ.get("STALWART_CONFIG_DIR")
    if override:
        return Path(override)
    # platformdirs is only needed on this path; importing it lazily keeps `stalwart --help` quick.
    from platformdirs import user_config_dir

    return Path(user_config_dir("stalwart"))


def auth_file() -> Path:
    """The token cache file."""
    return config_dir() / "auth.json"


def _read() -> dict[str, dict[str, str]]:
    try:
        data = json.loads(auth_file().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        # A missing or damaged cache means "not logged in"; the next login rewrites it whole.
        return {}
    return {k: v for k, v in data.items() if isinstance(v, dict)} if isinstance(data, dict) else {}


def _write(entries: dict[str, dict[str, str]]) -> None:
    path = auth_file()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    # Write a 0600 temp file and rename it over the old one: a crash never leaves a half-written
    # cache, and the token is never readable by others, not even for a moment.
    fd, tmp = tempfile.mkstemp(prefix=".auth-", suffix=".json", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(entries, fh, indent=2, sort_keys=True)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def load_token(master: str) -> CachedToken | None:
    """The cached token for ``master``, or None when this user never logged in there."""
    entry = _read().get(resolve_master(master))
    if not entry or not entry.get("token"):
        return None
    return CachedToken(username=str(entry.get("username", "")), token=str(entry["token"]))


def resolve_token(master: str) -> CachedToken | None:
    """``$STALWART_TOKEN`` if set, else the cached token for ``master``."""
    env = os.environ.get("STALWART_TOKEN")
    if env:
        return CachedToken(username="", token=env)
    return load_token(master)


def save_token(master: str, username: str, token: str) -> None:
    """Remember ``token`` for ``master``, replacing any earlier one."""
    entries = _read()
    entries[resolve_master(master)] = {"username": username, "token": token}
    _write(entries)


def forget_token(master: str) -> bool:
    """Drop the cached token for ``master``; returns whether there was one."""
    entries = _read()
    if entries.pop(resolve_master(master), None) is None:
        return False
    _write(entries)
    return True
