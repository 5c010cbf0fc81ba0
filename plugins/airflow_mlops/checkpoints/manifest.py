"""Checkpoint manifest: folder naming, per-file sha256 and size, and the commit marker readers trust."""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import IO, Any

from airflow_mlops.exceptions import CheckpointCorruptError, CheckpointError, explain

FORMAT = "airflow-mlops-checkpoint/1"
MANIFEST_NAME = "manifest.json"
STEP_DIR_RE = re.compile(r"^step-(\d{10})$")
TMP_PREFIX = ".tmp-"
_CHUNK = 4 * 1024 * 1024
# Writes at least this large are hashed on a second thread while the bytes go to the file (both release the GIL).
_PARALLEL_HASH_MIN = 1024 * 1024
_hash_pool: ThreadPoolExecutor | None = None
_hash_pool_lock = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    global _hash_pool
    with _hash_pool_lock:
        if _hash_pool is None:
            _hash_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint-sha256")
        return _hash_pool


def step_dirname(step: int) -> str:
    if step < 0 or step >= 10**10:
        raise CheckpointError(explain("Step out of range for a checkpoint name", expected="0 <= step < 1e10",
                                      received=step))
    return f"step-{step:010d}"


def parse_step_dirname(name: str) -> int | None:
    """The step of a committed-checkpoint folder name, or None for anything else (temporary folders too)."""
    match = STEP_DIR_RE.match(name)
    return int(match.group(1)) if match else None


class HashingWriter:
    """
    A write-only file wrapper that hashes what passes through, so a file is never read back to be digested.

    Large writes (tensor storages) are hashed on a second thread while this one writes them, so the digest
    costs about no time next to the write; the call returns once both are done, in order.
    """

    def __init__(self, fh: IO[bytes]) -> None:
        self._fh = fh
        self._hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        size = memoryview(data).nbytes
        if size >= _PARALLEL_HASH_MIN:
            digest = _pool().submit(self._hash.update, data)
            try:
                written = self._fh.write(data)
            finally:
                digest.result()
        else:
            self._hash.update(data)
            written = self._fh.write(data)
        self.size += size
        return written

    def flush(self) -> None:
        self._fh.flush()

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()


def file_digest(path: str) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def bytes_digest(data: bytes) -> tuple[str, int]:
    return hashlib.sha256(data).hexdigest(), len(data)


def build_manifest(
    *,
    step: int,
    epoch: int,
    files: dict[str, dict[str, Any]],
    metrics: dict[str, float] | None = None,
    meta: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The manifest: format, step, epoch, metrics, creation time, ``files`` {relative name: {sha256, size}}."""
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "step": int(step),
        "epoch": int(epoch),
        "metrics": {k: _json_float(v) for k, v in (metrics or {}).items()},
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "created_unix": time.time(),
        "files": dict(sorted(files.items())),
    }
    for key, value in (meta or {}).items():
        manifest.setdefault(key, value)
    return manifest


def _json_float(value: Any) -> float | None:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if f == f and f not in (float("inf"), float("-inf")) else None


def dumps(manifest: dict[str, Any]) -> bytes:
    return json.dumps(manifest, indent=1, sort_keys=True, allow_nan=False).encode("utf-8")


def loads(data: bytes, uri: str) -> dict[str, Any]:
    try:
        manifest = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointCorruptError(
            explain(f"Manifest of {uri} is not valid JSON", expected="a JSON object", received=str(exc))
        ) from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or not isinstance(
        manifest.get("files"), dict
    ):
        raise CheckpointCorruptError(
            explain(f"Manifest of {uri} is not a checkpoint manifest", expected=f"format {FORMAT!r} with files",
                    received={k: manifest.get(k) for k in ("format", "step")} if isinstance(manifest, dict)
                    else type(manifest))
        )
    return manifest


def check_file(name: str, expected: dict[str, Any], sha256: str, size: int, uri: str) -> None:
    if size != expected.get("size") or sha256 != expected.get("sha256"):
        raise CheckpointCorruptError(
            explain(
                f"Checkpoint file {name} of {uri} does not match its manifest",
                expected=f"sha256 {expected.get('sha256')} and {expected.get('size')} bytes",
                received=f"sha256 {sha256} and {size} bytes",
                hint="the file was changed or truncated after commit; an older checkpoint is used instead.",
            )
        )


def _fsync(path: str, *, strict: bool) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return  # removed meanwhile (retention, a re-save of the step)
    except OSError:
        if strict:
            raise
        return
    try:
        os.fsync(fd)
    except OSError:
        if strict:
            raise
    finally:
        os.close(fd)


def fsync_file(path: str) -> None:
    """Flush one file's data to the device; a file removed meanwhile is skipped, an I/O error raised."""
    _fsync(path, strict=True)


def fsync_tree(path: str) -> None:
    """Flush every file under ``path``, then the folders, then the folder holding ``path`` (its name)."""
    folders = []
    for dirpath, _dirs, names in os.walk(path):
        folders.append(dirpath)
        for name in names:
            fsync_file(os.path.join(dirpath, name))
    for folder in reversed(folders):
        fsync_dir(folder)
    fsync_dir(os.path.dirname(os.path.abspath(path)))


def fsync_dir(path: str) -> None:
    """Flush a folder's entries; best effort, as some file systems refuse fsync on folders."""
    _fsync(path, strict=False)
