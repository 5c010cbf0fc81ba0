"""MLflow behind its basic-auth app, as the deployment runs it: refused without a user, signed in by the hook."""

from __future__ import annotations

import base64
import json
import secrets
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from mlops_testkit.servers import MlflowServer, mlflow_server

REPO = Path(__file__).resolve().parents[2]

SEARCH = "/api/2.0/mlflow/experiments/search?max_results=1"
CREDENTIAL_ENV = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")


@pytest.fixture(scope="module")
def authed(tmp_path_factory) -> MlflowServer:
    with mlflow_server(tmp_path_factory.mktemp("mlflow-auth"), auth=("admin", secrets.token_hex(16))) as srv:
        yield srv


@pytest.fixture(scope="module")
def airflow_user(authed) -> tuple[str, str]:
    """Airflow's own MLflow user, made by the deployment's mlflow-init program (run twice: idempotent)."""
    user = ("airflow", secrets.token_hex(16))
    env = {"PATH": "/usr/bin:/bin", "MLFLOW_TRACKING_URI": authed.url, "MLFLOW_ADMIN_USER": authed.username,
           "MLFLOW_ADMIN_PASSWORD": authed.password, "MLFLOW_AIRFLOW_USER": user[0],
           "MLFLOW_AIRFLOW_PASSWORD": user[1]}
    for action in ("created", "updated"):
        proc = subprocess.run([sys.executable, str(REPO / "include" / "scripts" / "mlflow_users.py")], env=env,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert f"'airflow' {action}: Airflow's, not an admin" in proc.stdout
    return user


@pytest.fixture
def clean_env(monkeypatch):
    """Credentials the hook puts into this process's environment are taken out again after the test."""
    for key in CREDENTIAL_ENV:
        monkeypatch.delenv(key, raising=False)
    return monkeypatch


def _status(url: str, user: str | None = None, password: str | None = None) -> int:
    request = urllib.request.Request(url)
    if user:
        request.add_header("Authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_the_server_refuses_requests_without_a_user(authed):
    """The attack on an open server: read (or write) the registry with no credentials at all."""
    assert _status(authed.url + SEARCH) == 401
    assert _status(authed.url + SEARCH, "admin", "not-the-password") == 401
    assert _status(authed.url + SEARCH, "intruder", authed.password) == 401
    assert _status(authed.url + SEARCH, authed.username, authed.password) == 200
    assert _status(authed.url + "/health") == 200  # the compose healthcheck needs no user


def test_the_hook_signs_in_with_the_connections_login_and_password(authed, airflow_user, clean_env):
    """Airflow's own user does what the pipelines do: runs, metrics, a registered model, a version, an alias."""
    from airflow_mlops.hooks.mlflow import MlflowHook

    conn = {"conn_type": "mlflow", "host": authed.url, "login": airflow_user[0], "password": airflow_user[1]}
    clean_env.setenv("AIRFLOW_CONN_MLFLOW_AUTHED", json.dumps(conn))
    hook = MlflowHook(mlflow_conn_id="mlflow_authed")
    assert hook.settings.token is None
    assert airflow_user[1] not in repr(hook.settings)
    experiment_id = hook.get_or_create_experiment("basic-auth-check")
    run = hook.client.create_run(experiment_id)
    hook.client.log_metric(run.info.run_id, "loss", 0.5)
    assert hook.client.get_run(run.info.run_id).data.metrics == {"loss": 0.5}
    assert hook.test_connection()[0]
    client = hook.client
    client.create_registered_model("basic-auth-model")
    version = client.create_model_version("basic-auth-model", f"runs:/{run.info.run_id}/model", run.info.run_id)
    client.set_registered_model_alias("basic-auth-model", "champion", version.version)
    client.set_model_version_tag("basic-auth-model", version.version, "mlops.check", "ok")
    assert client.get_model_version_by_alias("basic-auth-model", "champion").version == version.version
    # ... and nothing an admin does: no users made, no one's permissions changed.
    assert _status(authed.url + "/api/2.0/mlflow/users/get?username=admin", *airflow_user) == 403

    # A child process (torchrun's rank 0 logs metrics) signs in with what the settings hand it.
    child = hook.settings.env()
    assert child["MLFLOW_TRACKING_USERNAME"] == airflow_user[0]
    code = ("import sys; from mlflow import MlflowClient; "
            "MlflowClient().log_metric(sys.argv[1], 'loss', 0.25, step=1); print('logged')")
    base = {"PATH": "/usr/bin:/bin", "HOME": str(authed.root), "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}
    ok = subprocess.run([sys.executable, "-c", code, run.info.run_id], env={**base, **child},
                        capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and "logged" in ok.stdout, ok.stderr[-2000:]
    anonymous = {k: v for k, v in child.items() if k not in CREDENTIAL_ENV}
    refused = subprocess.run([sys.executable, "-c", code, run.info.run_id], env={**base, **anonymous},
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode != 0 and "401" in refused.stderr


def test_a_connection_without_the_password_is_refused(authed, clean_env):
    from airflow_mlops.hooks.mlflow import MlflowHook

    clean_env.setenv("AIRFLOW_CONN_MLFLOW_ANONYMOUS", json.dumps({"conn_type": "mlflow", "host": authed.url}))
    ok, message = MlflowHook(mlflow_conn_id="mlflow_anonymous").test_connection()
    assert not ok and "401" in message


def test_mlflow_init_names_a_wrong_admin_password_and_a_shared_name(authed):
    script = str(REPO / "include" / "scripts" / "mlflow_users.py")
    base = {"PATH": "/usr/bin:/bin", "MLFLOW_TRACKING_URI": authed.url, "MLFLOW_ADMIN_USER": authed.username,
            "MLFLOW_AIRFLOW_USER": "airflow", "MLFLOW_AIRFLOW_PASSWORD": secrets.token_hex(16)}
    wrong = subprocess.run([sys.executable, script], env={**base, "MLFLOW_ADMIN_PASSWORD": "not-the-password"},
                           capture_output=True, text=True, timeout=120)
    assert wrong.returncode == 1
    assert "MLFLOW_ADMIN_PASSWORD in docker/.env is not the password MLflow's user store holds" in wrong.stderr
    assert "not-the-password" not in wrong.stderr
    shared = subprocess.run([sys.executable, script], env={**base, "MLFLOW_ADMIN_PASSWORD": authed.password,
                                                           "MLFLOW_AIRFLOW_USER": authed.username},
                            capture_output=True, text=True, timeout=120)
    assert shared.returncode == 1 and "expected a user of its own" in shared.stderr
