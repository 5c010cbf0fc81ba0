"""Tables on local disk or S3: read, write, digest, and cut typed time windows with a deterministic holdout."""

from __future__ import annotations

import hashlib
import io
import math
import numbers
import os
import re
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

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


TIME_TYPES = ("auto", "date", "numeric")
_DATE_ONLY = re.compile(r"^\s*\d{4}-\d{2}-\d{2}\s*$")
_SAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]+")


def _check_time_type(time_type: str) -> None:
    if time_type not in TIME_TYPES:
        raise MlopsConfigurationError(
            explain("Unknown time_type", expected=f"one of {TIME_TYPES}", received=time_type)
        )


def _numeric_bound(value: Any) -> int | float | None:
    """A bound as a number (``2``, ``"2"``, ``"2.5"``), or None when it is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return None if math.isnan(value) else float(value)
    text = str(value).strip()
    try:
        return int(text)
    except ValueError:
        pass
    try:
        out = float(text)
    except ValueError:
        return None
    return None if math.isnan(out) else out


def _date_bound(value: Any, end: bool = False):
    """A bound as a ``pd.Timestamp``, or None when it is not a date; an end given as a date covers its whole day."""
    import datetime as dt

    import pandas as pd

    if isinstance(value, numbers.Real):  # bool included: a number is no date
        return None
    day_only = (isinstance(value, dt.date) and not isinstance(value, dt.datetime)) or bool(
        isinstance(value, str) and _DATE_ONLY.match(value))
    try:
        ts = pd.Timestamp(value.strip() if isinstance(value, str) else value)
    except (ValueError, TypeError):
        return None
    if ts is pd.NaT:
        return None
    if end and day_only:
        ts = ts + pd.Timedelta(days=1) - pd.Timedelta(1, "ns")
    return ts


_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?)?(?:Z|[+-]\d{2}:?\d{2})?$")


def check_window_bound(value: Any, time_type: str = "auto", name: str = "Window bound") -> Any:
    """
    ``value`` typed as ``time_type`` says (``auto``: a number or a date), before it reaches a read or a file name:
    a finite number (``2``, ``"2.5"``) or a date (``date``/``datetime``, or an ISO string such as ``2024-01-31``
    or ``2024-01-31T06:00:00Z``). Free text, paths and impossible dates (``2024-13-01``) are refused.
    """
    import datetime as dt

    _check_time_type(time_type)
    kinds = ("numeric", "date") if time_type == "auto" else (time_type,)
    if "numeric" in kinds:
        number = _numeric_bound(value)
        if number is not None and math.isfinite(number):
            return number
    if "date" in kinds and (isinstance(value, dt.date) or (isinstance(value, str) and _ISO_DATE.match(value.strip()))):
        typed = _date_bound(value)
        if typed is not None:
            return typed
    expected = {"numeric": "a finite number (e.g. 2 or '2.5')",
                "date": "an ISO date or datetime (e.g. '2024-01-31' or '2024-01-31T06:00:00Z')"}
    raise MlopsConfigurationError(
        explain(f"{name} is not a {' or a '.join('number' if k == 'numeric' else 'date' for k in kinds)}",
                expected=" or ".join(expected[k] for k in kinds), received=value,
                hint="window bounds are typed values (the Params' date picker or a number), never free text; "
                "nothing was read or written.")
    )


def _bounds_kind(start: Any, end: Any, time_type: str) -> str | None:
    """What two bounds alone say about the window's type: ``numeric``, ``date`` or None (the column decides)."""
    if time_type != "auto":
        return time_type
    if _numeric_bound(start) is not None and _numeric_bound(end) is not None:
        return "numeric"
    if _date_bound(start) is not None and _date_bound(end) is not None:
        return "date"
    return None


def _typed_bound(value: Any, kind: str, column: str, dtype: Any, *, end: bool = False) -> Any:
    if value is None:
        return None
    out = _numeric_bound(value) if kind == "numeric" else _date_bound(value, end=end)
    if out is None:
        expected = "a number (e.g. 2 or '2.5')" if kind == "numeric" else "an ISO date or datetime (e.g. '2000-01-31')"
        raise MlopsConfigurationError(
            explain(f"Window bound does not fit the {kind} time column {column!r} (dtype {dtype})",
                    expected=expected, received=value,
                    hint="give bounds of the column's type, or set time_type ('auto', 'date', 'numeric').")
        )
    return out


def _align_tz(bound: Any, values: pd.Series) -> Any:
    """Compare like with like: a naive bound takes an aware column's zone; an aware bound on a naive column is UTC."""
    if bound is None:
        return None
    tz = getattr(values.dt, "tz", None)
    if tz is not None and bound.tzinfo is None:
        return bound.tz_localize(tz)
    if tz is None and bound.tzinfo is not None:
        return bound.tz_convert("UTC").tz_localize(None)
    return bound


def _parse_dates(series: pd.Series) -> pd.Series | None:
    """ISO date strings (or date objects) as timestamps; mixed UTC offsets compare in UTC; None when unparseable."""
    import warnings

    import pandas as pd
    from pandas.api import types as ptypes

    for utc in (False, True):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                values = pd.to_datetime(series, format="ISO8601", errors="coerce", utc=utc)
        except (ValueError, TypeError, OverflowError):
            continue
        if ptypes.is_datetime64_any_dtype(values.dtype):
            return values
    return None


def _column_values(series: pd.Series, time_type: str) -> tuple[pd.Series, str]:
    """The time column typed (numbers or timestamps) and its kind; anything else is refused."""
    import pandas as pd
    from pandas.api import types as ptypes

    column, dtype = series.name, series.dtype
    kind = time_type
    if time_type == "auto":
        if ptypes.is_bool_dtype(dtype):
            kind = "invalid"
        elif ptypes.is_numeric_dtype(dtype):
            kind = "numeric"
        else:
            kind = "date"
    if kind == "numeric":
        if ptypes.is_numeric_dtype(dtype) and not ptypes.is_bool_dtype(dtype):
            return series, kind
        textual = ptypes.is_object_dtype(dtype) or ptypes.is_string_dtype(dtype)
        values = pd.to_numeric(series, errors="coerce") if textual else None
        if values is not None and not (values.isna() & series.notna()).any():
            return values, kind
    elif kind == "date":
        if ptypes.is_datetime64_any_dtype(dtype):
            return series, kind
        if ptypes.is_object_dtype(dtype) or ptypes.is_string_dtype(dtype):
            values = _parse_dates(series)
            if values is not None and not (values.isna() & series.notna()).any():
                return values, kind
    bad = series.dropna().head(3).tolist()
    raise MlopsConfigurationError(
        explain(f"Time column {column!r} (dtype {dtype}) cannot be compared as a window's time",
                expected="datetime or date values, ISO date strings, or numbers (time_type "
                         f"{time_type!r})",
                received=f"values such as {bad}",
                hint="convert the column, or set time_type to 'date' or 'numeric' to say how to read it.")
    )


def typed_bounds(series: pd.Series, start: Any, end: Any, time_type: str = "auto") -> tuple[pd.Series, Any, Any]:
    """
    The time column and the window bounds typed alike, so they compare as time or numbers, never as text.

    Returns ``(values, start, end)``: ``values`` is the column as numbers or timestamps (same index), the bounds
    as numbers or ``pd.Timestamp`` (either may be None to leave that side open). ``time_type`` ``auto`` infers
    the type from the column's dtype (object columns parse as ISO dates, every value must parse), ``date`` or
    ``numeric`` forces it. An end bound given as a date (no time) covers its whole day. Raises
    :class:`MlopsConfigurationError` for a bound that does not fit the column, or a start after the end.
    Use ``(values >= start) & (values <= end)`` for the inclusive window, ``values < start`` for older rows.
    """
    _check_time_type(time_type)
    values, kind = _column_values(series, time_type)
    column, dtype = series.name, series.dtype
    lo = _typed_bound(start, kind, column, dtype)
    hi = _typed_bound(end, kind, column, dtype, end=True)
    if kind == "date":
        lo, hi = _align_tz(lo, values), _align_tz(hi, values)
    if lo is not None and hi is not None and lo > hi:
        raise MlopsConfigurationError(
            explain("Window start is after its end", expected="start <= end",
                    received=f"{start} > {end} (compared as {kind} on column {column!r})",
                    hint="swap the data window Params.")
        )
    return values, lo, hi


def _describe(value: Any) -> str:
    """A typed value for messages: dates without a time as ``YYYY-MM-DD``, numbers as they are."""
    import pandas as pd

    if isinstance(value, pd.Timestamp):
        if value is pd.NaT:
            return "NaT"
        return value.date().isoformat() if value == value.normalize() else value.isoformat()
    return str(value)


def window_file_name(start: Any, end: Any) -> str:
    """``<start>_<end>`` for window files, made safe for any bound: only ``[A-Za-z0-9_.-]``."""
    return _SAFE_NAME.sub("_", f"{start}_{end}").strip("._") or "window"


@dataclass(frozen=True)
class WindowSpec:
    """
    A time window of a source table and how to split it into training and holdout rows.

    ``start`` and ``end`` are inclusive and compared with ``time_column`` as what it is (see :func:`typed_bounds`):
    timestamps for datetime, date and ISO-date columns, numbers for numeric columns; ``time_type`` is ``auto``,
    ``date`` or ``numeric``.
    """

    source_uri: str
    time_column: str
    start: Any
    end: Any
    key_column: str | None = None
    holdout_fraction: float = 0.2
    min_rows: int = 1
    time_type: str = "auto"

    def __post_init__(self) -> None:
        _check_time_type(self.time_type)
        if not (0.0 <= self.holdout_fraction < 1.0):
            raise MlopsConfigurationError(
                explain("holdout_fraction out of range", expected="0 <= fraction < 1", received=self.holdout_fraction)
            )
        kind = _bounds_kind(self.start, self.end, self.time_type)
        if kind is None:
            return  # the column's type decides, when the window is cut
        lo = _numeric_bound(self.start) if kind == "numeric" else _date_bound(self.start)
        hi = _numeric_bound(self.end) if kind == "numeric" else _date_bound(self.end, end=True)
        if lo is None or hi is None or (kind == "date" and (lo.tzinfo is None) != (hi.tzinfo is None)):
            return  # judged on the column's values when the window is cut
        if lo > hi:
            raise MlopsConfigurationError(
                explain("Window start is after its end", expected="start <= end",
                        received=f"{self.start} > {self.end} (compared as {kind})", hint="swap the data window Params.")
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


def cut_window(
    spec: WindowSpec,
    out_dir: str,
    storage: Storage | None = None,
    fmt: str = "csv",
    source_storage: Storage | None = None,
) -> WindowResult:
    """
    Cut ``[start, end]`` (inclusive, typed: see :func:`typed_bounds`) out of the source into ``out_dir``.

    ``source_storage`` reads the source and ``storage`` writes the window files (default: from each path, with
    the environment's credentials for s3://); operators pass their connection's storage for both.
    """
    src_storage = source_storage or get_storage(spec.source_uri)
    if not src_storage.exists(spec.source_uri):
        raise StorageError(
            explain("Source table not found", expected="an existing CSV or Parquet file", received=spec.source_uri,
                    hint="check the source_uri Param; the reference data sets are built by `make data`.")
        )
    raw = src_storage.read_bytes(spec.source_uri)
    src = parse_table(raw, spec.source_uri)
    if spec.time_column not in src.columns:
        raise MlopsConfigurationError(
            explain("Time column missing from source table", expected=spec.time_column,
                    received=sorted(src.columns))
        )
    t, lo, hi = typed_bounds(src[spec.time_column], spec.start, spec.end, spec.time_type)
    window = src[((t >= lo) & (t <= hi)).to_numpy()].reset_index(drop=True)
    if len(window) < spec.min_rows:
        raise MlopsConfigurationError(
            explain("Data window holds too few rows", expected=f">= {spec.min_rows} rows",
                    received=f"{len(window)} rows between {spec.start} and {spec.end}",
                    hint=f"the source's {spec.time_column!r} covers {_describe(t.min())} to {_describe(t.max())}.")
        )
    storage = storage or get_storage(out_dir)
    name = window_file_name(spec.start, spec.end)
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
