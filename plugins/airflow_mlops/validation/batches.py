"""Batches: where a batch may be read from, and turning its bytes into a DataFrame with clear errors."""

from __future__ import annotations

import io
import os
from enum import StrEnum
from typing import TYPE_CHECKING

from airflow_mlops.exceptions import StorageError, explain
from airflow_mlops.hooks.storage import Storage, is_s3, local_path, split_s3
from airflow_mlops.validation.errors import BatchNotFoundError, BatchReadError, PathOutsideRootError

if TYPE_CHECKING:
    import pandas as pd

PARQUET_MAGIC = b"PAR1"
_BINARY_SIGNATURES = {
    b"\x89PNG\r\n\x1a\n": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"GIF8": "a GIF image",
    b"%PDF": "a PDF document",
    b"PK\x03\x04": "a ZIP archive (xlsx, docx or zip)",
    b"\x1f\x8b": "a gzip archive",
}
_READ_HINT = "check the upstream task that wrote it (the original file is left untouched)."


class DataFormat(StrEnum):
    """How a batch is parsed; ``AUTO`` picks by extension, then by content."""

    AUTO = "auto"
    CSV = "csv"
    PARQUET = "parquet"


#: ``allowed_root`` that opts out of the root check (any local path, any S3 object without ``.``/``..``).
ANYWHERE = "/"


def default_data_root() -> str:
    """
    The root a data path must lie under when none is given: env ``MLOPS_DATA_DIR``, else ``data/`` of
    ``MLOPS_PROJECT_ROOT``, else ``data/`` of the working directory (the reference pipelines' data folder).
    """
    from airflow_mlops.spec import project_paths

    return project_paths()["MLOPS_DATA_DIR"]


def check_under_root(path: str, allowed_root: str | None, what: str = "Path") -> str:
    """``path`` resolved and checked against ``allowed_root`` (None: :func:`default_data_root`) before any I/O."""
    return resolve_data_path(path, allowed_root or default_data_root(), what=what)


def resolve_data_path(path: str, allowed_root: str | None = None, what: str = "Data path") -> str:
    """
    The path every later step uses; refuses one that escapes ``allowed_root``.

    Local paths are resolved (``..`` and symlinks) and must stay under the resolved root. S3 keys are kept
    literal and refused when they hold ``.`` or ``..`` segments or lie outside the root's bucket and prefix.
    """
    if not isinstance(path, str) or not path.strip():
        raise BatchNotFoundError(
            explain("No data path was given", expected="a local path, file:// or s3:// URI", received=path,
                    hint="check the templated data_path of the task.")
        )
    if is_s3(path):
        # S3 keys are literal (no '..' resolution on the server), so they are not normalised; a '..' or '.'
        # segment is refused instead because other tools would read it as a relative path.
        bucket, key = split_s3(path)
        escaped = any(part in ("..", ".") for part in key.split("/"))
        if allowed_root is not None and allowed_root != ANYWHERE:
            if not is_s3(allowed_root):
                escaped = True
            else:
                root_bucket, root_key = split_s3(allowed_root)
                prefix = root_key.strip("/") + "/" if root_key.strip("/") else ""
                escaped = escaped or root_bucket != bucket or not key.startswith(prefix)
        if escaped:
            raise PathOutsideRootError(
                explain(f"{what} {path} leaves the allowed root", expected=f"an object under {allowed_root}"
                        if allowed_root else "an S3 key without '..' or '.' segments", received=path,
                        hint="pass a path inside the allowed root; '..' and '.' segments are refused. The "
                        "default root is the data folder (env MLOPS_DATA_DIR); set allowed_root to the "
                        "bucket prefix (or '/' to opt out).")
            )
        return path
    resolved = os.path.realpath(local_path(path))
    if allowed_root is not None:
        root = os.path.realpath(local_path(allowed_root))
        if os.path.commonpath([root, resolved]) != root:
            raise PathOutsideRootError(
                explain(f"{what} {path} resolves to {resolved}, outside the allowed root",
                        expected=f"a file under {root}", received=path,
                        hint="pass a path inside the allowed root; '..' segments and symlinks out of it are "
                        "refused. The default root is the data folder (env MLOPS_DATA_DIR); pass allowed_root "
                        "(or '/' to opt out).")
            )
    return resolved


def read_batch_bytes(path: str, storage: Storage) -> bytes:
    """The batch's bytes, read once; a missing file is a configuration error that names the path."""
    check_batch_exists(path, storage)
    return storage.read_bytes(path)


def check_batch_exists(path: str, storage: Storage) -> None:
    """A missing batch, or a folder, is a configuration error that names the path."""
    try:
        exists = storage.exists(path)
    except StorageError as exc:
        raise BatchNotFoundError(
            explain(f"Cannot reach data batch {path}", expected="a readable file", received=str(exc),
                    hint="check the storage connection (aws_conn_id) and the path.")
        ) from exc
    if exists and not is_s3(path) and os.path.isdir(local_path(path)):
        raise BatchNotFoundError(
            explain(f"Data batch {path} is a folder, not a file", expected="one CSV or Parquet file",
                    received=path, hint="point data_path at a file inside the folder.")
        )
    if not exists:
        raise BatchNotFoundError(
            explain(f"Data batch {path} does not exist", expected="an existing CSV or Parquet file",
                    received=path, hint="check data_path (its template and the upstream task's output).")
        )


def check_parquet_ends(path: str, head: bytes, tail: bytes, size: int) -> None:
    """Refuse a file that does not start and end with Parquet's magic bytes (``tail``: its last 8 bytes)."""
    if head[:4] != PARQUET_MAGIC:
        kind = _binary_kind(head) or "text or unknown bytes"
        raise _unreadable(path, "not a Parquet file", "a Parquet file starting with the magic bytes PAR1",
                          f"{kind}, starting with {head[:8]!r}")
    if tail[-4:] != PARQUET_MAGIC:
        raise _unreadable(path, "the Parquet file is truncated",
                          "a Parquet file ending with its footer and the magic bytes PAR1",
                          f"{size} bytes ending with {tail!r}",
                          hint="the upload or copy was cut short, rewrite the file; " + _READ_HINT)


def detect_format(path: str, data: bytes, declared: DataFormat = DataFormat.AUTO) -> DataFormat:
    """Pick the parser: the declared format, else the extension, else the content."""
    if declared != DataFormat.AUTO:
        return declared
    name = path.lower()
    if name.endswith((".parquet", ".pq", ".parq")):
        return DataFormat.PARQUET
    if name.endswith((".csv", ".txt", ".tsv")):
        return DataFormat.CSV
    return DataFormat.PARQUET if data[:4] == PARQUET_MAGIC else DataFormat.CSV


def _unreadable(path: str, problem: str, expected: str, received: object, hint: str = _READ_HINT,
                **summary: object) -> BatchReadError:
    return BatchReadError(
        explain(f"Data batch {path} is unreadable: {problem}", expected=expected, received=received, hint=hint),
        {"success": False, "data_uri": path, "reason": problem, **summary},
    )


def _binary_kind(data: bytes) -> str | None:
    for magic, kind in _BINARY_SIGNATURES.items():
        if data.startswith(magic):
            return kind
    if data[:4] == PARQUET_MAGIC:
        return "a Parquet file"
    if b"\x00" in data[:4096]:
        return "binary data (NUL bytes)"
    return None


def parse_batch(path: str, data: bytes, fmt: DataFormat = DataFormat.AUTO) -> pd.DataFrame:
    """Parse the batch's bytes into a DataFrame; every way this fails becomes a :class:`BatchReadError`."""
    import pandas as pd

    if not data:
        raise _unreadable(path, "the file is empty (0 bytes)", "a CSV file with a header row or a Parquet file",
                          "0 bytes", hint="the writer probably failed half-way; " + _READ_HINT)
    fmt = detect_format(path, data, fmt)
    if fmt == DataFormat.PARQUET:
        check_parquet_ends(path, data[:4096], data[-8:], len(data))
        try:
            return pd.read_parquet(io.BytesIO(data))
        except Exception as exc:  # pyarrow raises several types for a damaged file
            raise _unreadable(path, "the Parquet file is damaged", "a readable Parquet file",
                              f"{type(exc).__name__}: {exc}") from exc
    kind = _binary_kind(data)
    if kind is not None:
        raise _unreadable(path, f"not a table, the bytes look like {kind}", "a UTF-8 CSV file or a Parquet file",
                          f"{kind}, starting with {data[:8]!r}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _unreadable(path, "the CSV file is not valid UTF-8", "UTF-8 text",
                          f"byte {data[exc.start:exc.start + 1]!r} at offset {exc.start}",
                          hint="re-export the file as UTF-8 (it is probably latin-1 / cp1252); " + _READ_HINT) from exc
    if not text.strip():
        raise _unreadable(path, "the file holds only whitespace", "a CSV file with a header row", repr(text[:20]))
    try:
        return pd.read_csv(io.StringIO(text))
    except Exception as exc:  # pandas.errors.ParserError and friends
        raise _unreadable(path, "the CSV file cannot be parsed", "a CSV file with one header row and "
                          "rows of the same width", f"{type(exc).__name__}: {exc}") from exc


def file_problems(data: bytes, path: str) -> list[str]:
    """
    What is wrong with a CSV file as a whole, before any expectation: JSON content, a delimiter other than the
    comma, a repeated header name, a last row cut short. Parquet files carry their schema: nothing to say.
    """
    if data[:4] == PARQUET_MAGIC or path.lower().endswith((".parquet", ".pq")) or b"\x00" in data[:4096]:
        return []  # Parquet carries its schema; binary content is named by the reader already
    try:
        text = data[:1_000_000].decode("utf-8")
    except UnicodeDecodeError:
        return []
    stripped = text.lstrip()
    problems: list[str] = []
    if stripped[:1] in ("{", "["):
        problems.append("the file holds JSON, not CSV (it starts with " + repr(stripped[:1]) + ")")
        return problems
    lines = text.splitlines()
    header = lines[0] if lines else ""
    names = [c.strip().strip('"') for c in header.split(",")]
    if len(names) == 1:
        for sep, label in ((";", "semicolons"), ("\t", "tabs"), ("|", "pipes")):
            if header.count(sep) >= 1:
                problems.append(f"the columns are separated by {label}, not commas (header {_clip(header, 120)!r})")
                break
    repeated = sorted({n for n in names if n and names.count(n) > 1})
    if repeated:
        problems.append(f"the header repeats column name(s) {repeated} (pandas would read them as "
                        f"{[f'{n}.1' for n in repeated]})")
    if len(data) <= 1_000_000 and lines and not text.endswith(("\n", "\r")) and len(lines) > 1:
        last = lines[-1]
        if last.count(",") < header.count(","):
            problems.append(f"the last row is cut short: {last.count(',') + 1} of {len(names)} fields "
                            f"({_clip(last, 80)!r}); the file was truncated while written or copied")
    return problems


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + "..."
