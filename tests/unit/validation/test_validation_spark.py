"""The Spark engine: GX's Spark datasource on a real local Spark gives the in-memory verdicts and counts."""

from __future__ import annotations

import json

import pytest

from airflow_mlops.validation import ValidationConfig, ValidationService
from airflow_mlops.validation.spark import suite_for_spark
from mlops_testkit.tables import MIXED_SUITE, mixed_frame

pytestmark = pytest.mark.spark

#: Where GX's engines differ by design, not by data: pandas reads allow_relative_error as an interpolation
#: name (Spark wants a float), and checks an object column's type value by value (Spark by its schema).
ENGINE_SPECIFIC = {"expect_column_quantile_values_to_be_between(k)", "expect_column_values_to_be_in_type_list(s)"}


def verdicts(outcome) -> dict[str, bool]:
    from airflow_mlops.validation.summary import expectation_key

    out = {}
    for item in outcome.result_json()["results"]:
        cfg = dict(item["expectation_config"])
        cfg["kwargs"] = {k: v for k, v in cfg["kwargs"].items() if k != "batch_id"}
        out[expectation_key(cfg)] = item["success"]
    return out


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_spark_gives_the_in_memory_verdicts(spark, tmp_path, fmt):
    path = tmp_path / f"batch.{fmt}"
    df = mixed_frame()
    df.to_parquet(path) if fmt == "parquet" else df.to_csv(path, index=False)
    suite_path = tmp_path / "suite.json"
    suite_path.write_text(json.dumps(MIXED_SUITE))
    service = ValidationService()

    memory = service.validate(ValidationConfig(str(path), str(suite_path), allowed_root=str(tmp_path)))
    on_spark = service.validate(ValidationConfig(str(path), str(suite_path), engine="spark",
                                                 quarantine_root=str(tmp_path / "q"), allowed_root=str(tmp_path)))

    assert on_spark.summary["engine"] == "spark" and on_spark.summary["rows"] == 101
    assert on_spark.summary["digest"] == memory.summary["digest"]
    want = {k: v for k, v in verdicts(memory).items() if k not in ENGINE_SPECIFIC}
    got = {k: v for k, v in verdicts(on_spark).items() if k not in ENGINE_SPECIFIC}
    assert got == want
    counts = {k: v for k, v in memory.summary["unexpected_counts"].items() if k not in ENGINE_SPECIFIC}
    assert {k: on_spark.summary["unexpected_counts"].get(k) for k in counts} == counts
    assert on_spark.quarantine_uri and (tmp_path / "q").exists()  # a rejected batch is copied as on pandas


def test_pandas_type_names_get_their_spark_names():
    suite = {"name": "s", "expectations": [
        {"type": "expect_column_values_to_be_in_type_list", "kwargs": {"column": "a", "type_list": ["float64"]}},
        {"type": "expect_column_values_to_be_of_type", "kwargs": {"column": "b", "type_": "int64"}},
    ]}
    out = suite_for_spark(suite)
    assert out["expectations"][0]["kwargs"]["type_list"] == ["float64", "DoubleType", "FloatType"]
    assert out["expectations"][1]["type"] == "expect_column_values_to_be_in_type_list"
    assert "LongType" in out["expectations"][1]["kwargs"]["type_list"]
    assert suite["expectations"][0]["kwargs"]["type_list"] == ["float64"]  # the caller's suite is untouched
