"""Storage: a small protocol over string paths, with local-disk and S3 (boto3) implementations.

This module imports no Airflow: the training workers use it inside torchrun's processes.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable
from urllib.parse import urlparse

from airflow_mlops.exceptions import MlopsConfigurationError, StorageError, explain

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client  # noqa: F401

#: Files larger than this go up in parts (boto3 multipart upload).
MULTIPART_THRESHOLD = 64 * 1024 * 1024
MULTIPART_CHUNKSIZE = 16 * 1024 * 1024
#: Seconds a storage call keeps retrying an unreachable or failing endpoint before it raises (environment
#: ``MLOPS_STORAGE_RETRY_BUDGET_S``); botocore retries each attempt a few times on its own first.
RETRY_BUDGET_ENV = "MLOPS_STORAGE_RETRY_BUDGET_S"
DEFAULT_RETRY_BUDGET_S = 120.0
BOTO_MAX_ATTEMPTS = 3
_TRANSIENT_CODES = {"InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout", "RequestTimeTooSkewed",
                    "Throttling", "ThrottlingException", "500", "502", "503", "504"}

log = logging.getLogger("airflow_mlops.storage")
T = TypeVar("T")


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


def s3_client_kwargs_from_env(env: dict[str, str] | None = None) -> dict[str, Any]:
    """
    boto3 client settings from the environment (credentials themselves are read by boto3), or from ``env``
    (a child process's environment, credentials included).
    """
    source = os.environ if env is None else env
    kwargs: dict[str, Any] = {}
    endpoint = source.get("AWS_ENDPOINT_URL_S3") or source.get("AWS_ENDPOINT_URL")
    if endpoint:
        kwargs["endpoint_url"] = endpoint
    region = source.get("AWS_DEFAULT_REGION") or source.get("AWS_REGION")
    if region:
        kwargs["region_name"] = region
    if env is not None:
        for var, key in (("AWS_ACCESS_KEY_ID", "aws_access_key_id"), ("AWS_SECRET_ACCESS_KEY", "aws_secret_access_key"),
                         ("AWS_SESSION_TOKEN", "aws_session_token")):
            if source.get(var):
                kwargs[key] = source[var]
    return kwargs


def retry_budget_s() -> float:
    try:
        return max(0.0, float(os.environ.get(RETRY_BUDGET_ENV, DEFAULT_RETRY_BUDGET_S)))
    except ValueError:
        return DEFAULT_RETRY_BUDGET_S


def is_transient(exc: BaseException) -> bool:
    """Whether a storage error may go away by itself: connection trouble, timeouts, throttling, 5xx."""
    from botocore.exceptions import ClientError, HTTPClientError
    from botocore.exceptions import ConnectionError as BotoConnectionError

    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, BotoConnectionError | HTTPClientError | ConnectionError | TimeoutError):
            return True
        if isinstance(exc, ClientError):
            error = exc.response.get("Error", {})
            status = str(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
            return str(error.get("Code")) in _TRANSIENT_CODES or status in _TRANSIENT_CODES
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return False


def _not_found(exc: BaseException) -> bool:
    from botocore.exceptions import ClientError

    return isinstance(exc, ClientError) and exc.response.get("Error", {}).get("Code") in (
        "404", "NoSuchKey", "NotFound")


def backoff_s(attempt: int, base: float = 0.5, cap: float = 8.0) -> float:
    """Exponential backoff with jitter: somewhere in the upper half of ``min(cap, base * 2**attempt)``."""
    return min(cap, base * 2**attempt) * random.uniform(0.5, 1.0)


class S3Storage:
    """
    Any S3-compatible store through boto3; large files are uploaded in parts.

    Every call retries: botocore's standard mode a few times per attempt, then this class with exponential
    backoff and jitter until ``retry_budget_s`` (default from ``MLOPS_STORAGE_RETRY_BUDGET_S``, 120 s) is
    spent, with a warning naming the endpoint and the URI before each retry. Every call here is idempotent
    (whole-object PUTs, deletes, reads), so repeating one is safe.
    """

    def __init__(self, client: Any | None = None, retry_budget_s: float | None = None, **client_kwargs: Any) -> None:
        self._client = client
        self._client_kwargs = client_kwargs or s3_client_kwargs_from_env()
        self.retry_budget_s = retry_budget_s

    @property
    def client(self) -> Any:
        if self._client is None:
            import boto3
            from botocore.config import Config

            config = Config(retries={"mode": "standard", "max_attempts": BOTO_MAX_ATTEMPTS}, connect_timeout=5,
                            read_timeout=60)
            self._client = boto3.session.Session().client("s3", config=config, **self._client_kwargs)
        return self._client

    @property
    def endpoint(self) -> str:
        try:
            return str(self.client.meta.endpoint_url)
        except Exception:  # noqa: BLE001
            return "?"

    def _call(self, what: str, uri: str, fn: Callable[[], T], missing_ok: bool = False) -> T:
        budget = self.retry_budget_s if self.retry_budget_s is not None else retry_budget_s()
        started = time.monotonic()
        attempt = 0
        while True:
            try:
                return fn()
            except Exception as exc:
                if missing_ok and _not_found(exc):
                    raise
                elapsed = time.monotonic() - started
                if not is_transient(exc) or elapsed >= budget:
                    raise StorageError(
                        explain(f"S3 {what} failed for {uri}", expected=f"an answer from {self.endpoint}",
                                received=f"{type(exc).__name__}: {exc}",
                                hint=(f"retried for {elapsed:.0f}s ({attempt + 1} attempts, budget {budget:.0f}s "
                                      f"from {RETRY_BUDGET_ENV}); check that the endpoint is reachable."
                                      if is_transient(exc) else "check the URI and the credentials."))
                    ) from exc
                pause = min(backoff_s(attempt), max(budget - elapsed, 0.0))
                log.warning("S3 %s of %s at %s failed (%s: %s); retrying in %.1fs (%.0fs of %.0fs spent)", what,
                            uri, self.endpoint, type(exc).__name__, exc, pause, elapsed, budget)
                time.sleep(pause)
                attempt += 1

    def _transfer_config(self) -> Any:
        from boto3.s3.transfer import TransferConfig

        return TransferConfig(multipart_threshold=MULTIPART_THRESHOLD, multipart_chunksize=MULTIPART_CHUNKSIZE)

    def exists(self, path: str) -> bool:
        bucket, key = split_s3(path)
        try:
            self._call("check", path, lambda: self.client.head_object(Bucket=bucket, Key=key), missing_ok=True)
            return True
        except StorageError:
            raise
        except Exception as exc:
            if _not_found(exc):
                return False
            raise

    def read_bytes(self, path: str) -> bytes:
        bucket, key = split_s3(path)
        try:
            return self._call("read", path, lambda: self.client.get_object(Bucket=bucket, Key=key)["Body"].read(),
                              missing_ok=True)
        except StorageError:
            raise
        except Exception as exc:
            raise StorageError(explain("Cannot read S3 object", expected="an existing object", received=path,
                                       hint=str(exc))) from exc

    def write_bytes(self, path: str, data: bytes) -> None:
        bucket, key = split_s3(path)
        # A single PUT is atomic on S3: readers see the old object or the whole new one.
        self._call("write", path, lambda: self.client.put_object(Bucket=bucket, Key=key, Body=data))

    def upload_file(self, local_src: str, path: str) -> None:
        bucket, key = split_s3(path)
        self._call("upload", path,
                   lambda: self.client.upload_file(local_src, bucket, key, Config=self._transfer_config()))

    def download_file(self, path: str, local_dst: str) -> None:
        bucket, key = split_s3(path)
        os.makedirs(os.path.dirname(local_dst) or ".", exist_ok=True)
        try:
            self._call("download", path, lambda: self.client.download_file(bucket, key, local_dst,
                                                                            Config=self._transfer_config()),
                       missing_ok=True)
        except StorageError:
            raise
        except Exception as exc:
            raise StorageError(explain("Cannot download S3 object", expected="an existing object",
                                       received=path, hint=str(exc))) from exc

    def list(self, prefix: str) -> list[str]:
        bucket, key = split_s3(prefix)

        def pages() -> list[str]:
            out: list[str] = []
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key):
                out.extend(f"s3://{bucket}/{obj['Key']}" for obj in page.get("Contents", []))
            return out

        return sorted(self._call("listing", prefix, pages))

    def delete(self, path: str) -> None:
        bucket, key = split_s3(path)
        self._call("delete", path, lambda: self.client.delete_object(Bucket=bucket, Key=key))

    def delete_prefix(self, prefix: str) -> int:
        bucket, _ = split_s3(prefix)
        keys = [split_s3(p)[1] for p in self.list(prefix)]
        for i in range(0, len(keys), 1000):
            chunk = keys[i : i + 1000]
            self._call("delete", prefix, lambda chunk=chunk: self.client.delete_objects(
                Bucket=bucket, Delete={"Objects": [{"Key": k} for k in chunk]}))
        return len(keys)

    def size(self, path: str) -> int:
        bucket, key = split_s3(path)
        return int(self._call("check", path, lambda: self.client.head_object(Bucket=bucket, Key=key))["ContentLength"])


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
