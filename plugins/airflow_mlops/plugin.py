"""The Airflow plugin: operator extra links and macros (loaded by the API server and the scheduler)."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from airflow_mlops.operators.links import DataDocsLink, DriftReportLink, MlflowModelVersionLink, MlflowRunLink


def model_uri(name: str, alias: str = "champion") -> str:
    """Macro: ``{{ macros.airflow_mlops.model_uri('rainfall') }}`` -> ``models:/rainfall@champion``."""
    return f"models:/{name}@{alias}"


def champion_model_uri(name: str) -> str:
    """Macro: the champion's model URI."""
    return model_uri(name, "champion")


class MlopsPlugin(AirflowPlugin):
    name = "airflow_mlops"
    operator_extra_links = [MlflowRunLink(), MlflowModelVersionLink(), DataDocsLink(), DriftReportLink()]
    macros = [model_uri, champion_model_uri]
