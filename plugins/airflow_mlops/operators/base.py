"""What every operator of the package shares: its hooks, built lazily at run time from its connection ids."""

from __future__ import annotations

from functools import cached_property

from airflow_mlops.hooks.mlflow import MlflowHook
from airflow_mlops.hooks.storage_hook import StorageHook


class HooksMixin:
    """``hook`` (MLflow) and ``storage_hook`` (local / S3) from ``mlflow_conn_id`` and ``aws_conn_id``."""

    mlflow_conn_id: str | None = None
    aws_conn_id: str | None = None

    @cached_property
    def hook(self) -> MlflowHook:
        return MlflowHook(mlflow_conn_id=self.mlflow_conn_id or MlflowHook.default_conn_name)

    @property
    def mlflow_hook(self) -> MlflowHook:
        return self.hook

    @cached_property
    def storage_hook(self) -> StorageHook:
        return StorageHook(aws_conn_id=self.aws_conn_id)
