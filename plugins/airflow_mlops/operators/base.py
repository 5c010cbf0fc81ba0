"""What every operator of the package shares: its hooks, built lazily at run time, and the user's code path."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property
from typing import Any

from airflow_mlops.hooks.mlflow import MlflowHook
from airflow_mlops.hooks.storage_hook import StorageHook


class HooksMixin:
    """``hook`` (MLflow) and ``storage_hook`` (local / S3) from ``mlflow_conn_id`` and ``aws_conn_id``."""

    mlflow_conn_id: str | None = None
    aws_conn_id: str | None = None
    pythonpath: Any = None

    @cached_property
    def hook(self) -> MlflowHook:
        return MlflowHook(mlflow_conn_id=self.mlflow_conn_id or MlflowHook.default_conn_name)

    @property
    def mlflow_hook(self) -> MlflowHook:
        return self.hook

    @cached_property
    def storage_hook(self) -> StorageHook:
        return StorageHook(aws_conn_id=self.aws_conn_id)

    @contextmanager
    def import_path(self) -> Iterator[list[str]]:
        """``pythonpath`` folders first on ``sys.path`` while a user's factory or metric is imported."""
        folders = [str(p) for p in (self.pythonpath or []) if str(p)]
        added = [p for p in folders if p not in sys.path]
        sys.path[:0] = added
        try:
            yield folders
        finally:
            for p in added:
                if p in sys.path:
                    sys.path.remove(p)
