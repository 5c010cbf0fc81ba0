"""Storage: a small protocol over string paths, with local-disk and S3 (boto3) implementations.

This module imports no Airflow: the training workers use it inside torchrun's processes.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable
from urllib.parse import urlparse

from airflow_mlops.exceptions import MlopsConfigurationError, StorageError, explain

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client  # noqa: F401

#: Files larger than this go up in parts (boto3 multipart upload).
MULTIPART_THRESHOLD = 64 * 1024 * 1024
MULTIPART_CHUNKSIZE = 16 * 1024 * 1024


@runtime_checkable
class Storage(Protocol):
    """What the checkpoint manager, validation and registry need from a store, over string paths."""

    def exists(self, path: str) -> bool: ...

    def read_bytes(self, path: str) -> bytes: ...

    def write_bytes(self, path: str, data: bytes) -> None: ...

    def upload_file(self, local_path: str, path: str) -> None: ...

    def download_file(self, path: str, local_path: str) -> None: ...

    def list(self, prefix: str) -> list[str]: ...

    def delete(self, path: str) -> None: ...

    def delete_prefix(self, prefix: str) -> int: ...

    def size(self, path: str) -> int: ...


def join(base: str, *parts: str) -> str:
    """Join path parts with '/' for s3:// URIs and the OS separator for local paths."""
    if is_s3(base):
        out = base.rstrip("/")
        for part in parts:
            out = f"{out}/{part.strip('/')}"
        return out
    return str(Path(base, *parts))


def is_s3(path: str) -> bool:
    return path.startswith("s3://")


def split_s3(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` -> ``(bucket, key)``."""
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise MlopsConfigurationError(
            explain("Not an S3 URI", expected="s3://<bucket>/<key>", received=uri)
        )
    return parsed.netloc, parsed.path.lstrip("/")


def local_path(path: str) -> str:
    """Accept plain paths and file:// URIs for local storage."""
    if path.startswith("file://"):
        return urlparse(path).path
    return path


class LocalStorage:
    """Local disk. Writes are atomic: a temporary file in the same folder, fsync, then rename."""

    def exists(self, path: str) -> bool:
        return os.path.exists(local_path(path))

    def read_bytes(self, path: str) -> bytes:
        p = local_path(path)
        try:
            with open(p, "rb") as fh:
                return fh.read()
        except FileNotFoundError as exc:
            raise StorageError(explain("File not found", expected="an existing file", received=p)) from exc

    def write_bytes(self, path: str, data: bytes) -> None:
        p = local_path(path)
        os.makedirs(os.path.dirname(p) or ".", exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=os.path.dirname(p) or ".")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, p)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def upload_file(self, local_src: str, path: str) -> None:
        dst = local_path(path)
        if os.path.abspath(local_src) == os.path.abspath(dst):
            return
        os.makedirs(os.path.dirname(dst) or ".", exist_ok=True)
        tmp = f"{dst}.tmp-{os.getpid()}"
        shutil.copyfile(local_src, tmp)
        os.replace(tmp, dst)

    def download_file(self, path: str, local_dst: str) -> None:
        src = local_path(path)
        if not os.path.exists(src):
            raise StorageError(explain("File not found", expected="an existing file", received=src))
        if os.path.abspath(src) != os.path.abspath(local_dst):
            os.makedirs(os.path.dirname(local_dst) or ".", exist_ok=True)
            shutil.copyfile(src, local_dst)

    def list(self, prefix: str) -> list[str]:
        root = local_path(prefix)
        if os.path.isfile(root):
            return [root]
        out: list[str] = []
        for dirpath, _dirs, files in os.walk(root):
            out.extend(os.path.join(dirpath, f) for f in files)
        return sorted(out)

    def delete(self, path: str) -> None:
        p = local_path(path)
        if os.path.isdir(p):
            shutil.rmtree(p)
        elif os.path.exists(p):
            os.unlink(p)

    def delete_prefix(self, prefix: str) -> int:
        p = local_path(prefix)
        if not os.path.exists(p):
            return 0
        n = len(self.list(p))
        self.delete(p)
        return n

    def size(self, path: str) -> int:
        return os.path.getsize(local_path(path))


def s3_client_kwargs_from_env() -> dict[str, Any]:
    """boto3 client settings from the environment (credentials themselves are read by boto3)."""
    kwargs: dict[str, Any] = {}
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        kwargs["endpoint_url"] = endpoint
    region = os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION")
    if region:
        kwargs["region_name"] = region
    return kwargs


class S3Storage:
    """Any S3-compatible store through boto3; large files are uploaded in parts."""

    def __init__(self, client: Any | None = None, **client_kwargs: Any) -> None:
        self._client = client
        self._client_kwargs = client_kwargs or s3_client_kwargs_from_env()

    @property
    def client(self) -> Any:
        if self._client is None:
            import boto3

            self._client = boto3.session.Session().client("s3", **self._client_kwargs)
        return self._client

    def _transfer_config(self) -> Any:
        from boto3.s3.transfer import TransferConfig

        return TransferConfig(multipart_threshold=MULTIPART_THRESHOLD, multipart_chunksize=MULTIPART_CHUNKSIZE)

    def exists(self, path: str) -> bool:
        from botocore.exceptions import ClientError

        bucket, key = split_s3(path)
        try:
            self.client.head_object(Bucket=bucket, Key=key)
            return True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise StorageError(f"Cannot check {path}: {exc}") from exc

    def read_bytes(self, path: str) -> bytes:
        from botocore.exceptions import ClientError

        bucket, key = split_s3(path)
        try:
            return self.client.get_object(Bucket=bucket, Key=key)["Body"].read()
        except ClientError as exc:
            raise StorageError(explain("Cannot read S3 object", expected="an existing object", received=path,
                                       hint=str(exc))) from exc

    def write_bytes(self, path: str, data: bytes) -> None:
        bucket, key = split_s3(path)
        # A single PUT is atomic on S3: readers see the old object or the whole new one.
        self.client.put_object(Bucket=bucket, Key=key, Body=data)

    def upload_file(self, local_src: str, path: str) -> None:
        bucket, key = split_s3(path)
        self.client.upload_file(local_src, bucket, key, Config=self._transfer_config())

    def download_file(self, path: str, local_dst: str) -> None:
        from botocore.exceptions import ClientError

        bucket, key = split_s3(path)
        os.makedirs(os.path.dirname(local_dst) or ".", exist_ok=True)
        try:
            self.client.download_file(bucket, key, local_dst, Config=self._transfer_config())
        except ClientError as exc:
            raise StorageError(explain("Cannot download S3 object", expected="an existing object",
                                       received=path, hint=str(exc))) from exc

    def list(self, prefix: str) -> list[str]:
        bucket, key = split_s3(prefix)
        paginator = self.client.get_paginator("list_objects_v2")
        out: list[str] = []
        for page in paginator.paginate(Bucket=bucket, Prefix=key):
            out.extend(f"s3://{bucket}/{obj['Key']}" for obj in page.get("Contents", []))
        return sorted(out)

    def delete(self, path: str) -> None:
        bucket, key = split_s3(path)
        self.client.delete_object(Bucket=bucket, Key=key)

    def delete_prefix(self, prefix: str) -> int:
        bucket, _ = split_s3(prefix)
        keys = [split_s3(p)[1] for p in self.list(prefix)]
        for i in range(0, len(keys), 1000):
            chunk = keys[i : i + 1000]
            self.client.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in chunk]})
        return len(keys)

    def size(self, path: str) -> int:
        bucket, key = split_s3(path)
        return int(self.client.head_object(Bucket=bucket, Key=key)["ContentLength"])


def get_storage(path: str, s3_client_kwargs: dict[str, Any] | None = None) -> Storage:
    """The storage that serves ``path``: S3 for s3:// URIs, local disk otherwise."""
    if is_s3(path):
        return S3Storage(**(s3_client_kwargs or {}))
    scheme = urlparse(path).scheme
    if scheme not in ("", "file") and len(scheme) > 1:  # len>1 keeps Windows drive letters local
        raise MlopsConfigurationError(
            explain("Unsupported storage scheme", expected="a local path, file:// or s3:// URI", received=path)
        )
    return LocalStorage()
