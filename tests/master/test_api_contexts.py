"""Context uploads over HTTP: stored once per digest, size-limited early, unsafe archives refused whole."""

from __future__ import annotations

import hashlib
import io
import socket
import tarfile
import uuid
from collections.abc import Callable, Iterator
from urllib.parse import urlparse

import httpx
import pytest

pytestmark = pytest.mark.integration
GZIP = {"Content-Type": "application/gzip"}


def tarball(add: Callable[[tarfile.TarFile], None]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        add(archive)
    return buffer.getvalue()


def add_file(archive: tarfile.TarFile, name: str, data: bytes = b"print('hi')\n") -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))


def add_special(archive: tarfile.TarFile, name: str, kind: bytes, linkname: str = "") -> None:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    archive.addfile(info)


def test_upload_dedup_head_and_download(admin) -> None:  # type: ignore[no-untyped-def]
    data = tarball(lambda a: (add_file(a, "train.py", uuid.uuid4().bytes), add_file(a, "lib/util.py")))
    digest = hashlib.sha256(data).hexdigest()
    assert admin.head(f"/api/v1/contexts/{digest}").status_code == 404
    first = admin.post("/api/v1/contexts", content=data, headers=GZIP)
    assert first.status_code == 201, first.text
    assert (
        first.json()["sha256"] == digest and first.json()["files"] == 2 and first.json()["size"] == len(data)
    )
    second = admin.post("/api/v1/contexts", content=data, headers=GZIP)
    assert second.status_code == 200 and second.json()["sha256"] == digest
    assert admin.head(f"/api/v1/contexts/{digest}").status_code == 200
    downloaded = admin.get(f"/api/v1/contexts/{digest}")
    assert downloaded.status_code == 200 and downloaded.content == data

    experiment = admin.post("/api/v1/experiments", json={"config": _config(), "context": digest})
    assert experiment.status_code == 201 and experiment.json()["context_sha256"] == digest


def _config() -> str:
    return "entrypoint: python3 train.py\nsearcher: {name: single, metric: loss}\n"


MALICIOUS: dict[str, tuple[Callable[[tarfile.TarFile], None], str]] = {
    "absolute path": (lambda a: add_file(a, "/etc/cron.d/evil"), "/etc/cron.d/evil"),
    "dot-dot path": (lambda a: add_file(a, "lib/../../evil.py"), "lib/../../evil.py"),
    "symlink out": (lambda a: add_special(a, "escape", tarfile.SYMTYPE, "../../etc/passwd"), "escape"),
    "absolute symlink": (lambda a: add_special(a, "abs", tarfile.SYMTYPE, "/etc/passwd"), "abs"),
    "hardlink out": (lambda a: add_special(a, "hard", tarfile.LNKTYPE, "../outside"), "hard"),
    "char device": (lambda a: add_special(a, "dev/null", tarfile.CHRTYPE), "dev/null"),
    "block device": (lambda a: add_special(a, "dev/sda", tarfile.BLKTYPE), "dev/sda"),
    "fifo": (lambda a: add_special(a, "pipe", tarfile.FIFOTYPE), "pipe"),
}


@pytest.mark.parametrize("kind", list(MALICIOUS))
def test_each_malicious_archive_kind_is_refused_naming_the_member(admin, kind: str) -> None:  # type: ignore[no-untyped-def]
    build, member = MALICIOUS[kind]
    data = tarball(lambda a: (add_file(a, "train.py"), build(a)))
    response = admin.post("/api/v1/contexts", content=data, headers=GZIP)
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert member in response.json()["detail"]
    assert admin.head(f"/api/v1/contexts/{hashlib.sha256(data).hexdigest()}").status_code == 404


def test_garbage_is_refused(admin) -> None:  # type: ignore[no-untyped-def]
    response = admin.post("/api/v1/contexts", content=b"definitely not a tarball", headers=GZIP)
    assert response.status_code == 400


def test_declared_oversize_is_refused_before_the_body_is_read(live_master) -> None:  # type: ignore[no-untyped-def]
    """Claim 200 MiB, send a few bytes: the 413 must come back without the rest ever being sent."""
    token = httpx.post(
        f"{live_master.url}/api/v1/auth/login",
        json={"username": live_master.admin_username, "password": live_master.admin_password},
    ).json()["token"]
    url = urlparse(live_master.url)
    with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
        sock.sendall(
            (
                "POST /api/v1/contexts HTTP/1.1\r\n"
                f"Host: {url.hostname}\r\nAuthorization: Bearer {token}\r\n"
                "Content-Type: application/gzip\r\nContent-Length: 209715200\r\n\r\n"
            ).encode()
            + b"\x1f\x8b"
        )
        reply = sock.recv(65536).decode(errors="replace")
    assert reply.startswith("HTTP/1.1 413"), reply[:200]
    assert "problem+json" in reply


def test_streamed_oversize_is_refused_once_past_the_limit(live_master) -> None:  # type: ignore[no-untyped-def]
    """Chunked upload with no length: the master stops reading at 96 MiB and answers 413."""
    token = httpx.post(
        f"{live_master.url}/api/v1/auth/login",
        json={"username": live_master.admin_username, "password": live_master.admin_password},
    ).json()["token"]
    chunk = b"\0" * (1024 * 1024)

    def body() -> Iterator[bytes]:
        for _ in range(200):
            yield chunk

    try:
        response = httpx.post(
            f"{live_master.url}/api/v1/contexts",
            content=body(),
            headers={**GZIP, "Authorization": f"Bearer {token}"},
            timeout=60,
        )
    except httpx.WriteError:
        pytest.fail("the master closed the connection without answering 413")
    assert response.status_code == 413
