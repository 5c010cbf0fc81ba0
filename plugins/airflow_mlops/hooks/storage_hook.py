"""Storage hook: a local or S3 store for a path, with S3 credentials from an Airflow connection or the environment."""

from __future__ import annotations

from functools import cached_property
from typing import Any

from airflow.sdk import BaseHook

from airflow_mlops.hooks.storage import S3Storage, Storage, get_storage, is_s3, s3_client_kwargs_from_env


class StorageHook(BaseHook):
    """
    Gives the :class:`~airflow_mlops.hooks.storage.Storage` that serves a path.

    :param aws_conn_id: Airflow connection of type ``aws`` for s3:// paths: login is the access key id,
        password the secret key, extra ``endpoint_url`` and ``region_name``. ``None`` reads the standard
        AWS environment (AWS_ACCESS_KEY_ID, AWS_ENDPOINT_URL, ...) instead.
    """

    conn_name_attr = "aws_conn_id"
    default_conn_name = "aws_default"
    conn_type = "aws"
    hook_name = "MLOps storage (local / S3)"

    def __init__(self, aws_conn_id: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.aws_conn_id = aws_conn_id

    @cached_property
    def s3_client_kwargs(self) -> dict[str, Any]:
        if self.aws_conn_id is None:
            return s3_client_kwargs_from_env()
        conn = self.get_connection(self.aws_conn_id)
        extra = conn.extra_dejson or {}
        kwargs: dict[str, Any] = {}
        if conn.login:
            kwargs["aws_access_key_id"] = conn.login
        if conn.password:
            kwargs["aws_secret_access_key"] = conn.password
        if extra.get("aws_session_token"):
            kwargs["aws_session_token"] = extra["aws_session_token"]
        endpoint = extra.get("endpoint_url") or (conn.host or None)
        if endpoint:
            kwargs["endpoint_url"] = endpoint
        if extra.get("region_name"):
            kwargs["region_name"] = extra["region_name"]
        return kwargs

    def storage_for(self, path: str) -> Storage:
        if is_s3(path):
            return S3Storage(**self.s3_client_kwargs)
        return get_storage(path)

    def child_env(self) -> dict[str, str]:
        """Environment for child processes (torchrun workers) so they reach the same S3 endpoint."""
        kw = self.s3_client_kwargs
        env = {}
        mapping = {
            "aws_access_key_id": "AWS_ACCESS_KEY_ID",
            "aws_secret_access_key": "AWS_SECRET_ACCESS_KEY",
            "aws_session_token": "AWS_SESSION_TOKEN",
            "endpoint_url": "AWS_ENDPOINT_URL",
            "region_name": "AWS_DEFAULT_REGION",
        }
        for key, var in mapping.items():
            if kw.get(key):
                env[var] = str(kw[key])
        return env
