"""MLflow artifacts of a validation: GX's full result JSON, the compact summary and the Data Docs page."""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from airflow_mlops.validation.docs import render_data_docs

if TYPE_CHECKING:
    from airflow_mlops.validation.service import ValidationOutcome

log = logging.getLogger(__name__)

RESULT_FILE = "result.json"
SUMMARY_FILE = "summary.json"
DOCS_FILE = "data_docs.html"


def log_validation_artifacts(client: Any, run_id: str, outcome: ValidationOutcome, artifact_dir: str) -> str:
    """
    Log ``result.json``, ``summary.json`` and ``data_docs.html`` under ``artifact_dir`` of the MLflow run.

    Returns the artifact path of the Data Docs page (relative to the run's artifact root).
    """
    artifact_dir = artifact_dir.strip("/")
    client.log_text(run_id, json.dumps(outcome.summary, indent=2, default=str), f"{artifact_dir}/{SUMMARY_FILE}")
    if outcome.result is None:
        return f"{artifact_dir}/{SUMMARY_FILE}"
    client.log_text(run_id, json.dumps(outcome.result_json(), indent=2, default=str),
                    f"{artifact_dir}/{RESULT_FILE}")
    client.log_text(run_id, render_data_docs(outcome.result), f"{artifact_dir}/{DOCS_FILE}")
    return f"{artifact_dir}/{DOCS_FILE}"
