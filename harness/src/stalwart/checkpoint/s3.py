"""Checkpoint storage in an S3 bucket or any S3-compatible store (MinIO, Ceph, ...).

boto3 is imported when a backend is built, not when this module is, so a harness that never
writes to S3 never needs it. One botocore client serves every thread of the checkpoint writer:
clients are thread-safe, sessions are not, so each backend makes its own session once.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Iterator, Mapping
from typing import Any, NoReturn

from stalwart.checkpoint.storage import StorageBackend, StorageError, StorageNotFound, StoredObject

log = logging.getLogger(__name__)

MiB = 1024 * 1024
MIN_PART_SIZE = 5 * MiB  # S3 refuses smaller parts, except the last one
MAX_PARTS = 10_000
_CHECKSUM_FIELDS = ("ChecksumCRC32", "ChecksumCRC32C", "ChecksumCRC64NVME", "ChecksumSHA1", "ChecksumSHA256")
_CONFLICT_RETRIES = 5


class S3Storage(StorageBackend):
    """Keys live under ``s3://<bucket>/<prefix>/``; errors name the full ``s3://`` URL and the reason.

    ``access_key``/``secret_key`` left out means the usual AWS credential chain (environment,
    files, instance role). Values of ``multipart_threshold`` bytes or more go up as a multipart
    upload, which is aborted on any failure so no orphaned parts stay billed (a bucket lifecycle
    rule with ``AbortIncompleteMultipartUpload`` catches the rare abort that fails too).

    Example::

        storage = S3Storage("checkpoints", "team-a", endpoint_url="https://minio.internal:9000")
        storage.put("manifests/1d5c.json", b"{}")
    """

    def __init__(
        self,
        bucket: str,
        prefix: str | None = None,
        endpoint_url: str | None = None,
        access_key: str | None = None,
        secret_key: str | None = None,
        *,
        region: str | None = None,
        multipart_threshold: int = 16 * MiB,
        part_size: int = 16 * MiB,
        max_attempts: int = 5,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        max_pool_connections: int = 32,
    ) -> None:
        if part_size < MIN_PART_SIZE:
            raise ValueError(
                f"part_size must be at least {MIN_PART_SIZE} bytes (S3's minimum), not {part_size}"
            )
        if multipart_threshold < 1:
            raise ValueError(f"multipart_threshold must be positive, not {multipart_threshold}")
        self.bucket = bucket
        self._root = f"{prefix.strip('/')}/" if prefix and prefix.strip("/") else ""
        self.description = f"s3://{bucket}/{self._root.rstrip('/')}".rstrip("/")
        self.multipart_threshold = multipart_threshold
        self.part_size = part_size
        try:
            import boto3
            from botocore.config import Config
            from botocore.exceptions import BotoCoreError, ClientError
        except ImportError as exc:
            raise StorageError(
                f"{self.description}: S3 checkpoint storage needs boto3; install stalwart[s3]"
            ) from exc
        self._errors: tuple[type[Exception], ...] = (BotoCoreError, ClientError)
        config = Config(
            retries={"mode": "standard", "max_attempts": max_attempts},
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            max_pool_connections=max_pool_connections,
            # MinIO, Ceph and most other S3-compatible stores expect path-style URLs.
            s3={"addressing_style": "path"} if endpoint_url else None,
        )
        try:
            self._client: Any = boto3.session.Session().client(
                "s3",
                endpoint_url=endpoint_url,
                aws_access_key_id=access_key,
                aws_secret_access_key=secret_key,
                region_name=region,
                config=config,
            )
        except self._errors as exc:
            raise StorageError(f"cannot open {self.description}: {_reason(exc)}") from exc

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> S3Storage:
        """The backend for a ``checkpoint_storage`` section of ``type: s3`` (``save_*`` keys are GC's)."""
        bucket = config.get("bucket")
        if not isinstance(bucket, str) or not bucket:
            raise StorageError("checkpoint_storage of type s3 needs a bucket")
        return cls(
            bucket,
            config.get("prefix"),
            config.get("endpoint_url"),
            config.get("access_key"),
            config.get("secret_key"),
        )

    @property
    def client(self) -> Any:
        """The boto3 S3 client, for tools that need more than this interface (and for tests)."""
        return self._client

    def put(self, key: str, data: bytes | memoryview) -> None:
        size = data.nbytes if isinstance(data, memoryview) else len(data)
        if size >= self.multipart_threshold:
            self._put_multipart(key, memoryview(data).cast("B"))
            return
        try:
            # botocore takes bytes or a file, not a memoryview.
            body = data.tobytes() if isinstance(data, memoryview) else data
            self._client.put_object(Bucket=self.bucket, Key=self._key(key), Body=body)
        except self._errors as exc:
            self._fail("put", key, exc)

    def put_new(self, key: str, data: bytes) -> bool:
        """One conditional PutObject (``If-None-Match: *``): S3 itself decides who creates the key.

        A store that ignores the header would overwrite instead; commits use fresh uuids as keys,
        so that would only matter for a uuid collision.
        """
        for attempt in range(_CONFLICT_RETRIES):
            try:
                self._client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, IfNoneMatch="*")
                return True
            except self._errors as exc:
                code = _code(exc)
                if code == "ConditionalRequestConflict":
                    # 409: another conditional write of this key is in flight; S3 asks us to retry.
                    time.sleep(0.05 * 2**attempt)
                    continue
                if code == "PreconditionFailed" or _status(exc) == 412:
                    return self._created_by_an_earlier_attempt(key, data, exc)
                self._fail("create", key, exc)
        raise StorageError(f"cannot create {self._url(key)}: concurrent writes kept conflicting")

    def get(self, key: str) -> bytes:
        try:
            response = self._client.get_object(Bucket=self.bucket, Key=self._key(key))
            with contextlib.closing(response["Body"]) as body:
                data: bytes = body.read()
            return data
        except self._errors as exc:
            if _code(exc) == "NoSuchKey":
                raise StorageNotFound(f"{self._url(key)} does not exist") from exc
            self._fail("get", key, exc)

    def exists(self, key: str) -> bool:
        try:
            self._client.head_object(Bucket=self.bucket, Key=self._key(key))
            return True
        except self._errors as exc:
            if _status(exc) == 404:
                return False
            self._fail("check", key, exc)

    def touch(self, key: str) -> bool:
        """Copy the object onto itself, which gives it a new LastModified (S3 has no utime).

        Fine for chunks (a copy is limited to 5 GiB). On a versioned bucket every touch leaves a
        noncurrent version behind; expire those with a lifecycle rule.
        """
        full = self._key(key)
        try:
            self._client.copy_object(
                Bucket=self.bucket,
                Key=full,
                CopySource={"Bucket": self.bucket, "Key": full},
                MetadataDirective="REPLACE",  # S3 refuses a copy onto itself that changes nothing
            )
            return True
        except self._errors as exc:
            if _code(exc) in ("NoSuchKey", "404"):
                return False
            self._fail("touch", key, exc)

    def delete(self, key: str) -> None:
        try:
            self._client.delete_object(Bucket=self.bucket, Key=self._key(key))
        except self._errors as exc:
            if _code(exc) != "NoSuchKey":  # S3 answers 204 anyway; some compatible stores say 404
                self._fail("delete", key, exc)

    def list(self, prefix: str) -> Iterator[StoredObject]:
        paginator = self._client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self._key(prefix)):
                for item in page.get("Contents", ()):
                    yield StoredObject(
                        key=item["Key"][len(self._root) :],
                        size=int(item["Size"]),
                        mtime=item["LastModified"].timestamp(),
                    )
        except self._errors as exc:
            self._fail("list", prefix, exc)

    def close(self) -> None:
        self._client.close()

    def _put_multipart(self, key: str, view: memoryview) -> None:
        full = self._key(key)
        # S3 allows at most 10,000 parts, so a huge value gets bigger parts.
        part_size = max(self.part_size, math.ceil(view.nbytes / MAX_PARTS))
        # Mirror s3transfer: with botocore's default checksums, parts carry a CRC32 that Complete repeats.
        checksum = (
            {"ChecksumAlgorithm": "CRC32"}
            if self._client.meta.config.request_checksum_calculation == "when_supported"
            else {}
        )
        try:
            upload_id = self._client.create_multipart_upload(Bucket=self.bucket, Key=full, **checksum)[
                "UploadId"
            ]
        except self._errors as exc:
            self._fail("put", key, exc)
        try:
            parts = []
            for number, start in enumerate(range(0, view.nbytes, part_size), start=1):
                response = self._client.upload_part(
                    Bucket=self.bucket,
                    Key=full,
                    UploadId=upload_id,
                    PartNumber=number,
                    Body=view[start : start + part_size].tobytes(),
                    **checksum,
                )
                part = {"PartNumber": number, "ETag": response["ETag"]}
                part.update({name: response[name] for name in _CHECKSUM_FIELDS if name in response})
                parts.append(part)
            self._client.complete_multipart_upload(
                Bucket=self.bucket, Key=full, UploadId=upload_id, MultipartUpload={"Parts": parts}
            )
        except BaseException as exc:
            self._abort(key, upload_id)
            if isinstance(exc, self._errors):
                self._fail("put", key, exc)
            raise

    def _abort(self, key: str, upload_id: str) -> None:
        try:
            self._client.abort_multipart_upload(Bucket=self.bucket, Key=self._key(key), UploadId=upload_id)
        except self._errors as exc:
            log.warning(
                "could not abort multipart upload %s of %s (%s); its parts stay billed until a lifecycle "
                "rule (AbortIncompleteMultipartUpload) removes them",
                upload_id,
                self._url(key),
                _reason(exc),
            )

    def _created_by_an_earlier_attempt(self, key: str, data: bytes, exc: Exception) -> bool:
        """After a 412: True only if botocore retried and the object holds our bytes.

        A first attempt can land while its response is lost (a read timeout); the retry then meets
        our own object. Without a retry the 412 means someone else got there first.
        """
        retries = getattr(exc, "response", {}).get("ResponseMetadata", {}).get("RetryAttempts", 0)
        if not retries:
            return False
        try:
            return self.get(key) == data
        except StorageNotFound:
            return False

    def _key(self, key: str) -> str:
        return f"{self._root}{key}"

    def _url(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"

    def _fail(self, action: str, key: str, exc: Exception) -> NoReturn:
        raise StorageError(f"cannot {action} {self._url(key)}: {_reason(exc)}") from exc


def _code(exc: Exception) -> str:
    """S3's error code (``NoSuchKey``, ``PreconditionFailed``, ...); empty for a connection error."""
    response = getattr(exc, "response", None)
    return str(response.get("Error", {}).get("Code", "")) if isinstance(response, dict) else ""


def _status(exc: Exception) -> int | None:
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return None
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return int(status) if status is not None else None


def _reason(exc: Exception) -> str:
    code = _code(exc)
    if code:
        message = getattr(exc, "response", {}).get("Error", {}).get("Message", "")
        text = f"{code} ({_status(exc)}): {message}" if message else f"{code} ({_status(exc)})"
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(text.split())
