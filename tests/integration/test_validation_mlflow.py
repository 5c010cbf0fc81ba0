"""Validation results and Data Docs logged to a real MLflow server, and the Data Docs link."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from airflow_mlops.operators.links import DATA_DOCS_URL_KEY
from airflow_mlops.operators.validation import DataValidationOperator
from airflow_mlops.validation import ExpectationsFailedError

SUITE = str(Path(__file__).resolve().parents[2] / "include" / "expectations" / "rainfall.json")

pytestmark = pytest.mark.integration


class FakeTI:
    def __init__(self) -> None:
        self.pushed: dict[str, object] = {}

    def xcom_push(self, key: str, value: object) -> None:
        self.pushed[key] = value


@pytest.fixture
def mlflow_run(mlflow_srv):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_srv.url)
    exp = client.get_experiment_by_name("validation-tests") or None
    exp_id = exp.experiment_id if exp else client.create_experiment("validation-tests")
    return client, client.create_run(exp_id).info.run_id


def _artifacts(client, run_id: str, folder: str) -> set[str]:
    return {Path(a.path).name for a in client.list_artifacts(run_id, folder)}


def test_results_and_data_docs_logged(mlflow_run, rainfall_source, tmp_path):
    import pandas as pd

    client, run_id = mlflow_run
    path = tmp_path / "w.parquet"
    pd.read_parquet(rainfall_source).iloc[:90].to_parquet(path, index=False)
    ti = FakeTI()
    op = DataValidationOperator(task_id="validate", data_path=str(path), suite_path=SUITE,
                                mlflow_conn_id="mlflow_default", mlflow_run_id=run_id, allowed_root=str(tmp_path))
    summary = op.execute({"ti": ti})
    assert summary["success"]
    assert _artifacts(client, run_id, "validation/validate") == {"result.json", "summary.json", "data_docs.html"}
    local = client.download_artifacts(run_id, "validation/validate/result.json", str(tmp_path))
    assert json.loads(Path(local).read_text())["success"] is True
    html = Path(client.download_artifacts(run_id, "validation/validate/data_docs.html", str(tmp_path))).read_text()
    assert "<html" in html.lower()
    url = ti.pushed[DATA_DOCS_URL_KEY]
    assert url.startswith("http://127.0.0.1:") and url.endswith(f"/runs/{run_id}/artifacts/validation/validate/data_docs.html")


def test_failed_batch_still_logs_then_raises(mlflow_run, rainfall_source, tmp_path):
    import pandas as pd

    client, run_id = mlflow_run
    df = pd.read_parquet(rainfall_source).iloc[:90].copy()
    df.loc[4, "dew_point"] = float("inf")
    path = tmp_path / "w.csv"
    df.to_csv(path, index=False)
    op = DataValidationOperator(task_id="validate_bad", data_path=str(path), suite_path=SUITE,
                                quarantine_root=str(tmp_path / "q"), mlflow_conn_id="mlflow_default",
                                mlflow_run_id=run_id, allowed_root=str(tmp_path))
    with pytest.raises(ExpectationsFailedError, match=r"expect_column_values_to_be_between\(dew_point\)"):
        op.execute({"ti": FakeTI()})
    assert "result.json" in _artifacts(client, run_id, "validation/validate_bad")
    summary = json.loads(Path(client.download_artifacts(run_id, "validation/validate_bad/summary.json",
                                                        str(tmp_path))).read_text())
    assert summary["success"] is False and summary["quarantine_uri"]
