"""Reference and current profiles computed by Spark: aggregates, value counts and approximate percentiles."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from airflow_mlops.drift.base import DriftConfig
from airflow_mlops.drift.profile import MAX_COUNTED_VALUES, ColumnProfile, ReferenceProfile, _key
from airflow_mlops.drift.streaming import StreamedWindow, profiled_columns

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

#: percentile_approx accuracy: relative rank error 1/accuracy (Spark's Greenwald-Khanna summaries, merged
#: across partitions).
PERCENTILE_ACCURACY = 10_000


def _kind(dtype: object) -> tuple[str, bool]:
    """(numerical | categorical, integer) of a Spark type, as :func:`column_kind` decides it for pandas."""
    from pyspark.sql import types as T

    if isinstance(dtype, T.BooleanType) or not isinstance(dtype, T.NumericType):
        return "categorical", False
    return "numerical", isinstance(dtype, T.IntegralType)


def profile_spark(df: DataFrame, config: DriftConfig, digest: str | None = None,
                  count_limit: int = MAX_COUNTED_VALUES) -> StreamedWindow:
    """The profile :func:`~airflow_mlops.drift.profile.build_profile` makes, computed by the cluster."""
    import numpy as np
    import pandas as pd
    from pyspark.sql import functions as F

    fields = {f.name: f.dataType for f in df.schema.fields}
    keep = profiled_columns(list(fields), config)
    kinds = {c: _kind(fields[c]) for c in keep}
    numeric = [c for c in keep if kinds[c][0] == "numerical"]
    aggs = [F.count(F.lit(1)).alias("__rows__")]
    for i, c in enumerate(keep):
        col = F.col(f"`{c}`")
        aggs += [F.count(col).alias(f"n{i}"), F.approx_count_distinct(col).alias(f"d{i}")]
        if c in numeric:
            aggs.append(F.stddev_pop(col.cast("double")).alias(f"s{i}"))
    row = df.agg(*aggs).first()
    rows = int(row["__rows__"])
    columns: dict[str, ColumnProfile] = {}
    probs = ((np.arange(config.profile_points) + 0.5) / config.profile_points).tolist()
    # One job for the quantiles of every large numerical column.
    large = [c for i, c in enumerate(keep) if c in numeric and int(row[f"n{i}"]) > config.profile_points]
    quantiles = {}
    if large:
        got = df.select(*[F.percentile_approx(F.col(f"`{c}`").cast("double"), probs, PERCENTILE_ACCURACY)
                          for c in large]).first()
        quantiles = {c: [float(x) for x in got[k]] for k, c in enumerate(large)}
    for i, c in enumerate(keep):
        kind, integer = kinds[c]
        n = int(row[f"n{i}"])
        approx_distinct = int(row[f"d{i}"])
        col = F.col(f"`{c}`")
        counts = None
        limit = count_limit if kind == "numerical" else math.inf
        # approx_count_distinct errs by a few percent: count exactly when the answer may be near the limit.
        if kind == "categorical" or approx_distinct <= 2 * limit:
            grouped = df.where(col.isNotNull()).groupBy(col).count().limit(int(min(limit, 10**7)) + 1).collect()
            if len(grouped) <= limit:
                counts = {}
                for r in grouped:
                    key = _key(r[0])
                    counts[key] = counts.get(key, 0) + int(r[1])
                counts = dict(sorted(counts.items()))
        n_unique = len(counts) if counts is not None else max(approx_distinct, int(limit) + 1)
        uniques = sorted(counts) if counts is not None and n_unique <= MAX_COUNTED_VALUES else []
        if kind != "numerical":
            columns[c] = ColumnProfile(kind=kind, rows=n, std=0.0, n_unique=n_unique, exact=True, values=[],
                                       counts=counts, uniques=uniques, integer=integer)
            continue
        std = float(row[f"s{i}"] or 0.0)
        if n <= config.profile_points:
            values = sorted(float(r[0]) for r in df.where(col.isNotNull()).select(col.cast("double")).collect())
            exact = True
        else:
            values, exact = quantiles[c], False
        columns[c] = ColumnProfile(kind=kind, rows=n, std=std, n_unique=n_unique, exact=exact, values=values,
                                   counts=counts, uniques=uniques, integer=integer)
    schema = pd.DataFrame({c: pd.Series([], dtype=_pandas_dtype(fields[c])) for c in fields})
    return StreamedWindow(ReferenceProfile(rows=rows, columns=columns, digest=digest), schema, 0)


def _pandas_dtype(dtype: object) -> str:
    from pyspark.sql import types as T

    if isinstance(dtype, T.BooleanType):
        return "bool"
    if isinstance(dtype, T.IntegralType):
        return "int64"
    if isinstance(dtype, T.NumericType):
        return "float64"
    return "object"
