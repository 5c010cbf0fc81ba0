"""Operator extra links to MLflow: the pipeline's run, a model version, validation Data Docs, drift reports."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperatorLink

if TYPE_CHECKING:
    from airflow.models.taskinstancekey import TaskInstanceKey

RUN_URL_KEY = "mlflow_run_url"
MODEL_VERSION_URL_KEY = "mlflow_model_version_url"
DATA_DOCS_URL_KEY = "data_docs_url"
DRIFT_REPORT_URL_KEY = "drift_report_url"


def mlflow_ui_base(settings: Any) -> str | None:
    """The MLflow UI address: extra ``ui_url`` of the connection, else an http(s) tracking URI."""
    import os

    ui = os.environ.get("MLOPS_MLFLOW_UI_URL") or getattr(settings, "ui_url", None)
    if ui:
        return ui.rstrip("/")
    uri = getattr(settings, "tracking_uri", "") or ""
    return uri.rstrip("/") if uri.startswith(("http://", "https://")) else None


def run_url(base: str | None, experiment_id: str, run_id: str) -> str | None:
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}" if base else None


def model_version_url(base: str | None, name: str, version: str) -> str | None:
    return f"{base}/#/models/{name}/versions/{version}" if base else None


def artifact_url(base: str | None, experiment_id: str, run_id: str, path: str) -> str | None:
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}/artifacts/{path}" if base else None


class _XComLink(BaseOperatorLink):
    xcom_key = ""

    def get_link(self, operator: Any, *, ti_key: TaskInstanceKey) -> str:
        from airflow.sdk.execution_time.xcom import XCom

        value = XCom.get_value(ti_key=ti_key, key=self.xcom_key)
        return value or ""


class MlflowRunLink(_XComLink):
    name = "MLflow run"
    xcom_key = RUN_URL_KEY


class MlflowModelVersionLink(_XComLink):
    name = "MLflow model version"
    xcom_key = MODEL_VERSION_URL_KEY


class DataDocsLink(_XComLink):
    name = "Data Docs"
    xcom_key = DATA_DOCS_URL_KEY


class DriftReportLink(_XComLink):
    name = "Drift report"
    xcom_key = DRIFT_REPORT_URL_KEY
