"""airflow-mlops: Airflow 3 operators and reference DAGs for the whole ML lifecycle."""

from __future__ import annotations

__version__ = "0.1.0"


def get_provider_info() -> dict:
    """Provider metadata read by Airflow's ProvidersManager (entry point ``apache_airflow_provider``)."""
    return {
        "package-name": "airflow-mlops",
        "name": "MLOps",
        "description": "Data validation, distributed PyTorch training, checkpoints, MLflow registry promotion "
        "and drift-triggered continual learning.",
        "versions": [__version__],
        "connection-types": [
            {"hook-class-name": "airflow_mlops.hooks.mlflow.MlflowHook", "connection-type": "mlflow"},
        ],
        "extra-links": [
            "airflow_mlops.operators.links.MlflowRunLink",
            "airflow_mlops.operators.links.MlflowModelVersionLink",
        ],
    }
