"""The Airflow API server app in this process (plugins mounted) with a real MLflow server behind the page."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

MODEL = "ui-test-model"


@pytest.fixture(scope="module")
def api_client(airflow_db, mlflow_srv):
    """A TestClient over Airflow's own FastAPI app: auth manager, JWT, plugin apps, all real."""
    import secrets

    from airflow.api_fastapi.app import create_app
    from airflow.configuration import conf
    from fastapi.testclient import TestClient

    # The API server signs and checks its JWTs with this key; a deployment sets it once for all components.
    had_secret = bool(conf.get("api_auth", "jwt_secret", fallback=""))
    if not had_secret:
        conf.set("api_auth", "jwt_secret", secrets.token_urlsafe(48))
    try:
        app = create_app()
        with TestClient(app, base_url="http://127.0.0.1:8088") as client:
            yield client
    finally:
        if not had_secret:
            conf.remove_option("api_auth", "jwt_secret")


@pytest.fixture(scope="module")
def admin_password(api_client, airflow_home: Path) -> str:
    # The simple auth manager writes generated passwords next to the Airflow home at start.
    passwords = json.loads((airflow_home / "simple_auth_manager_passwords.json.generated").read_text())
    return passwords["admin"]


@pytest.fixture(scope="module")
def token(api_client, admin_password) -> str:
    resp = api_client.post("/auth/token", json={"username": "admin", "password": admin_password})
    assert resp.status_code == 201, resp.text
    return resp.json()["access_token"]


@pytest.fixture(scope="module")
def registered(mlflow_srv) -> dict[str, str]:
    """Two versions of a model with lineage tags, v2 fine-tuned from v1; champion moved v1 -> v2."""
    from mlflow import MlflowClient

    from airflow_mlops.registry.service import RegistryService

    client = MlflowClient(tracking_uri=mlflow_srv.url)
    exp = client.get_experiment_by_name("ui-tests")
    exp_id = exp.experiment_id if exp else client.create_experiment("ui-tests")
    service = RegistryService(client)
    service.ensure_registered_model(MODEL, description="rain tomorrow")
    versions = []
    for i, parent in ((1, None), (2, "1")):
        run_id = client.create_run(exp_id).info.run_id
        tags = {
            "lineage.data.uri": f"/data/window-{i}.parquet",
            "lineage.data.digest": f"sha256:{i:064d}",
            "lineage.hyperparameters": json.dumps({"epochs": i, "processes": 2}),
            "lineage.orchestration.dag_id": "train_pipeline" if parent is None else "continual_learning",
            "eval.auc": f"0.7{i}",
            "mlops.gate.decision": "promote",
        }
        if parent:
            tags["lineage.parent.version"] = parent
        mv = client.create_model_version(MODEL, source=f"runs:/{run_id}/model", run_id=run_id, tags=tags)
        versions.append(mv.version)
        service.set_alias(MODEL, "champion", mv.version, dag_run=f"train_pipeline/run{i}", reason="beats champion")
    service.set_alias(MODEL, "staging", versions[1], dag_run="train_pipeline/run2", reason="staged")
    return {"v1": versions[0], "v2": versions[1]}

