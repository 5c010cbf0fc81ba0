"""Suites kept as JSON, suites built from a feature spec, and their checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from airflow_mlops.exceptions import MlopsConfigurationError
from airflow_mlops.validation.errors import SuiteError
from airflow_mlops.validation.suites import (
    ColumnSpec,
    FeatureSpec,
    build_gx_suite,
    check_suite_dict,
    load_feature_spec,
    load_suite_dict,
    suite_digest,
    suite_from_feature_spec,
)

REPO = Path(__file__).resolve().parents[3]
SUITE = REPO / "include" / "expectations" / "rainfall.json"
FEATURE_SPEC = REPO / "include" / "features" / "rainfall.json"


def test_bundled_suite_loads_and_builds():
    suite = load_suite_dict(str(SUITE))
    gx_suite = build_gx_suite(suite)
    assert gx_suite.name == "rainfall"
    assert len(gx_suite.expectations) == len(suite["expectations"]) >= 30


def test_bundled_suite_covers_the_feature_spec():
    """Every expectation the feature spec implies is in the hand-kept suite (the suite may add more)."""
    implied = suite_from_feature_spec(load_feature_spec(str(FEATURE_SPEC)))["expectations"]
    kept = load_suite_dict(str(SUITE))["expectations"]
    kept_keys = {json.dumps([e["type"], e["kwargs"]], sort_keys=True) for e in kept}
    missing = [e for e in implied if json.dumps([e["type"], e["kwargs"]], sort_keys=True) not in kept_keys]
    assert missing == []


def test_feature_spec_of_rainfall():
    spec = load_feature_spec(str(FEATURE_SPEC))
    assert spec.target == "rain"
    assert spec.features[:2] == ["day", "date"] and "rain" not in spec.features
    rain = next(c for c in spec.columns if c.name == "rain")
    assert rain.categories == [0, 1]


def test_suite_from_feature_spec_kinds():
    spec = FeatureSpec(
        name="small",
        columns=[ColumnSpec("id", "int64", unique=True, increasing=True), ColumnSpec("colour", "object",
                 categories=["red", "blue"]), ColumnSpec("x", "float64", min=0, max=1, nullable=True,
                 severity="warning")],
        ordered=False,
        row_count=(2, 10),
    )
    suite = suite_from_feature_spec(spec)
    types = [(e["type"], e["kwargs"].get("column")) for e in suite["expectations"]]
    assert ("expect_table_columns_to_match_set", None) in types
    assert ("expect_column_values_to_be_in_set", "colour") in types
    assert ("expect_column_values_to_be_unique", "id") in types
    assert ("expect_column_values_to_be_increasing", "id") in types
    assert ("expect_column_values_to_not_be_null", "x") not in types
    x_range = next(e for e in suite["expectations"] if e["type"] == "expect_column_values_to_be_between")
    assert x_range["meta"] == {"severity": "warning"}
    assert len(build_gx_suite(suite).expectations) == len(suite["expectations"])


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"name": "a", "dtype": ""}, "name and a dtype"),
        ({"name": "a", "dtype": "float64", "min": 2, "max": 1}, "min above max"),
        ({"name": "a", "dtype": "object", "regex": "("}, "invalid regex"),
        ({"name": "a", "dtype": "object", "severity": "fatal"}, "unknown severity"),
    ],
)
def test_column_spec_rejects(kwargs, words):
    with pytest.raises(SuiteError, match=words):
        ColumnSpec(**kwargs)


def test_feature_spec_rejects_duplicates_and_unknown_target():
    with pytest.raises(SuiteError, match="repeats columns"):
        FeatureSpec("f", [ColumnSpec("a", "int64"), ColumnSpec("a", "int64")])
    with pytest.raises(SuiteError, match="target"):
        FeatureSpec("f", [ColumnSpec("a", "int64")], target="b")
    with pytest.raises(SuiteError, match="Malformed feature spec"):
        FeatureSpec.from_dict({"name": "f"})


@pytest.mark.parametrize(
    ("doc", "words"),
    [
        ({"expectations": [{"type": "t", "kwargs": {}}]}, "has no name"),
        ({"name": "s", "expectations": []}, "lists no expectations"),
        ({"name": "s", "expectations": ["x"]}, "is malformed"),
    ],
)
def test_check_suite_dict(doc, words):
    with pytest.raises(SuiteError, match=words):
        check_suite_dict(doc)


def test_suite_file_errors(tmp_path):
    with pytest.raises(SuiteError, match="Cannot read the expectation suite"):
        load_suite_dict(str(tmp_path / "absent.json"))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(SuiteError, match="not valid JSON"):
        load_suite_dict(str(bad))
    assert issubclass(SuiteError, MlopsConfigurationError)


@pytest.mark.parametrize(
    ("exp", "words"),
    [
        ({"type": "expect_values_to_be_nice", "kwargs": {}}, "expect_values_to_be_nice"),
        ({"type": "expect_column_values_to_be_between", "kwargs": {"min_value": 1}}, "required kwargs"),
    ],
)
def test_build_gx_suite_names_the_invalid_expectation(exp, words):
    with pytest.raises(SuiteError, match=words):
        build_gx_suite({"name": "s", "expectations": [exp]})


def test_suite_digest_ignores_key_order():
    a = {"name": "s", "expectations": [{"type": "t", "kwargs": {"x": 1, "y": 2}}]}
    b = {"expectations": [{"kwargs": {"y": 2, "x": 1}, "type": "t"}], "name": "s"}
    assert suite_digest(a) == suite_digest(b) and suite_digest(a).startswith("sha256:")
