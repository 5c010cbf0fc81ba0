"""Batch inference with the model behind a registry alias."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator, Context

from airflow_mlops.hooks.mlflow import MlflowHook
from airflow_mlops.operators.base import HooksMixin


class BatchInferenceOperator(HooksMixin, BaseOperator):
    """
    Scores a table with ``models:/<model_name>@<alias>`` and writes the predictions with the version that made them.

    :param model_name: registered model (templated).
    :param alias: alias to score with, e.g. ``production`` (templated).
    :param input_uri: CSV or Parquet table, local or s3:// (templated).
    :param output_uri: where the predictions go, CSV or Parquet (templated).
    :param feature_columns: model inputs, in order; ``None`` uses the registered version's own (checked when given).
    :param passthrough_columns: input columns copied to the output (keys, timestamps).
    :param allowed_factories: factories (``module:function`` or ``module:*``) a stored model may be rebuilt
        with, beside the built-in models and env ``MLOPS_ALLOWED_FACTORIES``; the pipeline passes its spec's.
    :param pythonpath: folders put on ``sys.path`` while the model is rebuilt (where a user factory lives).
    :param mlflow_conn_id: connection of type ``mlflow``.
    :param aws_conn_id: connection for s3:// paths; ``None`` reads the AWS environment.
    :param allowed_root: ``input_uri`` and ``output_uri`` must lie under this root, checked before any read or write (templated; default
        the data folder, env ``MLOPS_DATA_DIR``; an s3:// prefix for data on S3; ``"/"`` opts out).
    """

    template_fields: Sequence[str] = ("model_name", "alias", "input_uri", "output_uri", "pythonpath", "allowed_root",
                                      "aws_conn_id")

    def __init__(
        self,
        *,
        model_name: str,
        input_uri: Any,
        output_uri: str,
        feature_columns: list[str] | None = None,
        alias: str = "production",
        passthrough_columns: list[str] | None = None,
        pythonpath: list[str] | None = None,
        allowed_factories: list[str] | None = None,
        mlflow_conn_id: str = MlflowHook.default_conn_name,
        aws_conn_id: str | None = None,
        allowed_root: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.allowed_root = allowed_root
        self.model_name = model_name
        self.alias = alias
        self.input_uri = input_uri
        self.output_uri = output_uri
        self.feature_columns = feature_columns
        self.passthrough_columns = passthrough_columns
        self.pythonpath = pythonpath
        self.allowed_factories = allowed_factories
        self.mlflow_conn_id = mlflow_conn_id
        self.aws_conn_id = aws_conn_id

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_mlops.datasets import read_table, write_table
        from airflow_mlops.registry.inference import score_batch

        self.check_data_paths(input_uri=self.input_uri, output_uri=self.output_uri)
        self.hook.configure()
        df = read_table(self.input_uri, self.storage_hook.storage_for(self.input_uri))
        with self.import_path():
            out, version, meta = score_batch(self.hook.client, self.model_name, self.alias, df,
                                             self.feature_columns, self.passthrough_columns)
        digest = write_table(out, self.output_uri, self.storage_hook.storage_for(self.output_uri))
        self.log.info("Scored %d rows of %s with %s v%s (@%s) -> %s", len(out), self.input_uri, self.model_name,
                      version.version, self.alias, self.output_uri)
        return {"output_uri": self.output_uri, "rows": len(out), "model_name": self.model_name,
                "model_version": str(version.version), "alias": self.alias, "digest": digest,
                "task": meta.task, "columns": [c for c in out.columns if c not in df.columns],
                "mean_prediction": float(out["prediction"].mean()) if len(out) and meta.task != "multiclass"
                else None}
