"""Bounded, visible retries of MLflow calls: client retry settings, budgets, warnings that name the endpoint."""

from __future__ import annotations

import logging
import os

#: How long a training run keeps metrics for an unreachable MLflow before it fails (seconds, environment).
MLFLOW_BUDGET_ENV = "MLOPS_MLFLOW_RETRY_BUDGET_S"
DEFAULT_MLFLOW_BUDGET_S = 120.0
#: The MLflow client's own retries per call, bounded to about 30 s (its defaults retry for ~4 minutes,
#: silently). Values already in the environment win.
MLFLOW_CLIENT_RETRIES = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "4",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "1.0",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
}
_MLFLOW_PATHS = ("/api/2.0/mlflow", "/api/3.0/mlflow", "/ajax-api/", "/api/2.0/mlflow-artifacts")


def mlflow_budget_s() -> float:
    try:
        return max(0.0, float(os.environ.get(MLFLOW_BUDGET_ENV, DEFAULT_MLFLOW_BUDGET_S)))
    except ValueError:
        return DEFAULT_MLFLOW_BUDGET_S


def bound_mlflow_client_retries(env: dict[str, str] | None = None) -> dict[str, str]:
    """Put the bounded client retry settings into ``env`` (``os.environ`` by default) where unset."""
    target: dict[str, str] = os.environ if env is None else env  # type: ignore[assignment]
    for key, value in MLFLOW_CLIENT_RETRIES.items():
        target.setdefault(key, value)
    return target


class _NameEndpoint(logging.Filter):
    """Adds the MLflow endpoint to urllib3's ``Retrying (...) after connection broken ...`` warnings."""

    def __init__(self, endpoint: str) -> None:
        super().__init__()
        self.endpoint = endpoint

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING and not getattr(record, "_mlops_named", False):
            message = record.getMessage()
            if message.startswith("Retrying") and any(p in message for p in _MLFLOW_PATHS):
                record.msg, record.args = "MLflow at %s is not answering, retrying: %s", (self.endpoint, message)
                record._mlops_named = True  # type: ignore[attr-defined]
        return True


def warn_mlflow_retries(endpoint: str | None) -> None:
    """Make every retry of an MLflow call a warning that names ``endpoint`` (the process's current endpoint)."""
    if not endpoint:
        return
    logger = logging.getLogger("urllib3.connectionpool")
    if any(isinstance(f, _NameEndpoint) and f.endpoint == endpoint for f in logger.filters):
        return
    for old in [f for f in logger.filters if isinstance(f, _NameEndpoint)]:
        logger.removeFilter(old)  # a client for another server now: its retries are that server's
    logger.addFilter(_NameEndpoint(endpoint))
    if logger.getEffectiveLevel() > logging.WARNING or logger.level == logging.NOTSET:
        logger.setLevel(logging.WARNING)
