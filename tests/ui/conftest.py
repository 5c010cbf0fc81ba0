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
            "eval.dataset_digest": f"sha256:{i}{'ab' * 31}c",
            "eval.rows": str(100 * i),
            "mlops.task": "binary",
            "mlops.gate.decision": "promote",
            "mlops.gate.reason": "auc=0.7200000001 vs champion 0.7155555555" if parent else "first model",
        }
        if parent:
            tags["lineage.parent.version"] = parent
            tags["eval.champion_version"] = versions[0]
        mv = client.create_model_version(MODEL, source=f"runs:/{run_id}/model", run_id=run_id, tags=tags)
        versions.append(mv.version)
        if parent:
            # The champion's score on the challenger's evaluation rows, recorded when they were scored together.
            client.set_model_version_tag(MODEL, versions[0], f"eval_on.{i}{'ab' * 5}a.auc", "0.69")
        service.set_alias(MODEL, "champion", mv.version, dag_run=f"train_pipeline/run{i}", reason="beats champion")
    service.set_alias(MODEL, "staging", versions[1], dag_run="train_pipeline/run2", reason="staged")
    # Two monitored windows: a quiet one, then one that triggered a fine-tune.
    monitoring = client.get_experiment_by_name(f"{MODEL}-monitoring")
    mon_id = monitoring.experiment_id if monitoring else client.create_experiment(f"{MODEL}-monitoring")
    for start, end, share, auc, action in (("1981-01-01", "1981-03-31", 0.25, 0.78, "none"),
                                           ("1981-04-01", "1981-06-30", 0.875, 0.66, "fine_tune")):
        run = client.create_run(mon_id, tags={"airflow.dag_id": "drift_monitor", "airflow.run_id": f"m{start}",
                                              "mlops.policy.action": action,
                                              "mlops.policy.signals": "performance_drop" if action != "none" else ""})
        client.log_param(run.info.run_id, "window_start", start)
        client.log_param(run.info.run_id, "window_end", end)
        client.log_metric(run.info.run_id, "drift.share", share)
        client.log_metric(run.info.run_id, "monitor.auc.value", auc)
    return {"v1": versions[0], "v2": versions[1]}

