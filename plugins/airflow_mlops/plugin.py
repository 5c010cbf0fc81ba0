"""The Airflow plugin: operator extra links, the model page (FastAPI app + UI navigation entry) and macros."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from airflow_mlops.operators.links import DataDocsLink, DriftReportLink, MlflowModelVersionLink, MlflowRunLink
from airflow_mlops.ui.app import URL_PREFIX
from airflow_mlops.ui.app import app as models_app


def model_uri(name: str, alias: str = "champion") -> str:
    """Macro: ``{{ macros.airflow_mlops.model_uri('churn') }}`` -> ``models:/churn@champion``."""
    return f"models:/{name}@{alias}"


def champion_model_uri(name: str) -> str:
    """Macro: the champion's model URI."""
    return model_uri(name, "champion")


class MlopsPlugin(AirflowPlugin):
    name = "airflow_mlops"
    operator_extra_links = [MlflowRunLink(), MlflowModelVersionLink(), DataDocsLink(), DriftReportLink()]
    macros = [model_uri, champion_model_uri]
    # Served by the Airflow API server; every route checks the Airflow login (see airflow_mlops.ui.auth).
    fastapi_apps = [{"app": models_app, "url_prefix": URL_PREFIX, "name": "MLOps models"}]
    # A top-level navigation entry that shows the page inside the Airflow UI (at /plugin/mlops-models).
    external_views = [
        {
            "name": "Models",
            "href": f"{URL_PREFIX}/",
            "url_route": "mlops-models",
            "destination": "nav",
            "nav_top_level": True,
        }
    ]
