"""The Code tab: an experiment's context listed and read file by file, in memory, never following
a link, and nothing outside the archive reachable by a crafted path."""

from __future__ import annotations

import io
import tarfile
import uuid
from typing import Any

import pytest

from stalwart_master.contexts.browse import MAX_TEXT_BYTES, normal_path

pytestmark = pytest.mark.integration
CONFIG = "entrypoint: python3 train.py\nsearcher: {name: single, metric: loss}\n"
# A three-byte character straddling the 1 MiB cut: the text ends before it rather than mangled.
BIG = b"a" * (MAX_TEXT_BYTES - 1) + "\u20ac".encode() + b"tail"


def _add(archive: tarfile.TarFile, name: str, data: bytes | None = None, *, link: str = "") -> None:
    info = tarfile.TarInfo(name)
    if link:
        info.type, info.linkname = tarfile.SYMTYPE, link
        archive.addfile(info)
    elif data is None:
        info.type = tarfile.DIRTYPE
        archive.addfile(info)
    else:
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))


def _context(admin: Any) -> str:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        _add(archive, "./train.py", f"print('hi')  # {uuid.uuid4()}\n".encode())
        _add(archive, "model", None)
        _add(archive, "model/net.py", "naïve = 'ünïcode'\n".encode())
        _add(archive, "data/weights.bin", b"\x89PNG\x00\x01\x02")
        _add(archive, "notes-latin1.txt", "café".encode("latin-1"))
        _add(archive, "big.txt", BIG)
        _add(archive, "link.py", link="train.py")
    uploaded = admin.post(
        "/api/v1/contexts", content=buffer.getvalue(), headers={"Content-Type": "application/gzip"}
    )
    assert uploaded.status_code in (200, 201), uploaded.text
    return str(uploaded.json()["sha256"])


@pytest.fixture
def experiment(admin) -> int:  # type: ignore[no-untyped-def]
    created = admin.post(
        "/api/v1/experiments", json={"config": CONFIG, "context": _context(admin), "paused": True}
    )
    assert created.status_code == 201, created.text
    return int(created.json()["id"])


def _file(admin: Any, experiment: int, path: str, headers: dict[str, str] | None = None) -> Any:
    return admin.get(
        f"/api/v1/experiments/{experiment}/context/file", params={"path": path}, headers=headers or {}
    )


def test_the_file_tree_lists_regular_files_sorted_without_links_or_directories(
    admin, experiment: int
) -> None:  # type: ignore[no-untyped-def]
    response = admin.get(f"/api/v1/experiments/{experiment}/context")
    assert response.status_code == 200, response.text
    assert response.json()["files"] == [
        {"path": "big.txt", "size": len(BIG)},
        {"path": "data/weights.bin", "size": 7},
        {"path": "model/net.py", "size": len("naïve = 'ünïcode'\n".encode())},
        {"path": "notes-latin1.txt", "size": 4},
        {"path": "train.py", "size": response.json()["files"][4]["size"]},
    ]


def test_a_text_file_comes_back_as_text(admin, experiment: int) -> None:  # type: ignore[no-untyped-def]
    for asked in ("model/net.py", "./model//net.py"):
        body = _file(admin, experiment, asked).json()
        assert body == {
            "path": "model/net.py",
            "size": len("naïve = 'ünïcode'\n".encode()),
            "binary": False,
            "truncated": False,
            "text": "naïve = 'ünïcode'\n",
        }


def test_binary_files_have_no_text(admin, experiment: int) -> None:  # type: ignore[no-untyped-def]
    for path in ("data/weights.bin", "notes-latin1.txt"):  # a NUL byte; not UTF-8
        body = _file(admin, experiment, path).json()
        assert (body["binary"], body["text"], body["truncated"]) == (True, None, False), path


def test_a_large_file_is_cut_at_one_mebibyte_without_splitting_a_character(admin, experiment: int) -> None:  # type: ignore[no-untyped-def]
    body = _file(admin, experiment, "big.txt").json()
    assert (body["binary"], body["truncated"], body["size"]) == (False, True, len(BIG))
    assert body["text"] == "a" * (MAX_TEXT_BYTES - 1)


@pytest.mark.parametrize(
    "path",
    ["../../etc/passwd", "/etc/passwd", "model/../../train.py", "link.py", "model", "absent.py", "a\\b"],
)
def test_paths_outside_the_archive_links_and_directories_are_404(admin, experiment: int, path: str) -> None:  # type: ignore[no-untyped-def]
    response = _file(admin, experiment, path)
    assert response.status_code == 404, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert "root:" not in response.text


def test_an_experiment_without_a_context_has_no_files(admin) -> None:  # type: ignore[no-untyped-def]
    created = admin.post("/api/v1/experiments", json={"config": CONFIG, "paused": True}).json()
    assert admin.get(f"/api/v1/experiments/{created['id']}/context").json() == {"files": []}
    assert _file(admin, created["id"], "train.py").status_code == 404


def test_someone_without_a_role_in_the_workspace_reads_nothing(admin, experiment: int) -> None:  # type: ignore[no-untyped-def]
    workspace = admin.post("/api/v1/workspaces", json={"name": f"ws-{uuid.uuid4().hex[:8]}"}).json()["id"]
    project = admin.post(f"/api/v1/workspaces/{workspace}/projects", json={"name": "p"}).json()["id"]
    moved = admin.post(f"/api/v1/experiments/{experiment}/move", json={"project_id": project})
    assert moved.status_code == 200, moved.text
    name = f"code-{uuid.uuid4().hex[:8]}"
    assert (
        admin.post("/api/v1/users", json={"username": name, "password": "code-password-1"}).status_code == 201
    )
    token = admin.post("/api/v1/auth/login", json={"username": name, "password": "code-password-1"}).json()[
        "token"
    ]
    outsider = {"Authorization": f"Bearer {token}"}
    assert admin.get(f"/api/v1/experiments/{experiment}/context", headers=outsider).status_code == 404
    assert _file(admin, experiment, "train.py", outsider).status_code == 404


@pytest.mark.parametrize(
    ("name", "shown"),
    [("./a//b.py", "a/b.py"), ("a/./b", "a/b"), ("../x", None), ("/x", None), ("x\x00", None), (".", None)],
)
def test_paths_are_normalised_like_stored_member_names(name: str, shown: str | None) -> None:
    assert normal_path(name) == shown
