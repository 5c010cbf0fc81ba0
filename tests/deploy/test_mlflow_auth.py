"""MLflow behind its basic-auth app, as the deployment runs it: refused without a user, signed in by the hook."""

from __future__ import annotations

import base64
import json
import secrets
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from mlops_testkit.servers import MlflowServer, mlflow_server

SEARCH = "/api/2.0/mlflow/experiments/search?max_results=1"
CREDENTIAL_ENV = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")


@pytest.fixture(scope="module")
def authed(tmp_path_factory) -> MlflowServer:
    with mlflow_server(tmp_path_factory.mktemp("mlflow-auth"), auth=("admin", secrets.token_hex(16))) as srv:
        yield srv


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


def test_the_hook_signs_in_with_the_connections_login_and_password(authed, clean_env):
    from airflow_mlops.hooks.mlflow import MlflowHook

    conn = {"conn_type": "mlflow", "host": authed.url, "login": authed.username, "password": authed.password}
    clean_env.setenv("AIRFLOW_CONN_MLFLOW_AUTHED", json.dumps(conn))
    hook = MlflowHook(mlflow_conn_id="mlflow_authed")
    assert hook.settings.token is None
    assert authed.password not in repr(hook.settings)
    experiment_id = hook.get_or_create_experiment("basic-auth-check")
    run = hook.client.create_run(experiment_id)
    hook.client.log_metric(run.info.run_id, "loss", 0.5)
    assert hook.client.get_run(run.info.run_id).data.metrics == {"loss": 0.5}
    assert hook.test_connection()[0]

    # A child process (torchrun's rank 0 logs metrics) signs in with what the settings hand it.
    child = hook.settings.env()
    assert child["MLFLOW_TRACKING_USERNAME"] == authed.username
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
