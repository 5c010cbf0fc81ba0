"""Validation on Spark: the suite through GX's Spark datasource, on a DataFrame read by the session's cluster."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_mlops.engines import spark_path, spark_session
from airflow_mlops.validation.batches import DataFormat, _unreadable
from airflow_mlops.validation.suites import build_gx_suite

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

#: pandas dtype names in suites -> the pyspark.sql.types classes that hold the same values. GX checks a Spark
#: column's type by class name, so a suite written for pandas gets these names added (its own are kept).
SPARK_TYPES: dict[str, list[str]] = {
    "float64": ["DoubleType", "FloatType"],
    "float32": ["FloatType"],
    "int64": ["LongType", "IntegerType", "ShortType", "ByteType"],
    "int32": ["IntegerType", "ShortType", "ByteType"],
    "int16": ["ShortType", "ByteType"],
    "int8": ["ByteType"],
    "bool": ["BooleanType"],
    "boolean": ["BooleanType"],
    "object": ["StringType"],
    "str": ["StringType"],
    "string": ["StringType"],
    "datetime64[ns]": ["TimestampType", "TimestampNTZType"],
    "datetime64[us]": ["TimestampType", "TimestampNTZType"],
}


def suite_for_spark(suite: Mapping[str, Any]) -> dict[str, Any]:
    """The suite with pandas dtype names in type expectations extended by their Spark type names."""
    out = copy.deepcopy(dict(suite))
    for exp in out["expectations"]:
        kwargs = exp.get("kwargs") or {}
        if exp.get("type") == "expect_column_values_to_be_in_type_list" and kwargs.get("type_list"):
            names = list(kwargs["type_list"])
            kwargs["type_list"] = list(dict.fromkeys(names + [s for n in names for s in SPARK_TYPES.get(n, [])]))
        elif exp.get("type") == "expect_column_values_to_be_of_type" and kwargs.get("type_") in SPARK_TYPES:
            exp["type"] = "expect_column_values_to_be_in_type_list"
            kwargs["type_list"] = SPARK_TYPES[kwargs.pop("type_")]
    return out


def read_spark(spark: SparkSession, path: str, fmt: DataFormat) -> DataFrame:
    """The table as a Spark DataFrame (CSV: header row, types inferred)."""
    uri = spark_path(path)
    try:
        if fmt == DataFormat.PARQUET:
            return spark.read.parquet(uri)
        return spark.read.option("header", True).option("inferSchema", True).csv(uri)
    except Exception as exc:  # AnalysisException, Py4JJavaError ...
        raise _unreadable(path, "Spark cannot read the file", f"a readable {fmt.value} file",
                          f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from exc


@dataclass
class SparkRun:
    """GX's result on the Spark DataFrame and the table's shape (Spark's type names in ``schema``)."""

    result: Any
    rows: int
    columns: list[str]
    schema: dict[str, str]


def validate_spark(path: str, suite: Mapping[str, Any], fmt: DataFormat, max_examples: int = 5,
                   spark: SparkSession | None = None) -> SparkRun:
    """Validate the file at ``path`` (local, file://, s3a-visible s3://) with GX's Spark execution engine."""
    from airflow_mlops.validation.context import new_gx_context

    spark = spark or spark_session()
    df = read_spark(spark, path, fmt)
    gx_suite = build_gx_suite(suite_for_spark(suite))
    batch = (
        new_gx_context().data_sources.add_spark("airflow_mlops_spark")
        .add_dataframe_asset("batch").add_batch_definition_whole_dataframe("whole")
        .get_batch(batch_parameters={"dataframe": df})
    )
    result_format = {"result_format": "SUMMARY", "partial_unexpected_count": max(max_examples, 1)}
    try:
        result = batch.validate(gx_suite, result_format=result_format)
    except Exception as exc:
        if "Py4J" in type(exc).__name__ or "Spark" in type(exc).__name__:
            raise _unreadable(path, "Spark failed reading the file", f"a readable {fmt.value} file",
                              f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from exc
        raise
    return SparkRun(result=result, rows=int(df.count()), columns=list(df.columns),
                    schema={f.name: f.dataType.simpleString() for f in df.schema.fields})
