"""The S3 backend's own promises: lazy boto3, config, prefixes, multipart uploads, conditional
commits and errors, against a real moto S3 server over HTTP (the shared conformance suite is in
test_storage_backends.py)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter
from typing import Any

import pytest
from botocore.exceptions import ConnectionClosedError, ReadTimeoutError

from stalwart.checkpoint.s3 import MiB, S3Storage
from stalwart.checkpoint.storage import StorageError, StorageNotFound, open_storage

from support import free_port

MULTIPART = {"multipart_threshold": 6 * MiB, "part_size": 5 * MiB}  # S3's smallest part is 5 MiB


def _storage(s3_server: Any, bucket: str, prefix: str = "team-a", **options: Any) -> S3Storage:
    return S3Storage(
        bucket, prefix, s3_server.endpoint_url, s3_server.access_key, s3_server.secret_key, **options
    )


def _count_calls(storage: S3Storage) -> Counter[str]:
    calls: Counter[str] = Counter()

    def record(model: Any, **_: Any) -> None:
        calls[model.name] += 1

    storage.client.meta.events.register("before-call.s3", record)
    return calls


@pytest.mark.unit
def test_importing_the_backend_does_not_import_boto3() -> None:
    code = "import sys, stalwart.checkpoint.s3; assert 'boto3' not in sys.modules, 'boto3 was imported'"

    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


@pytest.mark.unit
def test_without_boto3_the_error_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "boto3", None)  # makes `import boto3` raise ImportError

    with pytest.raises(StorageError, match=r"^s3://ckpt/team: .*install stalwart\[s3\]$"):
        S3Storage("ckpt", "team")


@pytest.mark.unit
def test_open_storage_builds_the_backend_from_a_checkpoint_storage_section() -> None:
    storage = open_storage(
        {
            "type": "s3",
            "bucket": "ckpt",
            "prefix": "/team-a/runs/",
            "endpoint_url": "http://127.0.0.1:9000",
            "access_key": "key",
            "secret_key": "secret",
            "save_trial_best": 2,
            "save_trial_latest": 1,
        }
    )

    assert isinstance(storage, S3Storage)
    assert storage.description == "s3://ckpt/team-a/runs"
    assert storage.client.meta.endpoint_url == "http://127.0.0.1:9000"
    assert storage.client.meta.config.retries["mode"] == "standard"
    assert S3Storage.from_config({"type": "s3", "bucket": "ckpt"}).description == "s3://ckpt"
    storage.close()


@pytest.mark.unit
def test_a_section_without_a_bucket_is_refused() -> None:
    with pytest.raises(StorageError, match="needs a bucket"):
        S3Storage.from_config({"type": "s3", "prefix": "team-a"})


@pytest.mark.integration
def test_keys_live_under_the_prefix_and_nothing_else_is_listed(s3_server: Any) -> None:
    bucket = s3_server.new_bucket()
    s3_server.client().put_object(Bucket=bucket, Key="team-b/chunks/ab/other-team", Body=b"not ours")
    storage = _storage(s3_server, bucket, prefix="team-a")

    storage.put("chunks/ab/abcd", b"ours")

    assert s3_server.client().get_object(Bucket=bucket, Key="team-a/chunks/ab/abcd")["Body"].read() == b"ours"
    assert [item.key for item in storage.list("")] == ["chunks/ab/abcd"]
    assert [item.key for item in storage.list("chunks/")] == ["chunks/ab/abcd"]


@pytest.mark.integration
def test_small_values_are_one_put_and_large_ones_a_multipart_upload(s3_server: Any) -> None:
    storage = _storage(s3_server, s3_server.new_bucket(), **MULTIPART)
    calls = _count_calls(storage)
    large = bytes(range(256)) * (11 * MiB // 256)  # 11 MiB: parts of 5, 5 and 1 MiB

    storage.put("chunks/00/small", b"x" * (6 * MiB - 1))
    assert calls == {"PutObject": 1}
    storage.put("chunks/00/large", large)

    assert calls == {
        "PutObject": 1,
        "CreateMultipartUpload": 1,
        "UploadPart": 3,
        "CompleteMultipartUpload": 1,
    }
    assert storage.get("chunks/00/large") == large


@pytest.mark.integration
def test_put_new_is_one_conditional_put_object(s3_server: Any) -> None:
    storage = _storage(s3_server, s3_server.new_bucket())
    calls = _count_calls(storage)
    sent: list[bytes | None] = []
    storage.client.meta.events.register(
        "before-send.s3.PutObject", lambda request, **_: sent.append(request.headers.get("If-None-Match"))
    )

    assert storage.put_new("manifests/u.json", b"{}") is True
    assert storage.put_new("manifests/u.json", b"{}") is False

    assert calls == {"PutObject": 2}  # no HeadObject: S3 itself arbitrates the race
    assert sent == [b"*", b"*"]


@pytest.mark.integration
@pytest.mark.parametrize(("landed", "created"), [(b"our manifest", True), (b"someone else's", False)])
def test_put_new_after_a_lost_response_tells_its_own_object_from_another(
    s3_server: Any, landed: bytes, created: bool
) -> None:
    """The first attempt's response is lost; botocore retries and meets 412 on the object that is there."""
    bucket = s3_server.new_bucket()
    storage = _storage(s3_server, bucket)
    attempts: list[str] = []

    def lose_the_first_response(request: Any, **_: Any) -> None:
        attempts.append(request.url)
        if len(attempts) == 1:
            s3_server.client().put_object(Bucket=bucket, Key="team-a/manifests/u.json", Body=landed)
            raise ReadTimeoutError(endpoint_url=request.url)

    storage.client.meta.events.register("before-send.s3.PutObject", lose_the_first_response)

    assert storage.put_new("manifests/u.json", b"our manifest") is created
    assert len(attempts) == 2
    assert storage.get("manifests/u.json") == landed


@pytest.mark.integration
def test_a_part_that_fails_aborts_the_multipart_upload(s3_server: Any) -> None:
    bucket = s3_server.new_bucket()
    storage = _storage(s3_server, bucket, **MULTIPART)
    calls = _count_calls(storage)

    def fail_the_second_part(params: dict[str, Any], **_: Any) -> None:
        if params["PartNumber"] == 2:
            raise RuntimeError("part body could not be read")

    storage.client.meta.events.register("before-parameter-build.s3.UploadPart", fail_the_second_part)

    with pytest.raises(RuntimeError, match="part body"):
        storage.put("chunks/00/large", b"\1" * (11 * MiB))

    assert calls["CreateMultipartUpload"] == 1 and calls["AbortMultipartUpload"] == 1
    assert s3_server.client().list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert not storage.exists("chunks/00/large")


@pytest.mark.integration
def test_a_connection_lost_mid_upload_is_a_storage_error_and_aborts(s3_server: Any) -> None:
    bucket = s3_server.new_bucket()
    storage = _storage(s3_server, bucket, max_attempts=2, **MULTIPART)

    def drop_the_second_part(request: Any, **_: Any) -> None:
        if "partNumber=2" in request.url:
            raise ConnectionClosedError(endpoint_url=request.url)

    storage.client.meta.events.register("before-send.s3.UploadPart", drop_the_second_part)

    with pytest.raises(
        StorageError, match=r"^cannot put s3://[^ ]+/team-a/chunks/00/large: Connection was closed"
    ):
        storage.put("chunks/00/large", b"\2" * (11 * MiB))

    assert s3_server.client().list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


@pytest.mark.integration
def test_an_unreachable_endpoint_fails_fast_naming_the_url_and_the_reason() -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens: connection refused
    patient = S3Storage("ckpt", "team-a", endpoint, "key", "secret")  # the default retries
    started = time.monotonic()

    with pytest.raises(
        StorageError, match=r"^cannot get s3://ckpt/team-a/manifests/u\.json: Could not connect"
    ):
        patient.get("manifests/u.json")

    assert time.monotonic() - started < 30
    storage = S3Storage("ckpt", "team-a", endpoint, "key", "secret", max_attempts=1)
    operations = {
        "put": lambda: storage.put("chunks/ab/k", b"x"),
        "create": lambda: storage.put_new("chunks/ab/k", b"x"),
        "check": lambda: storage.exists("chunks/ab/k"),
        "touch": lambda: storage.touch("chunks/ab/k"),
        "delete": lambda: storage.delete("chunks/ab/k"),
        "list": lambda: list(storage.list("chunks/ab/k")),
    }
    for action, operation in operations.items():
        with pytest.raises(StorageError, match=rf"^cannot {action} s3://ckpt/team-a/chunks/ab/k: Could not"):
            operation()


@pytest.mark.integration
def test_a_missing_bucket_is_a_storage_error_not_a_missing_key(s3_server: Any) -> None:
    storage = _storage(s3_server, "no-such-bucket")

    with pytest.raises(
        StorageError, match=r"s3://no-such-bucket/team-a/manifests/u\.json: NoSuchBucket"
    ) as got:
        storage.get("manifests/u.json")
    assert not isinstance(got.value, StorageNotFound)
    with pytest.raises(StorageError, match="NoSuchBucket"):
        storage.put("manifests/u.json", b"{}")
