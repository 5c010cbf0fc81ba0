"""What every operator of the package shares: its hooks, built lazily at run time, and the user's code path."""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property
from typing import Any

from airflow_mlops.hooks.mlflow import MlflowHook
from airflow_mlops.hooks.storage_hook import StorageHook

#: Libraries whose INFO lines (and deprecation warnings) would drown a task's own lines.
QUIET_LIBRARIES = ("great_expectations", "evidently", "mlflow", "alembic", "botocore", "boto3", "s3transfer",
                   "urllib3", "py4j", "pyspark", "numexpr", "git", "fsspec", "filelock", "matplotlib")
#: Level those libraries log at inside the package's tasks; ``INFO`` or ``DEBUG`` to see them again.
LIBRARY_LOG_LEVEL_ENV = "MLOPS_LIBRARY_LOG_LEVEL"


def quiet_libraries(level: str | int | None = None, libraries: tuple[str, ...] = QUIET_LIBRARIES) -> None:
    """Raise the libraries' loggers to ``level`` (default env ``MLOPS_LIBRARY_LOG_LEVEL``, else WARNING) and
    drop their deprecation warnings: the task log keeps the package's lines, and errors of every library."""
    level = level or os.environ.get(LIBRARY_LOG_LEVEL_ENV) or "WARNING"
    for name in libraries:
        logging.getLogger(name).setLevel(level)
    if logging.getLevelName(level) != logging.DEBUG:
        for name in libraries:
            warnings.filterwarnings("ignore", category=DeprecationWarning, module=rf"{name}(\.|$)")
            warnings.filterwarnings("ignore", category=FutureWarning, module=rf"{name}(\.|$)")


class HooksMixin:
    """
    ``hook`` (MLflow) and ``storage_hook`` (local / S3) from ``mlflow_conn_id`` and ``aws_conn_id``; libraries
    quieted to ``library_log_level`` while the task runs.
    """

    mlflow_conn_id: str | None = None
    aws_conn_id: str | None = None
    pythonpath: Any = None
    #: Factories (``module:function`` or ``module:*``) this operator may rebuild from a checkpoint or a
    #: registered version, beside the built-in models and env ``MLOPS_ALLOWED_FACTORIES``.
    allowed_factories: Any = None
    #: Level of third-party loggers in this task (None: env ``MLOPS_LIBRARY_LOG_LEVEL``, else WARNING).
    library_log_level: str | None = None
    #: Root every data path of the task must lie under (None: the data folder, env ``MLOPS_DATA_DIR``; ``"/"``
    #: opts out); an s3:// prefix for data on S3.
    allowed_root: Any = None

    def check_data_paths(self, **paths: Any) -> None:
        """
        Refuse, before any read or write, a data path (from a Param or XCom) that leaves ``allowed_root``:
        ``..`` segments and symlinks out of it included. ``None`` paths (not used in this run) are skipped.
        """
        from airflow_mlops.validation.batches import check_under_root

        root = str(self.allowed_root) if self.allowed_root not in (None, "") else None
        for name, path in paths.items():
            if path is not None:
                check_under_root(str(path), root, what=name)

    def pre_execute(self, context: Any) -> None:
        quiet_libraries(self.library_log_level)
        super().pre_execute(context)  # type: ignore[misc]

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
        """
        ``pythonpath`` folders first on ``sys.path`` while a user's factory or metric is imported, and the
        operator's ``allowed_factories`` allowed meanwhile (a stored model never chooses its own code).
        """
        from airflow_mlops.factories import allowing_factories

        folders = [str(p) for p in (self.pythonpath or []) if str(p)]
        added = [p for p in folders if p not in sys.path]
        sys.path[:0] = added
        allowed = self.allowed_factories
        if isinstance(allowed, str):
            allowed = [p for p in allowed.split(",") if p.strip()]
        try:
            with allowing_factories(allowed):
                yield folders
        finally:
            for p in added:
                if p in sys.path:
                    sys.path.remove(p)
