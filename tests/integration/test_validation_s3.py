"""Validation of s3:// batches against a real S3 endpoint (moto's server over HTTP on loopback)."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import pytest

from airflow_mlops.hooks.storage import S3Storage
from airflow_mlops.operators.validation import DataValidationOperator
from airflow_mlops.validation import (
    REASON_FILE,
    BatchNotFoundError,
    BatchReadError,
    ExpectationsFailedError,
    PathOutsideRootError,
    dataset_digest,
)
from integration.s3_fixtures_validation import aws_conn, validation_bucket  # noqa: F401

SUITE = str(Path(__file__).resolve().parents[2] / "include" / "expectations" / "rainfall.json")

pytestmark = pytest.mark.integration


class FakeTI:
    def xcom_push(self, key: str, value: object) -> None:
        pass


@pytest.fixture(scope="module")
def window_bytes(rainfall_source) -> dict[str, bytes]:
    import pandas as pd

    df = pd.read_parquet(rainfall_source).iloc[2000:2120].reset_index(drop=True)
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    bad = df.copy()
    bad.loc[7, "visibility"] = float("nan")
    return {"good": buf.getvalue(), "bad_csv": bad.to_csv(index=False).encode()}


def test_s3_batch_passes_with_env_credentials(validation_bucket, window_bytes):  # noqa: F811
    uri = validation_bucket.put("windows/2024-01.parquet", window_bytes["good"])
    op = DataValidationOperator(task_id="v", data_path=uri, suite_path=SUITE,
                                allowed_root=validation_bucket.uri("windows"))
    summary = op.execute({"ti": FakeTI()})
    assert summary["success"] and summary["rows"] == 120 and summary["data_uri"] == uri
    assert summary["digest"] == "sha256:" + hashlib.sha256(window_bytes["good"]).hexdigest()
    assert dataset_digest(uri, S3Storage()) == summary["digest"]


def test_s3_batch_with_airflow_connection(validation_bucket, window_bytes, aws_conn, monkeypatch):  # noqa: F811
    uri = validation_bucket.put("windows/w.parquet", window_bytes["good"])
    for var in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(var, raising=False)
    op = DataValidationOperator(task_id="v", data_path=uri, suite_path=SUITE, aws_conn_id=aws_conn, allowed_root=validation_bucket.uri("windows"))
    assert op.execute({"ti": FakeTI()})["success"]


def test_failed_s3_batch_is_quarantined_on_s3(validation_bucket, window_bytes):  # noqa: F811
    uri = validation_bucket.put("windows/bad.csv", window_bytes["bad_csv"])
    op = DataValidationOperator(task_id="v", data_path=uri, suite_path=SUITE,
                                quarantine_root=validation_bucket.uri("quarantine"), allowed_root=validation_bucket.uri("windows"))
    with pytest.raises(ExpectationsFailedError, match=r"expect_column_values_to_not_be_null\(visibility\)") as err:
        op.execute({"ti": FakeTI()})
    assert validation_bucket.get("windows/bad.csv") == window_bytes["bad_csv"]
    keys = validation_bucket.keys("quarantine/")
    assert len(keys) == 2 and keys[0].endswith("-bad.csv/bad.csv") and keys[1].endswith(f"-bad.csv/{REASON_FILE}")
    assert validation_bucket.get(keys[0]) == window_bytes["bad_csv"]
    reason = json.loads(validation_bucket.get(keys[1]))
    assert reason["data_uri"] == uri and reason["failures"][0]["column"] == "visibility"
    assert err.value.summary["quarantine_uri"] == validation_bucket.uri(keys[0].rsplit("/", 1)[0])


def test_truncated_s3_parquet(validation_bucket, window_bytes):  # noqa: F811
    uri = validation_bucket.put("windows/cut.parquet", window_bytes["good"][:500])
    op = DataValidationOperator(task_id="v", data_path=uri, suite_path=SUITE,
                                quarantine_root=validation_bucket.uri("quarantine"), allowed_root=validation_bucket.uri("windows"))
    with pytest.raises(BatchReadError, match="truncated"):
        op.execute({"ti": FakeTI()})
    assert any(k.endswith("cut.parquet/reason.json") for k in validation_bucket.keys("quarantine/"))


def test_missing_s3_object_and_traversal(validation_bucket):  # noqa: F811
    op = DataValidationOperator(task_id="v", data_path=validation_bucket.uri("windows/none.parquet"),
                                suite_path=SUITE, allowed_root=validation_bucket.uri("windows"))
    with pytest.raises(BatchNotFoundError, match="does not exist"):
        op.execute({"ti": FakeTI()})
    op = DataValidationOperator(task_id="v", data_path=validation_bucket.uri("windows/../secrets/x.csv"),
                                suite_path=SUITE, allowed_root=validation_bucket.uri("windows"))
    with pytest.raises(PathOutsideRootError, match="leaves the allowed root"):
        op.execute({"ti": FakeTI()})


def test_s3_batch_streams_from_a_copy_on_disk_and_quarantines_it(validation_bucket, window_bytes):  # noqa: F811
    uri = validation_bucket.put("windows/bad.csv", window_bytes["bad_csv"])
    results = {}
    for engine in ("pandas", "streaming"):
        op = DataValidationOperator(task_id="v", data_path=uri, suite_path=SUITE, engine=engine,
                                    quarantine_root=validation_bucket.uri(f"quarantine-{engine}"), allowed_root=validation_bucket.uri("windows"))
        with pytest.raises(ExpectationsFailedError) as err:
            op.execute({"ti": FakeTI()})
        results[engine] = err.value.summary
    streamed, in_memory = results["streaming"], results["pandas"]
    assert streamed["engine"] == "streaming" and streamed["digest"] == in_memory["digest"]
    assert streamed["failures"] == in_memory["failures"] and streamed["rows"] == 120
    (copy,) = [k for k in validation_bucket.keys("quarantine-streaming/") if k.endswith("bad.csv")]
    assert validation_bucket.get(copy) == window_bytes["bad_csv"]
