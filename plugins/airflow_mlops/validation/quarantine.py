"""Quarantine: copy a rejected batch to ``<root>/<timestamp>-<name>/`` with a ``reason.json``; never move it."""

from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from airflow_mlops.hooks.storage import Storage, is_s3, join, local_path

REASON_FILE = "reason.json"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def batch_name(data_path: str) -> str:
    """The file name of a batch, made safe for a folder name."""
    name = posixpath.basename(local_path(data_path).rstrip("/").replace("\\", "/")) or "batch"
    return _UNSAFE.sub("_", name)


def quarantine_folder(root: str, data_path: str, now: datetime) -> str:
    """``<root>/<UTC timestamp to the microsecond>-<file name>``: sorts by time, never collides in practice."""
    stamp = now.astimezone(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    return join(root, f"{stamp}-{batch_name(data_path)}")


def quarantine_batch(
    data_path: str,
    data: bytes | None,
    root: str,
    reason: Mapping[str, Any],
    storage: Storage,
    now: datetime | None = None,
    source_file: str | None = None,
) -> str:
    """
    Write a copy of the batch and then ``reason.json`` (last, so a folder with a reason is complete).

    The copy is ``data``, or with ``data=None`` the local file ``source_file`` (a table too large to hold in
    memory is copied file to file). The original at ``data_path`` is not touched. Returns the quarantine folder.
    """
    now = now or datetime.now(UTC)
    folder = quarantine_folder(root, data_path, now)
    if data is None and source_file is not None:
        storage.upload_file(source_file, join(folder, batch_name(data_path)))
    else:
        storage.write_bytes(join(folder, batch_name(data_path)), data or b"")
    doc = {
        "data_uri": data_path,
        "quarantined_at": now.astimezone(UTC).isoformat(),
        "copy": join(folder, batch_name(data_path)),
        **dict(reason),
    }
    storage.write_bytes(join(folder, REASON_FILE), json.dumps(doc, indent=2, default=str).encode("utf-8"))
    return folder if is_s3(folder) else local_path(folder)
