"""Storage through an Airflow connection only: no AWS_* variable in the environment, a real S3 endpoint (moto)."""

from __future__ import annotations

import io
import json
import os
import uuid

import pandas as pd
import pytest

from airflow_mlops.operators.data import PrepareWindowOperator
from airflow_mlops.operators.drift import (
    DriftDetectionOperator,
    PerformanceMonitorOperator,
    TriggerPolicyOperator,
)
from airflow_mlops.operators.inference import BatchInferenceOperator
from airflow_mlops.operators.registry import EvaluateModelOperator, RegisterModelOperator
from airflow_mlops.operators.training import DistributedTrainingOperator
from airflow_mlops.operators.validation import DataValidationOperator

pytestmark = pytest.mark.integration

CONN_ID = "window_s3"


@pytest.fixture
def conn_only(s3_srv, monkeypatch, tmp_path) -> str:
    """The moto server reachable only through ``AIRFLOW_CONN_WINDOW_S3``: every AWS_* variable is removed."""
    for var in [v for v in os.environ if v.startswith("AWS_")] + ["MLFLOW_S3_ENDPOINT_URL"]:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.aws files either
    conn = {"conn_type": "aws", "login": s3_srv.access_key, "password": s3_srv.secret_key,
            "extra": {"endpoint_url": s3_srv.endpoint_url, "region_name": s3_srv.region}}
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", json.dumps(conn))
    return CONN_ID


@pytest.fixture
def bucket(s3_srv) -> str:
    """A fresh bucket, created with explicit credentials (the environment holds none)."""
    return s3_srv.create_bucket(f"windows-{uuid.uuid4().hex[:10]}")


@pytest.fixture
def source(s3_srv, bucket) -> tuple[str, pd.DataFrame]:
    """A numeric-batch table in S3: 12 batches of 10 rows."""
    df = pd.DataFrame({"row_id": range(120), "batch": [1 + i // 10 for i in range(120)],
                       "x": [float(i) for i in range(120)], "y": [i % 3 for i in range(120)]})
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    s3_srv.client().put_object(Bucket=bucket, Key="source/table.parquet", Body=buf.getvalue())
    return f"s3://{bucket}/source/table.parquet", df


def _read(s3_srv, uri: str) -> pd.DataFrame:
    bucket, key = uri.removeprefix("s3://").split("/", 1)
    return pd.read_csv(io.BytesIO(s3_srv.client().get_object(Bucket=bucket, Key=key)["Body"].read()))


def _keys(s3_srv, bucket: str, prefix: str) -> list[str]:
    page = s3_srv.client().list_objects_v2(Bucket=bucket, Prefix=prefix)
    return sorted(o["Key"] for o in page.get("Contents", []))


def test_prepare_window_reads_and_writes_s3_through_the_connection(conn_only, s3_srv, bucket, source):
    uri, df = source
    op = PrepareWindowOperator(task_id="window", source_uri=uri, time_column="batch", start="2", end="10",
                               output_dir=f"s3://{bucket}/windows", key_column="row_id", holdout_fraction=0.25,
                               min_rows=10, aws_conn_id=conn_only, allowed_root=f"s3://{bucket}")
    result = op.execute({"run_id": "manual__1"})
    assert _keys(s3_srv, bucket, "windows/") == ["windows/holdout_2_10.csv", "windows/train_2_10.csv"]
    train, holdout = _read(s3_srv, result["train_uri"]), _read(s3_srv, result["holdout_uri"])
    assert result["rows"] == 90 and len(train) + len(holdout) == 90 and len(holdout) > 0
    window = pd.concat([train, holdout]).sort_values("row_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(window, df[df["batch"].between(2, 10)].reset_index(drop=True))


def test_without_the_connection_the_environment_has_no_credentials(conn_only, bucket, source):
    """The control: the same read with the environment's credentials fails, so the test above used the connection."""
    uri, _ = source
    op = PrepareWindowOperator(task_id="window", source_uri=uri, time_column="batch", start=2, end=10,
                               output_dir=f"s3://{bucket}/windows", min_rows=1, allowed_root=f"s3://{bucket}")
    with pytest.raises(Exception, match="(?i)credentials"):  # botocore's NoCredentialsError
        op.execute({"run_id": "manual__2"})


def test_connection_id_and_bounds_rendered_from_templates(conn_only, s3_srv, bucket, source):
    """``aws_conn_id`` is a template field: rendered from Params, then the task reaches S3 through it."""
    uri, df = source
    op = PrepareWindowOperator(task_id="window", source_uri=uri, time_column="batch", start="{{ params.first }}",
                               end="9", output_dir=f"s3://{bucket}/rendered", key_column="row_id",
                               holdout_fraction=0.0, min_rows=10, aws_conn_id="{{ params.conn }}",
                               allowed_root=f"s3://{bucket}")
    op.render_template_fields({"params": {"conn": CONN_ID, "first": 3}})
    assert op.aws_conn_id == CONN_ID and op.start == "3"
    result = op.execute({"run_id": "manual__3"})
    assert result["holdout_uri"] is None and _keys(s3_srv, bucket, "rendered/") == ["rendered/train_3_9.csv"]
    train = _read(s3_srv, result["train_uri"])
    assert sorted(train["batch"].unique()) == list(range(3, 10)) and len(train) == 70
    pd.testing.assert_frame_equal(train, df[df["batch"].between(3, 9)].reset_index(drop=True))


@pytest.mark.parametrize("operator", [
    PrepareWindowOperator, DataValidationOperator, DistributedTrainingOperator, EvaluateModelOperator,
    RegisterModelOperator, BatchInferenceOperator, DriftDetectionOperator, PerformanceMonitorOperator,
    TriggerPolicyOperator,
])
def test_every_storage_operator_templates_its_connection(operator):
    assert "aws_conn_id" in operator.template_fields
