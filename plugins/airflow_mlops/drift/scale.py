"""Drift between two tables of any size: profiles built in one streaming pass, or by Spark, then compared."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from airflow_mlops.drift.base import DriftConfig, DriftResult, summary_html
from airflow_mlops.drift.profile import ReferenceProfile, compare_profiles
from airflow_mlops.drift.streaming import CURRENT_COUNT_LIMIT, StreamedWindow, profile_frames
from airflow_mlops.engines import DEFAULT_CHUNK_ROWS, Engine
from airflow_mlops.exceptions import DriftError, MlopsConfigurationError, explain

if TYPE_CHECKING:
    import pandas as pd


def table_format(path: str) -> Any:
    """The format of a local table, by extension, else by its first bytes."""
    from airflow_mlops.validation.batches import detect_format

    with open(path, "rb") as fh:
        head = fh.read(8)
    return detect_format(path, head)


def profile_window(path: str, config: DriftConfig, engine: Engine | str = Engine.STREAMING, *,
                   current: bool = False, digest: str | None = None, chunk_rows: int = DEFAULT_CHUNK_ROWS,
                   transform: Callable[[pd.DataFrame], pd.DataFrame] | None = None, spark: Any = None) -> StreamedWindow:
    """
    A window's profile in one pass: chunk by chunk here (``streaming``), or by the cluster (``spark``).

    ``current`` keeps value counts for up to 10,000 distinct values per column (a reference profile, which is
    cached, keeps them for 20); ``transform`` (e.g. adding the champion's predictions) runs on every chunk.
    """
    engine = Engine.parse(engine)
    limit = CURRENT_COUNT_LIMIT if current else 20
    if engine is Engine.SPARK:
        if transform is not None:
            raise MlopsConfigurationError(explain(
                "The Spark engine cannot score windows with the champion", expected="model_uri=None with "
                "engine='spark'", received="a model", hint="write the predictions into the tables upstream (a "
                "Spark job), or use engine='streaming'."))
        from airflow_mlops.drift.spark import profile_spark
        from airflow_mlops.engines import spark_session
        from airflow_mlops.validation.spark import read_spark

        spark = spark or spark_session()
        return profile_spark(read_spark(spark, path, table_format(path) if "://" not in path else
                                        _format_by_name(path)), config, digest, limit)
    if engine is not Engine.STREAMING:
        raise MlopsConfigurationError(explain("profile_window streams or runs on Spark", expected="'streaming' or "
                                              "'spark'", received=engine.value))
    from airflow_mlops.validation.chunks import iter_frames

    fmt = table_format(path)
    return profile_frames(iter_frames(path, fmt, chunk_rows), config, digest, limit, transform)


def _format_by_name(path: str) -> Any:
    from airflow_mlops.validation.batches import DataFormat

    return DataFormat.PARQUET if path.lower().endswith((".parquet", ".pq", ".parq")) else DataFormat.CSV


def drift_between(reference: ReferenceProfile, current: StreamedWindow, config: DriftConfig,
                  engine: Engine | str = Engine.STREAMING, render: bool = True) -> DriftResult:
    """The current window's profile against the reference's, with Evidently's tests and thresholds per column."""
    if current.profile.rows == 0:
        raise DriftError(explain("The current window is empty", expected="at least one row", received=0))
    summary = compare_profiles(reference, current.profile, current.schema, config, engine=Engine.parse(engine).value)
    return DriftResult(summary, summary_html(summary) if render else "")


def detect_drift_files(reference_path: str, current_path: str, config: DriftConfig | None = None,
                       engine: Engine | str = Engine.STREAMING, *, profile: ReferenceProfile | None = None,
                       chunk_rows: int = DEFAULT_CHUNK_ROWS,
                       transform: Callable[[pd.DataFrame], pd.DataFrame] | None = None,
                       render: bool = True) -> tuple[DriftResult, ReferenceProfile]:
    """Drift of the table at ``current_path`` against the one at ``reference_path`` (or its cached ``profile``)."""
    config = config or DriftConfig()
    if profile is None:
        profile = profile_window(reference_path, config, engine, chunk_rows=chunk_rows, transform=transform).profile
    current = profile_window(current_path, config, engine, current=True, chunk_rows=chunk_rows, transform=transform)
    return drift_between(profile, current, config, engine, render), profile
