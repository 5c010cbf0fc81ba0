"""A local CSV or Parquet file read in chunks, with the dtypes and the errors of reading it whole."""

from __future__ import annotations

import codecs
import hashlib
import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from airflow_mlops.hooks.storage import Storage, is_s3, local_path
from airflow_mlops.validation.batches import (
    _READ_HINT,
    DataFormat,
    _binary_kind,
    _unreadable,
    check_parquet_ends,
    detect_format,
)

if TYPE_CHECKING:
    import pandas as pd

_READ_BYTES = 8 * 1024 * 1024


@contextmanager
def local_file(uri: str, storage: Storage, engine: object = None) -> Iterator[str]:
    """
    A path to read ``uri`` from without holding it in memory: a local file as it is; an S3 object as a
    temporary copy on disk, removed afterwards, or, for the Spark engine, the URI itself (Spark reads s3a://).
    """
    if not is_s3(uri) or str(getattr(engine, "value", engine)) == "spark":
        yield uri if is_s3(uri) else local_path(uri)
        return
    with tempfile.TemporaryDirectory(prefix="airflow-mlops-batch-") as folder:
        path = os.path.join(folder, "batch" + os.path.splitext(uri)[1])
        storage.download_file(uri, path)
        yield path


@dataclass(frozen=True)
class FileCheck:
    """What one pass over the bytes found: the digest, the size and the format to parse with."""

    digest: str
    size: int
    fmt: DataFormat


def check_file(path: str, declared: DataFormat = DataFormat.AUTO) -> FileCheck:
    """
    One pass over the file's bytes, in pieces: the sha256 digest, and the checks :func:`parse_batch` makes on a
    batch in memory (empty, not Parquet, truncated, binary, not UTF-8, only whitespace), with the same errors.
    """
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        head = fh.read(4096)
        fh.seek(0)
        if not head:
            raise _unreadable(path, "the file is empty (0 bytes)", "a CSV file with a header row or a Parquet "
                              "file", "0 bytes", hint="the writer probably failed half-way; " + _READ_HINT)
        fmt = detect_format(path, head, declared)
        decoder = codecs.getincrementaldecoder("utf-8")() if fmt == DataFormat.CSV else None
        if decoder is not None and (kind := _binary_kind(head)) is not None:
            raise _unreadable(path, f"not a table, the bytes look like {kind}", "a UTF-8 CSV file or a Parquet "
                              "file", f"{kind}, starting with {head[:8]!r}")
        only_space = True
        tail = b""
        while piece := fh.read(_READ_BYTES):
            digest.update(piece)
            if decoder is not None:
                try:
                    text = decoder.decode(piece)
                except UnicodeDecodeError as exc:
                    at = size + exc.start
                    raise _unreadable(path, "the CSV file is not valid UTF-8", "UTF-8 text",
                                      f"byte {piece[exc.start:exc.start + 1]!r} at offset {at}",
                                      hint="re-export the file as UTF-8 (it is probably latin-1 / cp1252); "
                                      + _READ_HINT) from exc
                only_space = only_space and not text.strip()
            tail = (tail + piece)[-8:]
            size += len(piece)
    if decoder is not None:
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError as exc:
            raise _unreadable(path, "the CSV file is not valid UTF-8", "UTF-8 text",
                              f"a truncated character at offset {size - 1}",
                              hint="re-export the file as UTF-8; " + _READ_HINT) from exc
        if only_space:
            raise _unreadable(path, "the file holds only whitespace", "a CSV file with a header row",
                              repr(head[:20].decode("utf-8", "replace")))
    if fmt == DataFormat.PARQUET:
        check_parquet_ends(path, head, tail, size)
    return FileCheck("sha256:" + digest.hexdigest(), size, fmt)


_BOOLS_WITH_GAPS = "bool-with-gaps"


class AfterRead(str):
    """A dtype set after parsing each chunk: ``object`` for a column of booleans with gaps (forcing it while
    parsing would keep the words 'True' and 'False' instead of booleans)."""


def unify_dtypes(dtypes: Sequence[object]) -> object:
    """
    The dtype pandas gives a CSV column read whole, from the dtypes its chunks got: integers with floats (a
    chunk with a gap) are float64, anything else mixed is object.
    """
    import numpy as np
    import pandas as pd

    distinct = list(dict.fromkeys(str(d) for d in dtypes))
    if len(distinct) == 1 and distinct[0] != _BOOLS_WITH_GAPS:
        return dtypes[0]
    if _BOOLS_WITH_GAPS not in distinct and all(
        pd.api.types.is_numeric_dtype(d) and not pd.api.types.is_bool_dtype(d) for d in dtypes
    ):
        return np.result_type(*[np.dtype(str(d)) for d in dtypes])
    if not any(str(d) == "object" for d in dtypes):
        return AfterRead("object")
    return np.dtype(object)


def _csv_dtypes(path: str, chunk_rows: int) -> dict[str, object]:
    import pandas as pd

    seen: dict[str, list[object]] = {}
    for chunk in pd.read_csv(path, chunksize=chunk_rows):
        for name, dtype in chunk.dtypes.items():
            if str(dtype) == "object" and chunk[name].dropna().map(type).eq(bool).all():
                dtype = _BOOLS_WITH_GAPS  # booleans and gaps: pandas gives object, but no text
            seen.setdefault(str(name), []).append(dtype)
    return {name: unify_dtypes(found) for name, found in seen.items()}


def iter_frames(path: str, fmt: DataFormat, chunk_rows: int, columns: Sequence[str] | None = None,
                csv_dtypes: dict[str, object] | None = None) -> Iterator[pd.DataFrame]:
    """
    The table as DataFrames of at most ``chunk_rows`` rows, in file order; the dtypes are those of reading the
    file whole (Parquet: the file's schema; CSV: ``csv_dtypes``, from :func:`csv_dtypes`).
    """
    import pandas as pd

    if fmt == DataFormat.PARQUET:
        import pyarrow.parquet as pq

        try:
            # pre_buffer=False: pyarrow otherwise keeps what it read ahead, and memory grows with the file.
            pf = pq.ParquetFile(path, pre_buffer=False)
            for batch in pf.iter_batches(batch_size=chunk_rows, columns=list(columns) if columns else None):
                yield batch.to_pandas()
        except Exception as exc:  # pyarrow raises several types for a damaged file
            raise _unreadable(path, "the Parquet file is damaged", "a readable Parquet file",
                              f"{type(exc).__name__}: {exc}") from exc
        return
    dtypes = csv_dtypes if csv_dtypes is not None else _csv_dtypes(path, chunk_rows)
    if columns:
        dtypes = {k: v for k, v in dtypes.items() if k in columns}
    after = [k for k, v in dtypes.items() if isinstance(v, AfterRead)]
    forced = {k: v for k, v in dtypes.items() if not isinstance(v, AfterRead)}
    try:
        for chunk in pd.read_csv(path, chunksize=chunk_rows, dtype=forced,
                                 usecols=list(columns) if columns else None):
            if after:
                chunk[after] = chunk[after].astype(object)
            yield chunk
    except (ValueError, pd.errors.ParserError) as exc:
        raise _unreadable(path, "the CSV file cannot be parsed", "a CSV file with one header row and rows of the "
                          "same width", f"{type(exc).__name__}: {exc}") from exc


def csv_dtypes(path: str, chunk_rows: int) -> dict[str, object]:
    """The dtypes of a CSV file read whole, found chunk by chunk (a first pass over the file)."""
    import pandas as pd

    try:
        return _csv_dtypes(path, chunk_rows)
    except (ValueError, pd.errors.ParserError) as exc:
        raise _unreadable(path, "the CSV file cannot be parsed", "a CSV file with one header row and rows of the "
                          "same width", f"{type(exc).__name__}: {exc}") from exc


def empty_frame(path: str, fmt: DataFormat, csv_types: dict[str, object] | None = None) -> pd.DataFrame:
    """No rows, the table's columns and dtypes: for schema checks that need no data."""
    import pandas as pd

    if fmt == DataFormat.PARQUET:
        import pyarrow.parquet as pq

        try:
            return pq.ParquetFile(path, pre_buffer=False).schema_arrow.empty_table().to_pandas()
        except Exception as exc:  # pyarrow raises several types for a damaged footer
            raise _unreadable(path, "the Parquet file is damaged", "a readable Parquet file",
                              f"{type(exc).__name__}: {exc}") from exc
    types = csv_types if csv_types is not None else csv_dtypes(path, 10_000)
    return pd.DataFrame({name: pd.Series([], dtype=str(dtype)) for name, dtype in types.items()})
