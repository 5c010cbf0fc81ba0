"""Checkpoint manifest: folder naming, per-file digests and sizes, and the commit marker readers trust."""

from __future__ import annotations

import json
import os
import re
import time
from typing import IO, Any

from airflow_mlops.checkpoints import digest
from airflow_mlops.exceptions import CheckpointCorruptError, CheckpointError, explain

FORMAT = "airflow-mlops-checkpoint/2"  # files digested as sha256 pieces (digest.py)
READABLE_FORMATS = ("airflow-mlops-checkpoint/1", FORMAT)  # format 1: plain sha256 per file
MANIFEST_NAME = "manifest.json"
STEP_DIR_RE = re.compile(r"^step-(\d{10})$")
TMP_PREFIX = ".tmp-"


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
    A write-only file wrapper that digests what passes through, so a file is never read back to be digested.

    Large writes (tensor storages) are hashed piece by piece on a thread pool while this thread writes them;
    the call returns once both are done.
    """

    def __init__(self, fh: IO[bytes]) -> None:
        self._fh = fh
        self._hasher = digest.PieceHasher()

    def write(self, data: Any) -> int:
        return self._hasher.update_while(data, lambda: self._fh.write(data))  # type: ignore[return-value]

    def flush(self) -> None:
        self._fh.flush()

    @property
    def size(self) -> int:
        return self._hasher.size

    def entry(self) -> dict[str, Any]:
        """The manifest entry of what was written."""
        return digest.entry(self._hasher)


def build_manifest(
    *,
    step: int,
    epoch: int,
    files: dict[str, dict[str, Any]],
    metrics: dict[str, float] | None = None,
    meta: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The manifest: format, step, epoch, metrics, creation time, ``files`` {relative name: digest entry}."""
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
    if not isinstance(manifest, dict) or manifest.get("format") not in READABLE_FORMATS or not isinstance(
        manifest.get("files"), dict
    ):
        raise CheckpointCorruptError(
            explain(f"Manifest of {uri} is not a checkpoint manifest",
                    expected=f"format one of {READABLE_FORMATS} with files",
                    received={k: manifest.get(k) for k in ("format", "step")} if isinstance(manifest, dict)
                    else type(manifest))
        )
    for name in manifest["files"]:
        check_name(name, uri)
    return manifest


def check_name(name: Any, uri: str) -> str:
    """Refuse a manifest file name that is not a plain relative name under the checkpoint folder."""
    parts = name.split("/") if isinstance(name, str) else []
    if (not parts or name.startswith("/") or "\\" in name or ":" in parts[0] or "\x00" in name
            or any(p in ("", ".", "..") for p in parts)):
        raise CheckpointCorruptError(
            explain(f"Manifest of {uri} lists a file name outside its checkpoint folder; nothing was read",
                    expected="a plain relative name such as 'model.pt' or 'dcp/__0_0.distcp' (no absolute path, "
                    "'..', '.', backslash or empty segment)", received=str(name)[:200],
                    hint="the manifest was not written by this package; delete the checkpoint and check who "
                    "can write to the checkpoint store.")
        )
    return name


def check_file(name: str, expected: dict[str, Any], actual: dict[str, Any], uri: str) -> None:
    """Raise :class:`CheckpointCorruptError` unless ``actual`` (from :func:`digest.matching`) equals the entry."""
    if not digest.same(expected, actual):
        raise CheckpointCorruptError(
            explain(
                f"Checkpoint file {name} of {uri} does not match its manifest",
                expected=digest.describe(expected),
                received=digest.describe(actual),
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
