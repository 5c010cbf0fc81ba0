"""Data validation operator: a batch against a Great Expectations suite; the work is in airflow_mlops.validation."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator, Context

from airflow_mlops.operators.base import HooksMixin
from airflow_mlops.operators.links import DATA_DOCS_URL_KEY, DataDocsLink, artifact_url, mlflow_ui_base


class DataValidationOperator(HooksMixin, BaseOperator):
    """
    Validates one data batch (CSV or Parquet, local or s3://) against an expectation suite kept as JSON.

    Returns a compact summary to XCom: ``success``, ``evaluated``, ``failed``, ``warned``,
    ``unexpected_counts``, ``digest`` (``sha256:`` of the file's bytes), ``rows``, ``columns``, ``schema``,
    ``data_uri``, ``suite``, ``suite_digest``, ``failures``, ``warnings`` and ``engine``. A failed critical expectation
    raises :class:`~airflow_mlops.validation.errors.ExpectationsFailedError` (a ``DataValidationError``) after
    the batch was copied to ``quarantine_root``; the original file is never changed.

    :param data_path: the batch (templated): local path, file:// or s3:// URI.
    :param suite_path: the GX suite JSON (templated), e.g. ``include/expectations/<table>.json``.
    :param quarantine_root: where a rejected batch is copied with its ``reason.json`` (templated); ``None``
        keeps no copy.
    :param allowed_root: the batch must resolve under this root (templated); ``../`` escapes and symlinks out
        are refused. Default: the data folder (env ``MLOPS_DATA_DIR``, else ``data/`` of the project or working
        directory); ``"/"`` opts out explicitly.
    :param severity_overrides: ``{expectation key or type: "warning" | "critical"}``; a key is the
        expectation's ``meta.name`` or ``type(column)``.
    :param warn_only: expectation keys or types that are reported but never fail the task.
    :param data_format: ``auto`` (extension, then content), ``csv`` or ``parquet``.
    :param max_examples: unexpected values kept per failed expectation.
    :param mlflow_conn_id: connection of type ``mlflow``; with ``mlflow_run_id`` the full result and the Data
        Docs page are logged as artifacts of that run.
    :param mlflow_run_id: the MLflow run (templated), e.g. the run-starting task's return value.
    :param artifact_dir: artifact folder in the run; default ``validation/<task_id>``.
    :param aws_conn_id: connection for s3:// paths; ``None`` reads the AWS environment.
    :param engine: ``pandas`` (default: the batch in memory), ``streaming`` (row group by row group or chunk by
        chunk, bounded memory, the same verdicts) or ``spark`` (GX's Spark datasource; the active Spark session,
        else ``SPARK_MASTER``, else ``local[2]``).
    """

    template_fields: Sequence[str] = (
        "data_path", "suite_path", "mlflow_run_id", "quarantine_root", "allowed_root", "aws_conn_id",
    )
    operator_extra_links = (DataDocsLink(),)
    ui_color = "#d9f2e6"

    def __init__(
        self,
        *,
        data_path: str,
        suite_path: str,
        quarantine_root: str | None = None,
        allowed_root: str | None = None,
        severity_overrides: dict[str, str] | None = None,
        warn_only: Sequence[str] | None = None,
        data_format: str = "auto",
        max_examples: int = 5,
        mlflow_conn_id: str | None = None,
        mlflow_run_id: str | None = None,
        artifact_dir: str | None = None,
        aws_conn_id: str | None = None,
        engine: str = "pandas",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.data_path = data_path
        self.suite_path = suite_path
        self.quarantine_root = quarantine_root
        self.allowed_root = allowed_root
        self.severity_overrides = severity_overrides
        self.warn_only = warn_only
        self.data_format = data_format
        self.max_examples = max_examples
        self.mlflow_conn_id = mlflow_conn_id
        self.mlflow_run_id = mlflow_run_id
        self.artifact_dir = artifact_dir
        self.aws_conn_id = aws_conn_id
        self.engine = engine

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_mlops.validation.service import ValidationConfig, ValidationService

        config = ValidationConfig(
            data_path=self.data_path,
            suite_path=self.suite_path,
            quarantine_root=self.quarantine_root or None,
            allowed_root=self.allowed_root or None,
            severity_overrides=self.severity_overrides or {},
            warn_only=self.warn_only or (),
            data_format=self.data_format,
            max_examples=self.max_examples,
            engine=self.engine,
        )
        outcome = ValidationService(self.storage_hook.storage_for).validate(config, extra_checks=self.extra_checks)
        s = outcome.summary
        self.log.info("Suite %s on %s: %d evaluated, %d failed, %d warned (%s rows, %s)",
                      s["suite"], s["data_uri"], s["evaluated"], s["failed"], s["warned"], s["rows"], s["digest"])
        if self.mlflow_conn_id and self.mlflow_run_id:
            self._log_to_mlflow(context, outcome)
        outcome.raise_for_failure()
        return s

    def extra_checks(self, df: Any) -> list[dict[str, Any]]:
        """
        Checks of your own after the suite, on the same rows: return one failure per broken rule, e.g.
        ``{"expectation": "orders_match_invoices", "observed_value": 12}``. Each fails (and quarantines) the
        batch like a failed critical expectation. Default: none.
        """
        return []

    def _log_to_mlflow(self, context: Context, outcome: Any) -> None:
        from airflow_mlops.validation.artifacts import log_validation_artifacts

        run_id = str(self.mlflow_run_id)
        client = self.mlflow_hook.client
        try:
            path = log_validation_artifacts(client, run_id, outcome, self.artifact_dir or f"validation/{self.task_id}")
        except Exception:
            if outcome.success:
                raise
            # The batch is rejected either way; that error is the one the task must report.
            self.log.exception("Could not log the validation result to MLflow run %s", run_id)
            return
        experiment_id = client.get_run(run_id).info.experiment_id
        url = artifact_url(mlflow_ui_base(self.mlflow_hook.settings), experiment_id, run_id, path)
        self.log.info("Validation artifacts in MLflow run %s: %s", run_id, url or path)
        if url:
            context["ti"].xcom_push(key=DATA_DOCS_URL_KEY, value=url)
