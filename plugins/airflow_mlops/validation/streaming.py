"""Streaming validation: a suite over a table chunk by chunk in bounded memory, with GX's verdicts and messages."""

from __future__ import annotations

import heapq
import math
import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from airflow_mlops.exceptions import explain
from airflow_mlops.validation.batches import DataFormat
from airflow_mlops.validation.chunks import csv_dtypes, empty_frame, iter_frames
from airflow_mlops.validation.errors import SuiteError
from airflow_mlops.validation.suites import build_gx_suite

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

#: Hash partitions of the values spilled for uniqueness and distinct counts (each is checked alone).
SPILL_PARTITIONS = 64
#: KLL sketch size of the first pass of an exact quantile (rank error about 0.2%, so the second pass keeps
#: about 0.8% of the column's values).
KLL_K = 1024


class Plan(StrEnum):
    """How a streaming run computes one expectation; every plan gives the in-memory verdict and message."""

    ROWS = "row-wise: GX on each chunk; counts summed, the first unexpected values kept in row order"
    SCHEMA = "schema: the same on every chunk, GX on the first"
    TYPE = "dtype: the file's dtype (first chunk); for object columns row-wise"
    COUNT = "mergeable: row counts summed"
    MOMENTS = "mergeable: min, max, sum, count and centred second moment merged chunk by chunk (Chan et al.)"
    ORDER = ("exact, two passes: a KLL sketch brackets each rank, the second pass keeps the values inside the "
             "bracket and picks the order statistic")
    DISTINCT = ("exact: non-null values spilled to disk in hash partitions, duplicates and distinct values "
                "counted partition by partition")
    SEQUENCE = "row-wise with the last non-null value of the previous chunk carried over"


#: The plan per expectation type; other column map expectations (row-wise by definition) are ``ROWS``.
PLANS: dict[str, Plan] = {
    "expect_table_row_count_to_be_between": Plan.COUNT,
    "expect_table_row_count_to_equal": Plan.COUNT,
    "expect_table_columns_to_match_ordered_list": Plan.SCHEMA,
    "expect_table_columns_to_match_set": Plan.SCHEMA,
    "expect_table_column_count_to_be_between": Plan.SCHEMA,
    "expect_table_column_count_to_equal": Plan.SCHEMA,
    "expect_column_to_exist": Plan.SCHEMA,
    "expect_column_values_to_be_in_type_list": Plan.TYPE,
    "expect_column_values_to_be_of_type": Plan.TYPE,
    "expect_column_min_to_be_between": Plan.MOMENTS,
    "expect_column_max_to_be_between": Plan.MOMENTS,
    "expect_column_sum_to_be_between": Plan.MOMENTS,
    "expect_column_mean_to_be_between": Plan.MOMENTS,
    "expect_column_stdev_to_be_between": Plan.MOMENTS,
    "expect_column_median_to_be_between": Plan.ORDER,
    "expect_column_quantile_values_to_be_between": Plan.ORDER,
    "expect_column_values_to_be_unique": Plan.DISTINCT,
    "expect_column_unique_value_count_to_be_between": Plan.DISTINCT,
    "expect_column_proportion_of_unique_values_to_be_between": Plan.DISTINCT,
    "expect_column_values_to_be_increasing": Plan.SEQUENCE,
    "expect_column_values_to_be_decreasing": Plan.SEQUENCE,
}
_MOMENT_METRICS = {
    "expect_column_min_to_be_between": "column.min",
    "expect_column_max_to_be_between": "column.max",
    "expect_column_sum_to_be_between": "column.sum",
    "expect_column_mean_to_be_between": "column.mean",
    "expect_column_stdev_to_be_between": "column.standard_deviation",
}
_CHUNK_PLANS = (Plan.ROWS, Plan.SCHEMA, Plan.TYPE)


def plan_for(expectation: Any) -> Plan:
    """The plan of one built GX expectation; a type no plan covers is refused with the list of those covered."""
    from great_expectations.expectations.expectation import ColumnMapExpectation

    type_ = expectation.expectation_type
    if type_ in PLANS:
        return PLANS[type_]
    if isinstance(expectation, ColumnMapExpectation):
        return Plan.ROWS
    raise SuiteError(
        explain(f"Expectation {type_} cannot be computed chunk by chunk", expected="a column map expectation "
                f"(row-wise) or one of {sorted(PLANS)}", received=type_,
                hint="validate this suite with engine='pandas' (in memory) or engine='spark'.")
    )


def streaming_plan(suite: Mapping[str, Any]) -> dict[str, str]:
    """``{expectation type: plan}`` of a suite dict: what a streaming run will do for each expectation."""
    built = build_gx_suite(dict(suite))
    return {e.expectation_type: plan_for(e).name.lower() for e in built.expectations}


# --- mergeable partial results -----------------------------------------------------------------------------------


@dataclass
class Moments:
    """Count, sum, min, max and the centred second moment of a column, merged chunk by chunk."""

    n: int = 0
    total: Any = 0
    mean: float = 0.0
    m2: float = 0.0
    lo: Any = None
    hi: Any = None

    def add(self, values: pd.Series) -> None:
        v = values.dropna()
        k = len(v)
        if not k:
            return
        chunk_mean = float(v.mean())
        chunk_m2 = float(((v.astype("float64") - chunk_mean) ** 2).sum())
        delta = chunk_mean - self.mean
        n = self.n + k
        self.m2 += chunk_m2 + delta * delta * self.n * k / n
        self.mean += delta * k / n
        self.n = n
        self.total = self.total + v.sum()
        lo, hi = v.min(), v.max()
        self.lo = lo if self.lo is None or lo < self.lo else self.lo
        self.hi = hi if self.hi is None or hi > self.hi else self.hi

    def metric(self, name: str) -> Any:
        nan = float("nan")
        if name == "column.min":
            return nan if self.lo is None else self.lo
        if name == "column.max":
            return nan if self.hi is None else self.hi
        if name == "column.sum":
            return self.total
        if name == "column.mean":
            return self.total / self.n if self.n else nan
        return math.sqrt(self.m2 / (self.n - 1)) if self.n > 1 else nan


@dataclass
class OrderStatistics:
    """Exact order statistics of a column in two passes: a KLL sketch first, then the values in the brackets."""

    dtype: Any = None
    n: int = 0
    sketch: Any = None
    brackets: list[tuple[float, float]] = field(default_factory=list)
    below: list[int] = field(default_factory=list)
    inside: list[list[np.ndarray]] = field(default_factory=list)
    ranks: set[int] = field(default_factory=set)

    def first_pass(self, values: pd.Series) -> None:
        from datasketches import kll_doubles_sketch

        v = values.dropna()
        self.dtype = values.dtype
        if self.sketch is None:
            self.sketch = kll_doubles_sketch(KLL_K)
        if len(v):
            self.sketch.update(v.to_numpy(dtype="float64"))
            self.n += len(v)

    def need(self, ranks: set[int]) -> None:
        self.ranks |= ranks

    def plan_second_pass(self, widen: float = 2.0) -> None:
        """Brackets around the needed ranks, wide enough for the sketch's rank error (merged when they overlap)."""
        if not self.n or not self.ranks:
            return
        eps = widen * self.sketch.normalized_rank_error(False) + 1.0 / self.n
        spans = sorted((max(0.0, r / self.n - eps), min(1.0, (r + 1) / self.n + eps)) for r in self.ranks)
        merged: list[list[float]] = []
        for lo, hi in spans:
            if merged and lo <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], hi)
            else:
                merged.append([lo, hi])
        self.brackets = [(-math.inf if lo <= 0 else self.sketch.get_quantile(lo),
                          math.inf if hi >= 1 else self.sketch.get_quantile(hi)) for lo, hi in merged]
        self.below = [0] * len(self.brackets)
        self.inside = [[] for _ in self.brackets]

    def second_pass(self, values: pd.Series) -> None:
        v = values.dropna().to_numpy()
        f = v.astype("float64")
        for i, (lo, hi) in enumerate(self.brackets):
            self.below[i] += int((f < lo).sum())
            self.inside[i].append(v[(f >= lo) & (f <= hi)])

    def resolve(self) -> dict[int, Any] | None:
        """The value at each needed rank, or None when a bracket missed (the caller widens it and reads again)."""
        import numpy as np

        out: dict[int, Any] = {}
        kept = [np.sort(np.concatenate(parts)) if parts else np.array([]) for parts in self.inside]
        for r in self.ranks:
            for below, values in zip(self.below, kept, strict=True):
                if below <= r < below + len(values):
                    out[r] = values[r - below]
                    break
            else:
                return None
        return out


def _positions(n: int, q: float, interpolation: str) -> tuple[int, int, float]:
    """The order statistics a pandas quantile reads, and the weight between them (numpy's definitions)."""
    import numpy as np

    h = q * (n - 1)
    lo = int(math.floor(h))
    hi = min(lo + 1, n - 1) if h > lo else lo
    if interpolation == "nearest":
        lo = hi = int(np.around(h))
    return lo, hi, h - math.floor(h)


def quantile_from(stats: Mapping[int, Any], n: int, q: float, interpolation: str, dtype: Any) -> Any:
    """pandas' ``Series.quantile(q, interpolation)`` from the order statistics it reads."""
    import pandas as pd

    if not n:
        return float("nan")
    lo, hi, frac = _positions(n, q, interpolation)
    pair = pd.Series([stats[lo], stats[hi]], dtype=dtype)
    if interpolation == "nearest":
        return pair.quantile([0.0], interpolation="lower").tolist()[0]
    return pair.quantile([frac], interpolation=interpolation).tolist()[0]


def median_from(stats: Mapping[int, Any], n: int) -> Any:
    """pandas' ``Series.median()``: the middle value, or the mean of the two middle values."""
    import numpy as np

    if not n:
        return float("nan")
    a, b = stats[(n - 1) // 2], stats[n // 2]
    return float(np.median(np.array([a, b], dtype="float64")))


class DistinctSpill:
    """A column's non-null values with their row numbers, spilled to disk in hash partitions (Arrow IPC)."""

    def __init__(self, folder: str, partitions: int = SPILL_PARTITIONS) -> None:
        self.folder = folder
        self.partitions = partitions
        self.writers: dict[int, Any] = {}
        self.schema: Any = None
        os.makedirs(folder, exist_ok=True)

    def add(self, values: pd.Series, offset: int) -> None:
        import numpy as np
        import pandas as pd
        import pyarrow as pa

        mask = values.notna().to_numpy()
        rows = np.flatnonzero(mask) + offset
        v = values.to_numpy()[mask]
        # -0.0 and 0.0 are one value to pandas' duplicated(): hash them alike.
        keyed = v + 0.0 if v.dtype.kind == "f" else v
        part = pd.util.hash_array(keyed) % self.partitions
        try:
            arr = pa.array(v)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise SuiteError(explain("A column of mixed value types cannot be spilled for a uniqueness check",
                                     expected="values of one type per column", received=str(exc),
                                     hint="validate with engine='pandas' or engine='spark'.")) from exc
        if self.schema is None:
            self.schema = pa.schema([("row", pa.int64()), ("value", arr.type)])
        arr = arr.cast(self.schema.field("value").type)
        order = np.argsort(part, kind="stable")
        bounds = np.searchsorted(part[order], np.arange(self.partitions + 1))
        for p in range(self.partitions):
            idx = order[bounds[p]:bounds[p + 1]]
            if not len(idx):
                continue
            if p not in self.writers:
                sink = pa.OSFile(os.path.join(self.folder, f"{p}.arrow"), "wb")
                self.writers[p] = (sink, pa.ipc.new_stream(sink, self.schema))
            self.writers[p][1].write_batch(pa.record_batch([pa.array(rows[idx]), arr.take(pa.array(idx))],
                                                           schema=self.schema))

    def resolve(self, examples: int) -> tuple[int, int, list[Any]]:
        """(distinct values, rows whose value occurs more than once, the first such values in row order)."""
        import pyarrow as pa

        for sink, writer in self.writers.values():
            writer.close()
            sink.close()
        distinct = duplicated = 0
        first: list[tuple[int, Any]] = []
        for p in sorted(self.writers):
            path = os.path.join(self.folder, f"{p}.arrow")
            with pa.memory_map(path) as source:
                df = pa.ipc.open_stream(source).read_all().to_pandas()
            os.unlink(path)
            distinct += int(df["value"].nunique())
            dup = df["value"].duplicated(keep=False).to_numpy()
            duplicated += int(dup.sum())
            if dup.any() and examples:
                hit = df[dup].nsmallest(examples, "row")
                first = heapq.nsmallest(examples, [*first, *zip(hit["row"].tolist(), hit["value"], strict=True)],
                                        key=lambda t: t[0])
        self.writers = {}
        return distinct, duplicated, [value for _, value in first]


@dataclass
class Sequence:
    """Increasing / decreasing, row-wise, with the last non-null value of the previous chunk carried over."""

    decreasing: bool
    strictly: bool
    limit: int
    carry: Any = None
    unexpected: int = 0
    values: list[Any] = field(default_factory=list)

    def add(self, values: pd.Series) -> None:
        import pandas as pd

        v = values.dropna().reset_index(drop=True)
        if not len(v):
            return
        series = v if self.carry is None else pd.concat([self.carry, v], ignore_index=True)
        # GX's condition (column_values_increasing / decreasing, pandas): the first value gets a bye.
        diff = series.diff()
        zero = pd.Timedelta(0) if pd.api.types.is_timedelta64_dtype(diff.dtype) else 0
        if self.decreasing:
            ok = (diff < zero) if self.strictly else (diff <= zero)
        else:
            ok = (diff > zero) if self.strictly else (diff >= zero)
        bad = ~(ok | diff.isnull())
        if self.carry is not None:
            bad = bad.iloc[1:]
            series = series.iloc[1:]
        self.unexpected += int(bad.sum())
        if len(self.values) < self.limit:
            self.values += list(series[bad.to_numpy()].iloc[: self.limit - len(self.values)])
        self.carry = v.iloc[-1:]


# --- the run -----------------------------------------------------------------------------------------------------


@dataclass
class StreamingRun:
    """What a streaming validation produced: GX's suite result (merged) and the table's shape."""

    result: Any
    rows: int
    columns: list[str]
    schema: dict[str, str]
    chunks: int
    passes: int
    plans: dict[str, str]
    #: CSV only: the dtypes of reading the file whole, for a later pass over it.
    csv_dtypes: dict[str, object] | None = None


def _result_format(max_examples: int) -> dict[str, Any]:
    return {"result_format": "SUMMARY", "partial_unexpected_count": max(max_examples, 1)}


class _ChunkValidator:
    """GX on one chunk at a time, through one ephemeral context and one batch definition."""

    def __init__(self, result_format: dict[str, Any]) -> None:
        from airflow_mlops.validation.context import new_gx_context

        self.result_format = result_format
        self.definition = (
            new_gx_context().data_sources.add_pandas("airflow_mlops_stream")
            .add_dataframe_asset("chunk").add_batch_definition_whole_dataframe("whole")
        )

    def run(self, df: pd.DataFrame, expectations: list[Any]) -> list[Any]:
        """The results of ``expectations`` on ``df``, in the order of ``expectations``."""
        results = self.run_in_gx_order(df, expectations)
        return [results[k][1] for k in sorted(range(len(results)), key=lambda k: results[k][0])]

    def run_in_gx_order(self, df: pd.DataFrame, expectations: list[Any]) -> list[tuple[int, Any]]:
        """(position in ``expectations``, result) in the order GX reports them (it groups them by domain)."""
        import great_expectations as gx

        if not expectations:
            return []
        suite = gx.ExpectationSuite(name="chunk", expectations=[e.copy() for e in expectations])
        batch = self.definition.get_batch(batch_parameters={"dataframe": df})
        evrs = list(batch.validate(suite, result_format=self.result_format).results)
        slots: dict[str, list[int]] = {}
        for k, exp in enumerate(expectations):
            slots.setdefault(_config_key(exp.configuration), []).append(k)
        return [(slots[_config_key(evr.expectation_config)].pop(0), evr) for evr in evrs]


def _config_key(config: Any) -> str:
    import json

    kwargs = {k: v for k, v in (config.kwargs or {}).items() if k != "batch_id"}
    return json.dumps([config.type, kwargs], sort_keys=True, default=str)


@dataclass
class _MapCounts:
    elements: int = 0
    missing: int | None = 0
    unexpected: int = 0
    values: list[Any] = field(default_factory=list)
    first: Any = None
    failed: Any = None

    def add(self, evr: Any, limit: int) -> None:
        res = evr.result or {}
        if self.first is None:
            self.first = evr
        if _raised(evr.exception_info):
            self.failed = self.failed or evr
            return
        self.elements += int(res.get("element_count") or 0)
        if res.get("missing_count") is None:
            self.missing = None
        elif self.missing is not None:
            self.missing += int(res["missing_count"])
        self.unexpected += int(res.get("unexpected_count") or 0)
        if len(self.values) < limit:
            self.values += list(res.get("partial_unexpected_list") or [])[: limit - len(self.values)]


def gx_order(expectations: list[Any]) -> list[int]:
    """The order GX validates a suite in: grouped by column, groups in order of first appearance."""
    groups: dict[str, list[int]] = {}
    for k, exp in enumerate(expectations):
        column = exp.configuration.kwargs.get("column")
        groups.setdefault(column if isinstance(column, str) else "\0no column", []).append(k)
    return [k for group in groups.values() for k in group]


def _metric_failure(info: Any) -> bool:
    """GX's exception info of an expectation whose metrics could not be computed (one entry per metric)."""
    return isinstance(info, Mapping) and not info.get("raised_exception") and _raised(info)


def _raised(info: Any) -> bool:
    """GX's exception info: one dict, or one per metric that failed."""
    if not isinstance(info, Mapping):
        return False
    if info.get("raised_exception"):
        return True
    return any(isinstance(v, Mapping) and v.get("raised_exception") for v in info.values())


def _map_evr(expectation: Any, metrics: dict[str, Any], result_format: dict[str, Any], own: bool = True) -> Any:
    """GX's own verdict and result of a column map expectation, from merged metrics (``own``: the type's
    ``_validate``, else the one of every column map expectation)."""
    from great_expectations.expectations.expectation import ColumnMapExpectation

    validate = expectation._validate if own else (
        lambda m, rc: ColumnMapExpectation._validate(expectation, m, rc))
    raw = validate(metrics, {"result_format": result_format})
    return expectation._build_evr(raw)


def _map_metrics(expectation: Any, rows: int, nulls: int | None, unexpected: int, values: list[Any]) -> dict:
    name = expectation.map_metric
    return {"table.row_count": rows, "column_values.nonnull.unexpected_count": nulls,
            f"{name}.unexpected_count": unexpected, f"{name}.unexpected_values": values}


def _aggregate_evr(expectation: Any, metrics: dict[str, Any], result_format: dict[str, Any]) -> Any:
    raw = expectation._validate(metrics, {"result_format": result_format})
    return expectation._build_evr(raw)


def validate_stream(
    path: str,
    suite: Mapping[str, Any],
    fmt: DataFormat,
    max_examples: int = 5,
    chunk_rows: int = 250_000,
    spill_dir: str | None = None,
    on_chunk: Callable[[int, int], None] | None = None,
) -> StreamingRun:
    """
    Validate a local CSV or Parquet file chunk by chunk; the suite result equals GX's on the whole table.

    Each expectation follows its :class:`Plan`. Memory holds one chunk, the partial results, and, for exact
    quantiles, the values inside each rank's bracket; uniqueness spills to ``spill_dir`` (a temporary folder).
    """
    import great_expectations as gx
    import pandas as pd
    from great_expectations.core import ExpectationSuiteValidationResult

    result_format = _result_format(max_examples)
    limit = result_format["partial_unexpected_count"]
    gx_suite = build_gx_suite(dict(suite))
    expectations = list(gx_suite.expectations)
    csv_types = csv_dtypes(path, chunk_rows) if fmt == DataFormat.CSV else None
    empty = empty_frame(path, fmt, csv_types)
    columns = [str(c) for c in empty.columns]
    plans = [plan_for(e) for e in expectations]
    refused: SuiteError | None = None
    for i, (exp, plan) in enumerate(zip(expectations, plans, strict=True)):
        column = getattr(exp, "column", None)
        if plan in (Plan.MOMENTS, Plan.ORDER, Plan.DISTINCT, Plan.SEQUENCE) and column not in columns:
            plans[i] = Plan.SCHEMA  # GX on the first chunk reports the missing column as it does in memory
        elif plan in (Plan.MOMENTS, Plan.ORDER) and not (
            pd.api.types.is_numeric_dtype(empty[column]) and not pd.api.types.is_bool_dtype(empty[column])
        ):
            # Raised once the table has a row: a table without rows is validated whole (in memory, empty).
            refused = refused or SuiteError(explain(
                f"{exp.expectation_type}({column}) needs a numerical column to stream",
                expected="an integer or float column", received=str(empty[column].dtype),
                hint="validate with engine='pandas' or engine='spark'."))
            plans[i] = Plan.SCHEMA
    chunk_run = [i for i, p in enumerate(plans) if p in _CHUNK_PLANS]
    later_run: list[int] = []
    merged = {i: _MapCounts() for i in chunk_run}
    first_evrs: dict[int, Any] = {}
    moments: dict[str, Moments] = {}
    orders: dict[str, OrderStatistics] = {}
    distinct_columns: list[str] = []
    sequences: dict[int, Sequence] = {}
    for i, (exp, plan) in enumerate(zip(expectations, plans, strict=True)):
        if plan is Plan.MOMENTS:
            moments.setdefault(exp.column, Moments())
        elif plan is Plan.ORDER:
            orders.setdefault(exp.column, OrderStatistics())
        elif plan is Plan.DISTINCT and exp.column not in distinct_columns:
            distinct_columns.append(exp.column)
        elif plan is Plan.SEQUENCE:
            sequences[i] = Sequence(exp.expectation_type.endswith("decreasing"), bool(exp.strictly), limit)
    nulls = dict.fromkeys(columns, 0)
    validator = _ChunkValidator(result_format)
    order = gx_order(expectations)
    rows = chunks = 0
    with tempfile.TemporaryDirectory(prefix="airflow-mlops-spill-", dir=spill_dir) as folder:
        spills = {c: DistinctSpill(os.path.join(folder, f"c{k}")) for k, c in enumerate(distinct_columns)}
        for df in iter_frames(path, fmt, chunk_rows, csv_dtypes=csv_types):
            if not len(df):
                continue
            if refused is not None:
                raise refused
            if chunks == 0:
                evrs = validator.run(df, [expectations[i] for i in chunk_run])
                for i, evr in zip(chunk_run, evrs, strict=True):
                    first_evrs[i] = evr
                    merged[i].add(evr, limit)
                # Schema expectations, and dtype ones answered from the dtype, are settled by the first chunk.
                later_run = [i for i in chunk_run if plans[i] is Plan.ROWS or (
                    plans[i] is Plan.TYPE and "unexpected_count" in (first_evrs[i].result or {}))]
            else:
                evrs = validator.run(df, [expectations[i] for i in later_run])
                for i, evr in zip(later_run, evrs, strict=True):
                    merged[i].add(evr, limit)
            for name, count in df.isna().sum().items():
                nulls[str(name)] = nulls.get(str(name), 0) + int(count)
            for name, acc in moments.items():
                acc.add(df[name])
            for name, acc in orders.items():
                acc.first_pass(df[name])
            for name, spill in spills.items():
                spill.add(df[name], rows)
            for i, seq in sequences.items():
                seq.add(df[expectations[i].column])
            rows += len(df)
            chunks += 1
            if on_chunk is not None:
                on_chunk(chunks, rows)
        passes = 1
        if chunks == 0:
            # No rows at all: the whole table is the empty frame, validated in memory.
            evrs = [evr for _, evr in validator.run_in_gx_order(empty, expectations)]
            result = ExpectationSuiteValidationResult(success=all(e.success for e in evrs), results=evrs,
                                                      suite_name=gx_suite.name)
            return StreamingRun(result, 0, columns, {c: str(t) for c, t in empty.dtypes.items()}, 0, 1,
                                {e.expectation_type: p.name.lower() for e, p in zip(expectations, plans, strict=True)},
                                csv_types)
        stats = _order_statistics(path, fmt, chunk_rows, csv_types, expectations, plans, orders)
        passes += stats.pop("__passes__")
        distinct = {c: s.resolve(limit) for c, s in spills.items()}
    evrs: list[Any] = []
    for i, (exp, plan) in enumerate(zip(expectations, plans, strict=True)):
        if plan in _CHUNK_PLANS:
            m = merged[i]
            if m.failed is not None or plan is Plan.SCHEMA or i not in later_run:
                evrs.append(m.failed or first_evrs[i])
            else:
                evrs.append(_map_evr(exp, _map_metrics(exp, m.elements, m.missing, m.unexpected, m.values),
                                     result_format, own=plan is Plan.ROWS))
        elif plan is Plan.COUNT:
            evrs.append(_aggregate_evr(exp, {"table.row_count": rows}, result_format))
        elif plan is Plan.MOMENTS:
            name = _MOMENT_METRICS[exp.expectation_type]
            evrs.append(_aggregate_evr(exp, {name: moments[exp.column].metric(name)}, result_format))
        elif plan is Plan.ORDER:
            evrs.append(_aggregate_evr(exp, stats[i], result_format))
        elif plan is Plan.DISTINCT:
            n_distinct, duplicated, values = distinct[exp.column]
            nonnull = rows - nulls[exp.column]
            if exp.expectation_type == "expect_column_values_to_be_unique":
                evrs.append(_map_evr(exp, _map_metrics(exp, rows, nulls[exp.column], duplicated, values),
                                     result_format))
            elif exp.expectation_type == "expect_column_unique_value_count_to_be_between":
                evrs.append(_aggregate_evr(exp, {"column.distinct_values.count": n_distinct}, result_format))
            else:
                proportion = n_distinct / nonnull if nonnull else 0
                evrs.append(_aggregate_evr(exp, {"column.unique_proportion": proportion}, result_format))
        else:  # Plan.SEQUENCE
            seq = sequences[i]
            evrs.append(_map_evr(exp, _map_metrics(exp, rows, nulls[exp.column], seq.unexpected, seq.values),
                                 result_format))
    evrs = [evrs[k] for k in order]
    # GX lists the expectations whose metrics failed to compute first, then the others.
    evrs = [e for e in evrs if _metric_failure(e.exception_info)] + [
        e for e in evrs if not _metric_failure(e.exception_info)]
    successful = sum(bool(e.success) for e in evrs)
    statistics = {"evaluated_expectations": len(evrs), "successful_expectations": successful,
                  "unsuccessful_expectations": len(evrs) - successful,
                  "success_percent": 100.0 * successful / len(evrs) if evrs else None}
    result = ExpectationSuiteValidationResult(
        success=successful == len(evrs), results=evrs, suite_name=gx_suite.name, statistics=statistics,
        meta={"engine": "streaming", "chunks": chunks, "passes": passes, "great_expectations_version": gx.__version__},
    )
    schema = {c: str(t) for c, t in empty.dtypes.items()}
    return StreamingRun(result, rows, columns, schema, chunks, passes,
                        {e.expectation_type: p.name.lower() for e, p in zip(expectations, plans, strict=True)},
                        csv_types)


def _order_statistics(path: str, fmt: DataFormat, chunk_rows: int, csv_types: dict[str, object] | None,
                      expectations: list[Any], plans: list[Plan], orders: dict[str, OrderStatistics]) -> dict:
    """Second (and, if a bracket missed, further) passes over the order-statistic columns; metrics per index."""
    out: dict[Any, Any] = {"__passes__": 0}
    if not orders:
        return out
    wanted: dict[int, tuple[str, list[float], str]] = {}
    for i, (exp, plan) in enumerate(zip(expectations, plans, strict=True)):
        if plan is not Plan.ORDER:
            continue
        acc = orders[exp.column]
        if exp.expectation_type == "expect_column_median_to_be_between":
            wanted[i] = (exp.column, [], "median")
            if acc.n:
                acc.need({(acc.n - 1) // 2, acc.n // 2})
        else:
            qr = exp.quantile_ranges
            quantiles = list(qr["quantiles"] if isinstance(qr, Mapping) else qr.quantiles)
            interpolation = exp.allow_relative_error or "nearest"
            if interpolation not in ("linear", "lower", "higher", "midpoint", "nearest"):
                interpolation = "nearest"  # GX raises for pandas; the first chunk's GX run reports it
            wanted[i] = (exp.column, quantiles, str(interpolation))
            if acc.n:
                for q in quantiles:
                    lo, hi, _ = _positions(acc.n, q, str(interpolation))
                    acc.need({lo, hi})
    pending = {c: acc for c, acc in orders.items() if acc.n and acc.ranks}
    widen = 2.0
    resolved: dict[str, dict[int, Any]] = {}
    while pending:
        for acc in pending.values():
            acc.plan_second_pass(widen)
        for df in iter_frames(path, fmt, chunk_rows, columns=list(pending), csv_dtypes=csv_types):
            for name, acc in pending.items():
                acc.second_pass(df[name])
        out["__passes__"] += 1
        for name in list(pending):
            found = pending[name].resolve()
            if found is not None:
                resolved[name] = found
                del pending[name]
        widen *= 4
    for i, (column, quantiles, how) in wanted.items():
        acc = orders[column]
        stats = resolved.get(column, {})
        if how == "median":
            out[i] = {"column.median": median_from(stats, acc.n)}
        else:
            out[i] = {"column.quantile_values": [quantile_from(stats, acc.n, q, how, acc.dtype) for q in quantiles]}
    return out
