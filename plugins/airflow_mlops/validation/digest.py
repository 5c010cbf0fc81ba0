"""Content digests of data batches: ``sha256:<hex>`` over the file's bytes, the key lineage records."""

from __future__ import annotations

import hashlib

from airflow_mlops.exceptions import StorageError, explain
from airflow_mlops.hooks.storage import LocalStorage, Storage, get_storage, is_s3, local_path
from airflow_mlops.validation.errors import BatchNotFoundError

_CHUNK = 8 * 1024 * 1024


def bytes_digest(data: bytes) -> str:
    """Digest of bytes already in memory (the batch is read once and hashed from the same buffer)."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def dataset_digest(path: str, storage: Storage | None = None) -> str:
    """
    ``sha256:<hex>`` of the bytes of the file at ``path`` (local path, file:// or s3:// URI).

    Local files are hashed in chunks so a large batch is never held twice in memory.
    """
    storage = storage or get_storage(path)
    try:
        if not is_s3(path) and isinstance(storage, LocalStorage):
            h = hashlib.sha256()
            with open(local_path(path), "rb") as fh:
                while chunk := fh.read(_CHUNK):
                    h.update(chunk)
            return "sha256:" + h.hexdigest()
        return bytes_digest(storage.read_bytes(path))
    except (OSError, StorageError) as exc:
        raise BatchNotFoundError(
            explain(f"Cannot read {path} to compute its digest", expected="an existing, readable file",
                    received=str(exc), hint="check the path and the storage credentials.")
        ) from exc
