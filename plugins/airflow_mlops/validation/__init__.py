"""Data validation with Great Expectations 1.x: suites, batches, summaries, quarantine (GX imported lazily)."""

from __future__ import annotations

from airflow_mlops.validation.batches import DataFormat, parse_batch, resolve_data_path
from airflow_mlops.validation.digest import bytes_digest, dataset_digest
from airflow_mlops.validation.errors import (
    BatchNotFoundError,
    BatchReadError,
    ExpectationsFailedError,
    PathOutsideRootError,
    SuiteError,
)
from airflow_mlops.validation.quarantine import REASON_FILE, quarantine_batch, quarantine_folder
from airflow_mlops.validation.service import (
    ValidationConfig,
    ValidationOutcome,
    ValidationService,
    validate_batch,
    validate_frame,
)
from airflow_mlops.validation.suites import (
    FeatureSpec,
    build_gx_suite,
    load_feature_spec,
    load_suite_dict,
    suite_digest,
    suite_from_feature_spec,
)
from airflow_mlops.validation.summary import SUMMARY_KEYS, Severity, failure_message, summarize_result

__all__ = [
    "REASON_FILE",
    "SUMMARY_KEYS",
    "BatchNotFoundError",
    "BatchReadError",
    "DataFormat",
    "ExpectationsFailedError",
    "FeatureSpec",
    "PathOutsideRootError",
    "Severity",
    "SuiteError",
    "ValidationConfig",
    "ValidationOutcome",
    "ValidationService",
    "build_gx_suite",
    "bytes_digest",
    "dataset_digest",
    "failure_message",
    "load_feature_spec",
    "load_suite_dict",
    "parse_batch",
    "quarantine_batch",
    "quarantine_folder",
    "resolve_data_path",
    "suite_digest",
    "suite_from_feature_spec",
    "summarize_result",
    "validate_batch",
    "validate_frame",
]
