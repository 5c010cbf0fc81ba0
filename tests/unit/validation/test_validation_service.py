"""The validation service on the real rainfall data: summary, digest, quarantine, warn-only."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from airflow_mlops.exceptions import DataValidationError, MlopsConfigurationError
from airflow_mlops.validation import (
    REASON_FILE,
    SUMMARY_KEYS,
    ExpectationsFailedError,
    ValidationConfig,
    ValidationService,
    dataset_digest,
    validate_batch,
)
from airflow_mlops.validation.docs import render_data_docs

FIXED = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)


def service() -> ValidationService:
    return ValidationService(clock=lambda: FIXED)


def test_whole_rainfall_table_passes(rainfall_source, suite_path):
    out = service().validate(ValidationConfig(rainfall_source, suite_path))
    s = out.summary
    assert set(SUMMARY_KEYS) <= set(s)
    assert s["success"] is True and s["failed"] == 0
    assert s["evaluated"] >= 30 and s["rows"] == 18159
    # The source holds two sea-level pressure readings near +94: reported, not rejected.
    assert s["warned"] == 1 and s["warnings"][0]["expectation"] == "sea_level_pressure_plausible"
    assert s["schema"]["rain"] == "int64" and s["columns"][0] == "day"
    assert s["digest"] == dataset_digest(rainfall_source)
    assert s["suite_digest"].startswith("sha256:")
    json.dumps(s, allow_nan=False)


@pytest.mark.parametrize("ext", ["csv", "parquet"])
def test_window_passes_in_both_formats(window, roots, suite_path, ext):
    path = roots["data"] / f"w.{ext}"
    window.to_csv(path, index=False) if ext == "csv" else window.to_parquet(path, index=False)
    summary = validate_batch(ValidationConfig(str(path), suite_path, quarantine_root=str(roots["quarantine"]), allowed_root=str(roots["data"])))
    assert summary["success"] and summary["rows"] == 60
    assert not roots["quarantine"].exists()


def test_failure_raises_quarantines_and_keeps_original(window, roots, suite_path):
    bad = window.copy()
    bad.loc[3, "temperature"] = float("nan")
    bad.loc[5, "rain"] = 7
    path = roots["data"] / "w.parquet"
    bad.to_parquet(path, index=False)
    before = path.read_bytes()
    out = service().validate(ValidationConfig(str(path), suite_path, quarantine_root=str(roots["quarantine"]), allowed_root=str(roots["data"])))
    with pytest.raises(ExpectationsFailedError) as err:
        out.raise_for_failure()
    msg = str(err.value)
    assert "expect_column_values_to_not_be_null(temperature)" in msg
    assert "expect_column_values_to_be_in_set(rain)" in msg and "examples [7]" in msg
    assert isinstance(err.value, DataValidationError) and err.value.summary["failed"] == out.summary["failed"]
    assert path.read_bytes() == before
    folder = Path(out.quarantine_uri)
    assert folder.name == "20240506T070809123456Z-w.parquet"
    assert (folder / "w.parquet").read_bytes() == before
    reason = json.loads((folder / REASON_FILE).read_text())
    assert reason["data_uri"] == str(path) and reason["digest"] == out.summary["digest"]
    assert {f["expectation"] for f in reason["failures"]} >= {"expect_column_values_to_not_be_null(temperature)"}
    assert str(folder) in msg


def test_warn_only_argument_keeps_the_task_green(window, roots, suite_path):
    bad = window.copy()
    bad.loc[5, "rain"] = 7
    path = roots["data"] / "w.csv"
    bad.to_csv(path, index=False)
    summary = validate_batch(ValidationConfig(str(path), suite_path, warn_only=["expect_column_values_to_be_in_set(rain)"], allowed_root=str(roots["data"])))
    assert summary["success"] and summary["warned"] >= 1
    assert summary["unexpected_counts"]["expect_column_values_to_be_in_set(rain)"] == 1


def test_severity_override_by_type(window, roots, suite_path):
    bad = window.copy()
    bad.loc[5, "rain"] = 7
    path = roots["data"] / "w.csv"
    bad.to_csv(path, index=False)
    cfg = ValidationConfig(str(path), suite_path, severity_overrides={"expect_column_values_to_be_in_set": "warning"}, allowed_root=str(roots["data"]))
    assert validate_batch(cfg)["success"]


def test_data_docs_render(window, roots, suite_path):
    path = roots["data"] / "w.csv"
    window.to_csv(path, index=False)
    out = service().validate(ValidationConfig(str(path), suite_path, allowed_root=str(roots["data"])))
    html = render_data_docs(out.result)
    assert html.lstrip().lower().startswith("<!doctype html") or "<html" in html[:500].lower()
    assert "expect_column_values_to_not_be_null" in html or "values must never be null" in html
    assert out.result_json()["success"] is True


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"data_path": ""}, "data_path is empty"),
        ({"suite_path": " "}, "suite_path is empty"),
        ({"quarantine_root": ""}, "quarantine_root is empty"),
        ({"data_format": "xlsx"}, "Unknown data_format"),
        ({"severity_overrides": {"x": "fatal"}}, "severity"),
        ({"max_examples": -1}, "max_examples"),
    ],
)
def test_config_checks(kwargs, words):
    base = {"data_path": "a.csv", "suite_path": "s.json", **kwargs}
    with pytest.raises(MlopsConfigurationError, match=words):
        ValidationConfig(**base)


def test_gx_native_severity_is_honoured(window, roots):
    suite = {"name": "native", "expectations": [
        {"type": "expect_column_values_to_be_between", "kwargs": {"column": "temperature", "min_value": 0,
                                                                   "max_value": 1}, "severity": "warning"},
        {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "temperature"}},
    ]}
    suite_file = roots["data"] / "native.json"
    suite_file.write_text(json.dumps(suite))
    path = roots["data"] / "w.parquet"
    window.to_parquet(path, index=False)
    summary = validate_batch(ValidationConfig(str(path), str(suite_file), allowed_root=str(roots["data"])))
    assert summary["success"] and summary["warned"] == 1
    assert summary["warnings"][0]["severity"] == "warning"
