"""Tables on local disk or S3: read, write, digest, and cut time windows with a deterministic holdout."""

from __future__ import annotations

import hashlib
import io
import os
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from airflow_mlops.exceptions import MlopsConfigurationError, StorageError, explain
from airflow_mlops.hooks.storage import Storage, get_storage

if TYPE_CHECKING:
    import pandas as pd

TABLE_FORMATS = (".csv", ".parquet", ".pq")


def table_format(path: str) -> str:
    lower = path.lower()
    if lower.endswith(".csv"):
        return "csv"
    if lower.endswith((".parquet", ".pq")):
        return "parquet"
    raise MlopsConfigurationError(
        explain("Unknown table format", expected=f"a path ending in one of {TABLE_FORMATS}", received=path)
    )


def digest_bytes(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def parse_table(data: bytes, path: str) -> pd.DataFrame:
    """A table from bytes already read, in the format its path names."""
    import pandas as pd

    buf = io.BytesIO(data)
    return pd.read_csv(buf) if table_format(path) == "csv" else pd.read_parquet(buf)


def read_table(path: str, storage: Storage | None = None) -> pd.DataFrame:
    table_format(path)  # refuse an unknown format before reading anything
    return parse_table((storage or get_storage(path)).read_bytes(path), path)


def write_table(df: pd.DataFrame, path: str, storage: Storage | None = None) -> str:
    """Write a table atomically and return the digest of the bytes written."""
    storage = storage or get_storage(path)
    buf = io.BytesIO()
    if table_format(path) == "csv":
        buf.write(df.to_csv(index=False).encode("utf-8"))
    else:
        df.to_parquet(buf, index=False)
    data = buf.getvalue()
    storage.write_bytes(path, data)
    return digest_bytes(data)


def holdout_mask(keys: pd.Series, fraction: float, seed: int = 0):
    """Deterministic holdout: a row is held out from a hash of its key, so reruns pick the same rows."""
    import numpy as np

    h = (keys.astype("uint64").to_numpy() + np.uint64(seed)) * np.uint64(2654435761) % np.uint64(2**32)
    return h.astype("float64") / 2**32 < fraction


@dataclass(frozen=True)
class WindowSpec:
    """A time window of a source table and how to split it into training and holdout rows."""

    source_uri: str
    time_column: str
    start: str
    end: str
    key_column: str | None = None
    holdout_fraction: float = 0.2
    min_rows: int = 1

    def __post_init__(self) -> None:
        if not (0.0 <= self.holdout_fraction < 1.0):
            raise MlopsConfigurationError(
                explain("holdout_fraction out of range", expected="0 <= fraction < 1", received=self.holdout_fraction)
            )
        if str(self.start) > str(self.end):
            raise MlopsConfigurationError(
                explain("Window start is after its end", expected="start <= end",
                        received=f"{self.start} > {self.end}", hint="swap the data window Params.")
            )


@dataclass(frozen=True)
class WindowResult:
    train_uri: str
    holdout_uri: str | None
    rows: int
    train_rows: int
    holdout_rows: int
    start: str
    end: str
    source_uri: str
    source_digest: str
    train_digest: str

    def to_dict(self) -> dict:
        return asdict(self)


def cut_window(spec: WindowSpec, out_dir: str, storage: Storage | None = None, fmt: str = "csv") -> WindowResult:
    """Cut ``[start, end]`` (inclusive, compared as strings: ISO dates) out of the source into ``out_dir``."""
    src_storage = get_storage(spec.source_uri)
    if not src_storage.exists(spec.source_uri):
        raise StorageError(
            explain("Source table not found", expected="an existing CSV or Parquet file", received=spec.source_uri,
                    hint="build the bundled data set with `make data` (include/datasets/build_rainfall.py).")
        )
    raw = src_storage.read_bytes(spec.source_uri)
    src = parse_table(raw, spec.source_uri)
    if spec.time_column not in src.columns:
        raise MlopsConfigurationError(
            explain("Time column missing from source table", expected=spec.time_column,
                    received=sorted(src.columns))
        )
    t = src[spec.time_column].astype(str)
    window = src[(t >= str(spec.start)) & (t <= str(spec.end))].reset_index(drop=True)
    if len(window) < spec.min_rows:
        raise MlopsConfigurationError(
            explain("Data window holds too few rows", expected=f">= {spec.min_rows} rows",
                    received=f"{len(window)} rows between {spec.start} and {spec.end}",
                    hint=f"the source covers {t.min()} to {t.max()}.")
        )
    storage = storage or get_storage(out_dir)
    name = f"{spec.start}_{spec.end}"
    sep = "/" if out_dir.startswith("s3://") else os.sep
    train_uri = f"{out_dir.rstrip('/')}{sep}train_{name}.{fmt}"
    holdout_uri = None
    holdout_rows = 0
    if spec.holdout_fraction > 0:
        keys = window[spec.key_column] if spec.key_column else window.index.to_series()
        mask = holdout_mask(keys, spec.holdout_fraction)
        train, holdout = window[~mask], window[mask]
        holdout_uri = f"{out_dir.rstrip('/')}{sep}holdout_{name}.{fmt}"
        write_table(holdout, holdout_uri, storage)
        holdout_rows = len(holdout)
    else:
        train = window
    train_digest = write_table(train, train_uri, storage)
    return WindowResult(
        train_uri=train_uri,
        holdout_uri=holdout_uri,
        rows=len(window),
        train_rows=len(train),
        holdout_rows=holdout_rows,
        start=str(spec.start),
        end=str(spec.end),
        source_uri=spec.source_uri,
        source_digest=digest_bytes(raw),
        train_digest=train_digest,
    )
