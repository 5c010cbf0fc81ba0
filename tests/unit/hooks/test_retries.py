"""Retry decisions and warnings of storage and MLflow calls (no servers)."""

from __future__ import annotations

import logging

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError

from airflow_mlops.hooks.retries import (
    MLFLOW_CLIENT_RETRIES,
    bound_mlflow_client_retries,
    warn_mlflow_retries,
)
from airflow_mlops.hooks.storage import backoff_s, is_transient


def _client_error(code: str, status: int) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}},
                       "PutObject")


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (EndpointConnectionError(endpoint_url="http://127.0.0.1:1"), True),
        (ReadTimeoutError(endpoint_url="http://127.0.0.1:1"), True),
        (ConnectionRefusedError(), True),
        (_client_error("SlowDown", 503), True),
        (_client_error("InternalError", 500), True),
        (_client_error("NoSuchKey", 404), False),
        (_client_error("AccessDenied", 403), False),
        (ValueError("bad"), False),
    ],
)
def test_transient_errors(exc, transient):
    assert is_transient(exc) is transient


def test_transient_cause_inside_a_wrapper_counts():
    try:
        try:
            raise EndpointConnectionError(endpoint_url="http://127.0.0.1:1")
        except EndpointConnectionError as inner:
            raise RuntimeError("upload failed") from inner
    except RuntimeError as outer:
        assert is_transient(outer)


@pytest.mark.parametrize("attempt", range(10))
def test_backoff_grows_with_jitter_and_is_capped(attempt):
    values = [backoff_s(attempt, base=0.5, cap=8.0) for _ in range(50)]
    ceiling = min(8.0, 0.5 * 2**attempt)
    assert all(ceiling / 2 <= v <= ceiling for v in values)
    assert len(set(values)) > 1  # jitter: contenders do not retry in lockstep


def test_mlflow_client_retries_are_bounded_but_user_settings_win():
    env = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "9"}
    bound_mlflow_client_retries(env)
    assert env["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "9"
    assert env["MLFLOW_HTTP_REQUEST_TIMEOUT"] == MLFLOW_CLIENT_RETRIES["MLFLOW_HTTP_REQUEST_TIMEOUT"]


def test_urllib3_retry_warnings_name_the_mlflow_endpoint(caplog):
    warn_mlflow_retries("http://mlflow.example:5000")
    logger = logging.getLogger("urllib3.connectionpool")
    with caplog.at_level(logging.WARNING, logger="urllib3.connectionpool"):
        logger.warning("Retrying (%r) after connection broken by '%r': %s", "Retry(total=3)",
                       "NewConnectionError('refused')", "/api/2.0/mlflow/runs/log-batch")
        logger.warning("Retrying (%r) after connection broken by '%r': %s", "Retry(total=3)", "x", "/other/api")
    assert caplog.records[0].getMessage().startswith("MLflow at http://mlflow.example:5000 is not answering")
    assert "log-batch" in caplog.records[0].getMessage()
    assert caplog.records[1].getMessage().startswith("Retrying")
