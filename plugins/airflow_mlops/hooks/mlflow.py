"""MLflow hook: the ``mlflow`` connection type (tracking URI, registry URI, credentials), clients built at run time."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseHook

from airflow_mlops.exceptions import MlopsConfigurationError, explain
from airflow_mlops.hooks.retries import (
    MLFLOW_BUDGET_ENV,
    MLFLOW_CLIENT_RETRIES,
    bound_mlflow_client_retries,
    warn_mlflow_retries,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient


@dataclass(frozen=True)
class MlflowSettings:
    """Where MLflow lives and who signs in. Credentials are kept out of repr so they never reach a log line."""

    tracking_uri: str
    registry_uri: str | None = None
    #: a bearer token (the connection's password without a login)
    token: str | None = None
    artifact_location: str | None = None
    ui_url: str | None = None
    #: a user of MLflow's basic-auth app (the connection's login and password)
    username: str | None = None
    password: str | None = None

    def __repr__(self) -> str:
        return f"MlflowSettings(tracking_uri={self.tracking_uri!r}, registry_uri={self.registry_uri!r})"

    def env(self) -> dict[str, str]:
        """Environment for a child process (the torchrun workers log metrics from rank 0)."""
        env = {"MLFLOW_TRACKING_URI": self.tracking_uri}
        for key in (*MLFLOW_CLIENT_RETRIES, MLFLOW_BUDGET_ENV):
            if os.environ.get(key):
                env[key] = os.environ[key]
        if self.registry_uri:
            env["MLFLOW_REGISTRY_URI"] = self.registry_uri
        env.update(self.credentials_env())
        return env

    def credentials_env(self) -> dict[str, str]:
        """MLflow's client reads its credentials from these variables (basic auth, else a bearer token)."""
        if self.username and self.password:
            return {"MLFLOW_TRACKING_USERNAME": self.username, "MLFLOW_TRACKING_PASSWORD": self.password}
        if self.token:
            return {"MLFLOW_TRACKING_TOKEN": self.token}
        return {}


def settings_from_connection(conn: Any) -> MlflowSettings:
    """
    Read an ``mlflow`` connection: extra ``tracking_uri`` wins, else ``schema://host:port/path``.

    Login and password are a user of MLflow's basic-auth app; a password without a login is a bearer token.
    """
    extra = conn.extra_dejson or {}
    tracking_uri = extra.get("tracking_uri")
    if not tracking_uri and conn.host:
        host = conn.host
        if "://" not in host:
            scheme = conn.schema or "http"
            host = f"{scheme}://{host}"
        if conn.port:
            host = f"{host.rstrip('/')}:{conn.port}"
        tracking_uri = host
    if not tracking_uri:
        raise MlopsConfigurationError(
            explain(
                f"MLflow connection {conn.conn_id!r} names no tracking server",
                expected="host (http://mlflow:5000) or extra {'tracking_uri': 'sqlite:///...'}",
                received={"host": conn.host, "extra_keys": sorted(extra)},
                hint="edit the connection in Admin > Connections or set AIRFLOW_CONN_"
                f"{conn.conn_id.upper()}.",
            )
        )
    return MlflowSettings(
        tracking_uri=tracking_uri,
        registry_uri=extra.get("registry_uri") or None,
        token=(None if conn.login else conn.password) or extra.get("token") or None,
        artifact_location=extra.get("artifact_location") or None,
        ui_url=extra.get("ui_url") or None,
        username=conn.login or None,
        password=(conn.password if conn.login else None) or None,
    )


class MlflowHook(BaseHook):
    """
    Talks to an MLflow tracking server and model registry.

    :param mlflow_conn_id: Airflow connection of type ``mlflow``. Its host (or extra ``tracking_uri``) is the
        tracking URI, extra ``registry_uri`` an optional separate registry, ``artifact_location`` the artifact root of
        experiments it creates (for a SQLite tracking URI), ``ui_url`` the MLflow UI for extra links. Login and
        password sign in to a server behind MLflow's basic-auth app; a password alone is a bearer token.
    """

    conn_name_attr = "mlflow_conn_id"
    default_conn_name = "mlflow_default"
    conn_type = "mlflow"
    hook_name = "MLflow"

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        return {
            "hidden_fields": [],
            "relabeling": {"host": "Tracking URI (http://host or sqlite:///path)",
                           "login": "Username (basic auth)", "password": "Password (or token, without username)"},
            "placeholders": {
                "host": "http://mlflow:5000",
                "extra": '{"registry_uri": "", "tracking_uri": "", "artifact_location": "", "ui_url": ""}',
            },
        }

    def __init__(self, mlflow_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.mlflow_conn_id = mlflow_conn_id

    @cached_property
    def settings(self) -> MlflowSettings:
        return settings_from_connection(self.get_connection(self.mlflow_conn_id))

    def get_conn(self) -> MlflowClient:
        return self.client

    @cached_property
    def client(self) -> MlflowClient:
        from mlflow import MlflowClient

        self.configure()
        # Bounded client retries (about 30 s per call, not 4 silent minutes), each retry a warning naming
        # the endpoint; past them the call raises and the task fails for Airflow's retry.
        bound_mlflow_client_retries()
        warn_mlflow_retries(self.settings.tracking_uri)
        return MlflowClient(tracking_uri=self.settings.tracking_uri, registry_uri=self.settings.registry_uri)

    def configure(self) -> None:
        """Point the process-wide ``mlflow`` fluent API at this connection (model logging needs it)."""
        import mlflow

        s = self.settings
        os.environ.update(s.credentials_env())
        mlflow.set_tracking_uri(s.tracking_uri)
        if s.registry_uri:
            mlflow.set_registry_uri(s.registry_uri)

    def get_or_create_experiment(self, name: str) -> str:
        exp = self.client.get_experiment_by_name(name)
        if exp is not None:
            return exp.experiment_id
        try:
            return self.client.create_experiment(name, artifact_location=self.settings.artifact_location)
        except Exception:
            # Another task created it in between: read it back instead of failing.
            exp = self.client.get_experiment_by_name(name)
            if exp is None:
                raise
            return exp.experiment_id

    def test_connection(self) -> tuple[bool, str]:
        try:
            self.client.search_experiments(max_results=1)
            return True, f"Connected to MLflow at {self.settings.tracking_uri}"
        except Exception as exc:
            return False, str(exc)


RUN_KEY_TAG = "airflow.dag_run_key"


def dag_run_key(dag_id: str, run_id: str) -> str:
    return f"{dag_id}/{run_id}"


def get_or_create_run(hook: MlflowHook, experiment_name: str, run_key: str, run_name: str | None = None,
                      tags: dict[str, str] | None = None) -> str:
    """The MLflow run of one DAG run: found by its key tag, created once. A retried task reuses it."""
    client = hook.client
    experiment_id = hook.get_or_create_experiment(experiment_name)
    escaped = run_key.replace("'", "\\'")
    found = client.search_runs([experiment_id], filter_string=f"tags.`{RUN_KEY_TAG}` = '{escaped}'", max_results=1)
    if found:
        return found[0].info.run_id
    all_tags = {RUN_KEY_TAG: run_key, **(tags or {})}
    run = client.create_run(experiment_id, run_name=run_name, tags=all_tags)
    return run.info.run_id
