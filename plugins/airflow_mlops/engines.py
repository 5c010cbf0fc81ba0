"""Engines for tables of any size: pandas in memory, streaming on one machine, Spark beyond it."""

from __future__ import annotations

import os
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from airflow_mlops.exceptions import MlopsConfigurationError, explain

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

#: Rows per chunk the streaming engine holds at once (Parquet batches are cut inside row groups).
DEFAULT_CHUNK_ROWS = 250_000
#: Spark master when none is configured: this host, two cores (a cluster sets SPARK_MASTER or spark.master).
DEFAULT_SPARK_MASTER = "local[2]"


class Engine(StrEnum):
    """
    How a table is read and checked.

    ``pandas``: the whole table in memory (the default). ``streaming``: row group by row group (Parquet) or chunk
    by chunk (CSV) on this machine, memory bounded by the chunk size. ``spark``: a Spark DataFrame, on the
    session's cluster (``local[*]`` when none is configured).
    """

    PANDAS = "pandas"
    STREAMING = "streaming"
    SPARK = "spark"

    @classmethod
    def parse(cls, value: object) -> Engine:
        try:
            return cls(str(getattr(value, "value", value)).strip().lower())
        except ValueError:
            raise MlopsConfigurationError(
                explain("Unknown engine", expected=[e.value for e in cls], received=value,
                        hint="'streaming' for tables larger than memory on one machine, 'spark' for a cluster.")
            ) from None


def spark_path(path: str) -> str:
    """The path as Spark's Hadoop file systems name it: ``s3://`` becomes ``s3a://``, ``file://`` stays."""
    if path.startswith("s3://"):
        return "s3a://" + path[len("s3://"):]
    if "://" not in path:
        return "file://" + os.path.abspath(path)
    return path


def spark_session(master: str | None = None, conf: dict[str, Any] | None = None) -> SparkSession:
    """
    The active Spark session, or a new one.

    ``master`` (else ``SPARK_MASTER``, else ``local[2]``) is used only when no session is active: under
    ``spark-submit`` or on a cluster the session that exists is returned as it is.
    """
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    builder = SparkSession.builder.appName("airflow-mlops").master(
        master or os.environ.get("SPARK_MASTER") or DEFAULT_SPARK_MASTER
    )
    # Small, local-friendly defaults; a cluster's spark-defaults.conf or conf= overrides them.
    defaults = {"spark.sql.shuffle.partitions": "8", "spark.ui.enabled": "false",
                "spark.sql.session.timeZone": "UTC"}
    for key, value in {**defaults, **(conf or {})}.items():
        builder = builder.config(key, value)
    return builder.getOrCreate()
