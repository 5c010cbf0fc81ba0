"""Validation errors: each names the file, what was expected, what came, and what to do."""

from __future__ import annotations

from airflow_mlops.exceptions import DataValidationError, MlopsConfigurationError


class BatchReadError(DataValidationError):
    """The batch exists but is not a readable table (empty, truncated, wrong encoding, not a table at all)."""


class ExpectationsFailedError(DataValidationError):
    """The batch was read and at least one critical expectation of its suite failed."""


class BatchNotFoundError(MlopsConfigurationError):
    """The data path names no file (a wrong template, or the upstream task wrote elsewhere)."""


class PathOutsideRootError(MlopsConfigurationError):
    """The data path resolves outside the root that the task may read from."""


class SuiteError(MlopsConfigurationError):
    """The expectation suite or feature spec file is missing or malformed."""
