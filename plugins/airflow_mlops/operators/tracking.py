"""The MLflow run that a DAG run's tasks share."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator, Context

from airflow_mlops.hooks.mlflow import MlflowHook
from airflow_mlops.operators.base import HooksMixin
from airflow_mlops.operators.links import RUN_URL_KEY, MlflowRunLink, mlflow_ui_base, run_url


class StartMlflowRunOperator(HooksMixin, BaseOperator):
    """
    Finds or creates the MLflow run of this DAG run and returns its id; a retry finds the same run.

    :param experiment_name: MLflow experiment (templated); created when missing.
    :param run_name: display name of the run (templated); default ``<dag_id>/<run_id>``.
    :param params_to_log: values logged as MLflow params (templated; e.g. the DAG Params). Never pass secrets.
    :param mlflow_conn_id: connection of type ``mlflow``.
    """

    template_fields: Sequence[str] = ("experiment_name", "run_name", "params_to_log")
    operator_extra_links = (MlflowRunLink(),)

    def __init__(
        self,
        *,
        experiment_name: str,
        run_name: str | None = None,
        params_to_log: dict[str, Any] | None = None,
        mlflow_conn_id: str = MlflowHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.experiment_name = experiment_name
        self.run_name = run_name
        self.params_to_log = params_to_log
        self.mlflow_conn_id = mlflow_conn_id

    def execute(self, context: Context) -> str:
        from airflow_mlops.hooks.mlflow import dag_run_key, get_or_create_run

        dag_id, airflow_run_id = context["dag"].dag_id, context["run_id"]
        run_id = get_or_create_run(
            self.hook,
            self.experiment_name,
            dag_run_key(dag_id, airflow_run_id),
            run_name=self.run_name or f"{dag_id}/{airflow_run_id}",
            tags={"airflow.dag_id": dag_id, "airflow.run_id": airflow_run_id},
        )
        client = self.hook.client
        for key, value in sorted((self.params_to_log or {}).items()):
            try:
                client.log_param(run_id, key, value)
            except Exception:  # same key logged by an earlier try with the same value
                self.log.debug("param %s already logged", key)
        run = client.get_run(run_id)
        url = run_url(mlflow_ui_base(self.hook.settings), run.info.experiment_id, run_id)
        if url:
            context["ti"].xcom_push(key=RUN_URL_KEY, value=url)
        self.log.info("MLflow run %s in experiment %s (%s)", run_id, self.experiment_name, url or "no UI URL")
        return run_id
